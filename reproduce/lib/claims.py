"""The paper's claims, written down once as data, and how a set of embedded runs settles each one.

A claim compares two rows of one script (row A vs row B, e.g. MaskedKD 50% vs logit KD) over the same seeds. Same
seed = same student initialisation and same data order in every row: `train.run` draws the student from
`init_params(model, seed=cfg.seed)` and seeds torch with `cfg.seed * 1000 + rank`, and `DigitsData` draws its
images from `cfg.seed * 100_003 + draw` and its batch order from `cfg.seed * 7919 + epoch`; the rows of table 1
differ only in what the teacher sees (tests/test_claims.py checks this). So the per-seed difference A - B is a
paired difference, and the statistics below are over those differences:

    d_i = 100 (acc_A(seed i) - acc_B(seed i))   points, one per seed present in both rows
    mean, SD (n - 1 in the denominator), 95% CI = mean +- t_{0.975, n-1} SD / sqrt(n)   (Student t, scipy)

Verdict rules (strict inequalities; with one seed there is no interval and every verdict is "inconclusive"):
- "beats" (A is above B): holds if the CI lies above 0; does not hold if it lies below 0; inconclusive otherwise.
- "below" (A is below B): holds if the CI lies below 0; does not hold if it lies above 0; inconclusive otherwise.
- "matches" (A is level with B): an equivalence test with margin MARGIN points: holds if the CI lies within
  (-MARGIN, +MARGIN); does not hold if it lies entirely outside [-MARGIN, +MARGIN]; inconclusive otherwise.
An inconclusive verdict says what would settle it: the smallest number of seeds at which the CI, if the observed
mean and SD stayed as they are, would fall on one side (`seeds_to_settle`).

MARGIN = 2 points is our choice, anchored on the paper: its "matches" rows differ from their logit-KD row by at
most 0.3 points on ImageNet (digest 2.1: DeiT3-S teacher, 25%: 74.8 vs 75.1), a tenth of the 3.0 points that
distillation adds there (DeiT-Ti 72.0 -> 75.0). Distillation adds about 10 points at embedded scale (table 1), a
tenth of which is 1 point; we allow twice that because the embedded test set (2000 images, accuracy near 50%) has
a sampling SE of 1.1 points per run, so a 1-point margin would sit inside the measurement noise of a single run.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

MARGIN = 2.0  # points; see the module docstring
LEVEL = 0.95
FAILED_TEACHER = 0.20  # a masked teacher below this at its first masked evaluation saw no digit (chance is 10%)


@dataclass(frozen=True)
class Claim:
    """One claim of the paper (or ours, source="ours"): `text` in words, `digest` its section, `kind` one of
    beats / below / matches for an evaluated claim (row `a` against row `b`, ids of the script's rows), and
    `script` + `command` that evaluate it."""
    key: str
    text: str
    digest: str
    script: str
    command: str
    kind: str | None = None
    a: str | None = None
    b: str | None = None
    paper: str = ""
    source: str = "paper"


T1 = "bash reproduce/table1.sh"
CLAIMS: tuple[Claim, ...] = (
    # table 1, accuracy column (part 2): evaluated here
    Claim("kd_beats_nokd", "Distillation beats no distillation (logit KD vs no KD)", "2.1", "table1", T1,
          "beats", "kd", "nokd", "75.0 vs 72.0 (DeiT-S -> DeiT-Ti)"),
    Claim("m50_matches_kd", "MaskedKD at 50% matches full KD", "2.1", "table1", T1,
          "matches", "keep50", "kd", "75.2 vs 75.0"),
    Claim("m75_matches_kd", "MaskedKD at 75% matches full KD", "2.1", "table1", T1,
          "matches", "keep75", "kd", "80.9 vs 80.8 (DeiT-B -> DeiT-S); 75.2 vs 75.1 (CaiT-S24 -> DeiT-Ti)"),
    Claim("m40_matches_kd", "Accuracy holds down to ~40% kept (MaskedKD 40% vs full KD)", "2.1, 2.3", "table1", T1,
          "matches", "keep40", "kd", "74.9 vs 75.0; figure 2: 74.9 at 80 of 196 patches"),
    Claim("m25_below_kd", "Accuracy falls below full KD at 25% kept (MaskedKD 25% vs full KD)", "2.3", "table1", T1,
          "below", "keep25", "kd", "figure 2: 74.3 at 50 of 196 patches vs 74.9 (main table, DeiT3-S: 74.8 vs 75.1)"),
    Claim("warmup_matches_kd", "Full KD for 3 epochs, then MaskedKD 50%, matches full KD (ours, not the paper's)",
          "–", "table1", T1, "matches", "warmup", "kd", "not in the paper", source="ours"),
    # the other scripts' claims: not yet evaluated here by these rules
    Claim("feature_kd", "MaskedKD matches its full-teacher row with feature KD too (Manifold 75%, Attention 50%)",
          "2.1, 2.8", "table1 --feature-kd", "bash reproduce/table1.sh --feature-kd",
          paper="Manifold 75.2 vs 75.0, Attention 75.3 vs 75.3"),
    Claim("flops_saving", "Keeping 50% cuts teacher FLOPs by ~51% and total training FLOPs by ~28%", "2.1, 2.7",
          "table1 (part 1), figure1", "bash reproduce/table1.sh; bash reproduce/figure1.sh",
          paper="866 vs 1770 PFLOPs (-51%); 0.281 of training FLOPs"),
    Claim("speedup", "The masked teacher's throughput rises with the FLOPs saving (x2.0-2.1 at 50%, x3.8-3.9 at 25%)",
          "2.1, 2.9", "table1 (part 1), gpu_check", "bash reproduce/table1.sh; bash reproduce/gpu_check.sh",
          paper="3702 vs 1790 img/s (x2.1)"),
    Claim("teacher_curve", "The student holds while the masked teacher's own accuracy falls with fewer patches",
          "2.3", "figure2", "bash reproduce/figure2.sh", paper="student 74.9-75.1 down to 80 patches; teacher 79.8 -> 73.8"),
    Claim("criteria", "Student-attention masking is the only criterion that maintains or improves on logit KD "
          "(vs random, teacher attention, DINO)", "2.4", "criteria", "bash reproduce/criteria.sh",
          paper="final gap to vanilla 1.05 vs 0.7-0.85"),
    Claim("curriculum", "The MaskedKD teacher is least accurate early and becomes the most accurate masked teacher",
          "2.4", "criteria", "bash reproduce/criteria.sh", paper="74.3 -> 71.8 (epoch 3) -> 79 (epoch 300)"),
    Claim("student_masking", "Masking the student degrades its accuracy; masking the teacher does not", "2.5",
          "ablation_student", "bash reproduce/ablation_student.sh", paper="55.0 vs 73.0 at 30 of 196 patches"),
    Claim("tome", "At aggressive reduction a MaskedKD teacher supervises better than a ToMe teacher of equal FLOPs",
          "2.5", "ablation_tome", "bash reproduce/ablation_tome.sh", paper="74.3 vs 72.9 at 1.17 GFLOPs"),
    Claim("audio", "MaskedKD carries over to audio spectrogram transformers", "2.6", "audio",
          "bash reproduce/audio.sh", paper="ESC-50 numbers not transcribed"),
)


def paired(a: dict[int, float], b: dict[int, float]) -> tuple[list[int], list[float]]:
    """Seeds present in both rows and the differences 100 (a - b) in points, seed by seed."""
    seeds = sorted(set(a) & set(b))
    return seeds, [100.0 * (a[s] - b[s]) for s in seeds]


def t_interval(diffs: list[float], level: float = LEVEL) -> tuple[float, float, float, float]:
    """(mean, SD, low, high) of the Student-t interval of the mean; SD 0 and an infinite interval with one value."""
    from scipy import stats
    n = len(diffs)
    mean = statistics.fmean(diffs)
    if n < 2:
        return mean, 0.0, -math.inf, math.inf
    sd = statistics.stdev(diffs)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


def verdict(kind: str, low: float, high: float, margin: float = MARGIN) -> str:
    """'holds' / 'does not hold' / 'inconclusive' by the rules of the module docstring."""
    if kind == "beats":
        return "holds" if low > 0 else "does not hold" if high < 0 else "inconclusive"
    if kind == "below":
        return "holds" if high < 0 else "does not hold" if low > 0 else "inconclusive"
    if kind == "matches":
        if -margin < low and high < margin:
            return "holds"
        return "does not hold" if low > margin or high < -margin else "inconclusive"
    raise ValueError(f"unknown claim kind {kind!r}: beats, below or matches")


def seeds_to_settle(kind: str, mean: float, sd: float, margin: float = MARGIN, level: float = LEVEL,
                    most: int = 1000) -> int | None:
    """The smallest number of seeds n at which the interval mean +- t_{n-1} sd / sqrt(n) would give a verdict
    other than inconclusive, if the mean and SD stayed as observed; None if no n up to `most` does (a mean exactly
    on a boundary)."""
    from scipy import stats
    bound = {"beats": 0.0, "below": 0.0, "matches": margin}[kind]
    gap = abs(abs(mean) - bound) if kind == "matches" else abs(mean)
    if gap == 0:
        return None
    if sd == 0:
        return 2
    for n in range(2, most + 1):
        if stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n) < gap:
            return n
    return None


def evaluate(claim: Claim, rows: dict[str, dict[int, float]], margin: float = MARGIN) -> dict:
    """A claim's paired comparison over `rows` (row id -> {seed: final accuracy in [0, 1]}): seeds, per-seed
    differences (points), mean, SD, CI, verdict, and for an inconclusive verdict the seeds that would settle it."""
    seeds, diffs = paired(rows[claim.a], rows[claim.b])
    mean, sd, low, high = t_interval(diffs)
    v = verdict(claim.kind, low, high, margin)
    out = {"key": claim.key, "a": claim.a, "b": claim.b, "kind": claim.kind, "seeds": seeds,
           "diffs": [round(d, 4) for d in diffs], "mean": mean, "sd": sd, "low": low, "high": high, "verdict": v,
           "settle": None}
    if v == "inconclusive" and len(diffs) >= 2:
        out["settle"] = seeds_to_settle(claim.kind, mean, sd, margin)
    return out


def fmt_ci(r: dict) -> str:
    """'+1.2 [-0.3, +2.7]' (points), or '+1.2 (1 seed, no interval)'."""
    if len(r["seeds"]) < 2:
        return f"{r['mean']:+.1f} (1 seed, no interval)"
    return f"{r['mean']:+.1f} [{r['low']:+.1f}, {r['high']:+.1f}]"


def settle_words(r: dict) -> str:
    """What would settle an inconclusive verdict, in words ('' for a settled one)."""
    if r["verdict"] != "inconclusive":
        return ""
    n = len(r["seeds"])
    if n < 2:
        return "needs at least 2 seeds for an interval"
    if r["settle"] is None:
        return "no number of seeds would, at this mean"
    return (f"about {r['settle'] - n} more seed{'s' * (r['settle'] - n != 1)} ({r['settle']} in all) if the mean "
            f"and SD ({r['sd']:.1f}) stay as observed")


def kind_words(kind: str, margin: float = MARGIN) -> str:
    return {"beats": "A - B > 0", "below": "A - B < 0", "matches": f"-{margin:g} < A - B < {margin:g}"}[kind]


def masked_failures(runs: list[dict], threshold: float = FAILED_TEACHER) -> tuple[int, int]:
    """(runs whose masked teacher was below `threshold` at its first masked evaluation, runs with a masked
    teacher). The first masked evaluation is history[0] for a fixed keep count, and the first evaluation with a
    kept count below the full view for a keep schedule (full-view epochs are logit KD)."""
    bad = total = 0
    for s in runs:
        evals = [h for h in s.get("history", []) if h.get("teacher_acc_masked") is not None]
        if "num_keep" in (evals[0] if evals else {}):
            evals = [h for h in evals if h.get("num_keep")]
        if not evals:
            continue
        total += 1
        bad += evals[0]["teacher_acc_masked"] < threshold
    return bad, total


def claim_lines(results: list[dict], labels: dict[str, str], margin: float = MARGIN) -> list[str]:
    """Markdown table of evaluated claims: claim, A vs B, per-seed differences, mean and CI, rule, verdict."""
    by_key = {c.key: c for c in CLAIMS}
    lines = ["| claim (digest) | A vs B | A - B per seed (points) | mean [95% CI] | rule | verdict |",
             "|---|---|---|---|---|---|"]
    for r in results:
        c = by_key[r["key"]]
        per = ", ".join(f"{d:+.1f}" for d in r["diffs"])
        v = r["verdict"] + (f": {settle_words(r)}" if settle_words(r) else "")
        lines.append(f"| {c.text} ({c.digest}) | {labels[c.a]} vs {labels[c.b]} | {per} | {fmt_ci(r)} | "
                     f"{kind_words(c.kind, margin)} | **{v}** |")
    return lines


def claims_md(results: dict[str, list[dict]], labels: dict[str, str], header: str = "",
              margin: float = MARGIN) -> str:
    """results/claims.md: every claim, the evaluated ones (script -> results) with their numbers, the others
    'not yet evaluated' with the command that will evaluate them."""
    done = {r["key"]: r for rs in results.values() for r in rs}
    lines = [header or "# The paper's claims at embedded scale", "",
             f"Paired differences over seeds (same seed: same student initialisation and data order), 95% Student-t "
             f"intervals, equivalence margin {margin:g} points for \"matches\"; the rules are in "
             f"`reproduce/lib/claims.py`. Paper numbers are ImageNet's, for orientation only.", "",
             "| claim | digest | paper (ImageNet) | evaluated by | A - B, mean [95% CI] (points) | verdict |",
             "|---|---|---|---|---|---|"]
    for c in CLAIMS:
        if c.key in done:
            r = done[c.key]
            num = f"{labels[c.a]} vs {labels[c.b]}: {fmt_ci(r)}, n = {len(r['seeds'])}"
            v = r["verdict"] + (f" ({settle_words(r)})" if settle_words(r) else "")
        else:
            num, v = "–", "not yet evaluated here"
        lines.append(f"| {c.text} | {c.digest} | {c.paper} | `{c.command}` | {num} | {v} |")
    return "\n".join(lines) + "\n"


# --- a script's runs as data (results/NAME_runs.json) and the markdown made from them ---------------------------

def row_accs(data: dict) -> dict[str, dict[int, float]]:
    """Row id -> {seed: final accuracy} from a runs file."""
    out: dict[str, dict[int, float]] = {r["id"]: {} for r in data["rows"]}
    for run in data["runs"]:
        out[run["row"]][run["seed"]] = run["final_acc"]
    return out


def _pm(xs: list[float]) -> str:
    m = statistics.fmean(xs)
    return f"{100 * m:.1f} ± {100 * statistics.stdev(xs):.1f}" if len(xs) > 1 else f"{100 * m:.1f}"


def rows_table(data: dict) -> list[str]:
    """Markdown table of a runs file's rows: mean ± SD over seeds, each seed, the masked teacher at the last
    evaluation, how many runs' masked teacher saw no digit at its first masked evaluation, teacher MACs saved."""
    lines = [f"| method | patches kept | student acc (%), mean ± SD | per seed {data['seeds']} | masked teacher, "
             f"last eval (%) | masked teacher < {100 * FAILED_TEACHER:.0f}% at its first masked eval | "
             "teacher MACs saved | paper (ImageNet, DeiT-S -> DeiT-Ti) |", "|---|---|---|---|---|---|---|---|"]
    for row in data["rows"]:
        runs = sorted((r for r in data["runs"] if r["row"] == row["id"]), key=lambda r: r["seed"])
        if not runs:
            continue
        accs = [r["final_acc"] for r in runs]
        t_last = [r["history"][-1].get("teacher_acc_masked") for r in runs]
        bad, total = masked_failures(runs)
        masked = row["kept"] not in ("–", "") and not row["kept"].startswith(str(data["num_patches"]) + " /")
        fails = f"{bad} of {total}" if masked and total else "–"
        lines.append(f"| {row['label']} | {row['kept']} | {_pm(accs)} | "
                     f"{', '.join(f'{100 * a:.1f}' for a in accs)} | "
                     f"{'–' if t_last[0] is None else _pm(t_last)} | {fails} | {row['saved']} | {row['paper']} |")
    return lines


def readme_block(data: dict, margin: float = MARGIN) -> str:
    """The generated part of reproduce/README.md's table-1 section, from reproduce/reference/table1_runs.json:
    the rows table and the claims table (tests/test_claims.py checks the README against it)."""
    labels = {r["id"]: r["label"] for r in data["rows"]}
    return "\n".join([
        f"Seeds {data['seeds']}; teacher test accuracy {100 * data['teacher_acc']:.1f}%; {len(data['runs'])} runs, "
        f"{sum(r.get('wall_s', 0) for r in data['runs']) / 60:.0f} run-minutes of training (1 thread each).", "",
        *rows_table(data), "",
        f"Claims (paired by seed, 95% Student-t interval, equivalence margin {margin:g} points; rules in "
        "`reproduce/lib/claims.py`, every claim of the paper in `reproduce/reference/claims.md`):", "",
        *claim_lines(data["claims"], labels, margin)]) + "\n"


BEGIN, END = "<!-- generated from reproduce/reference/table1_runs.json: begin -->", "<!-- generated: end -->"


def replace_block(text: str, block: str) -> str:
    """text with the part between the BEGIN and END markers replaced by block."""
    i, j = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[:i] + "\n" + block + text[j:]


def current_block(text: str) -> str:
    """The part of text between the BEGIN and END markers."""
    return text[text.index(BEGIN) + len(BEGIN) + 1: text.index(END)]
