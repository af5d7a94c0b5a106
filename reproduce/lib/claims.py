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
A "matches" verdict from a 95% interval is a conservative equivalence test (two one-sided tests at 2.5% each; the
usual TOST at 5% would use a 90% interval), and there is no correction for the number of claims: with about twenty
claims, one verdict may be a chance result. An inconclusive verdict says what would settle it: the smallest number of
seeds at which the CI, if the observed
mean and SD stayed as they are, would fall on one side (`seeds_to_settle`).

MARGIN = 2 points is our choice, anchored on the paper: its "matches" rows differ from their logit-KD row by at
most 0.3 points on ImageNet (docs/paper.md#table-1), a tenth of the 3.0 points that
distillation adds there (DeiT-Ti 72.0 -> 75.0). Distillation adds about 10 points at embedded scale (table 1), a
tenth of which is 1 point; we allow twice that because the embedded test set (2000 images, accuracy near 50%) has
a sampling SE of 1.1 points per run, so a 1-point margin would sit inside the measurement noise of a single run.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

MARGIN = 2.0  # points; see the module docstring
LEVEL = 0.95
FAILED_TEACHER = 0.20  # a masked teacher below this at its first masked evaluation saw no digit (chance is 10%)


@dataclass(frozen=True)
class Claim:
    """One claim of the paper (or ours, source="ours"): `text` in words, `where` its section of docs/paper.md, `kind`
    one of
    beats / below / matches for an evaluated claim (row `a` against row `b`, ids of the script's rows, compared on
    `metric`: see METRICS), and `script` (the runs file, results/SCRIPT_runs.json) + `command` that evaluate it."""
    key: str
    text: str
    where: str  # its anchors in docs/paper.md ("–": not in the paper)
    script: str
    command: str
    kind: str | None = None
    a: str | None = None
    b: str | None = None
    paper: str = ""
    source: str = "paper"
    metric: str = "student"


# what a claim compares, read off each run's summary: the student's final test accuracy, or the masked teacher's
# test accuracy on the patches the student picked, at its first masked evaluation or at the last evaluation
METRICS = {"student": "student acc", "teacher_first": "masked teacher, first masked eval",
           "teacher_last": "masked teacher, last eval"}


T1, FK, F2 = "bash reproduce/table1.sh", "bash reproduce/table1.sh --feature-kd", "bash reproduce/figure2.sh"
CR, AS, AT = "bash reproduce/criteria.sh", "bash reproduce/ablation_student.sh", "bash reproduce/ablation_tome.sh"
BY, AU = "bash reproduce/beyond.sh", "bash reproduce/audio.sh"
CLAIMS: tuple[Claim, ...] = (
    # table 1, accuracy column (part 2): evaluated here
    Claim("kd_beats_nokd", "Distillation beats no distillation (logit KD vs no KD)", "table-1", "table1", T1,
          "beats", "kd", "nokd", "75.0 vs 72.0 (DeiT-S -> DeiT-Ti)"),
    Claim("m50_matches_kd", "MaskedKD at 50% matches full KD", "table-1", "table1", T1,
          "matches", "keep50", "kd", "75.2 vs 75.0"),
    Claim("m75_matches_kd", "MaskedKD at 75% matches full KD", "table-1", "table1", T1,
          "matches", "keep75", "kd", "80.9 vs 80.8 (DeiT-B -> DeiT-S); 75.2 vs 75.1 (CaiT-S24 -> DeiT-Ti)"),
    Claim("m40_matches_kd", "Accuracy holds down to ~40% kept (MaskedKD 40% vs full KD)", "table-1, figure-2", "table1", T1,
          "matches", "keep40", "kd", "74.9 vs 75.0; figure 2: 74.9 at 80 of 196 patches"),
    Claim("m25_below_kd", "Accuracy falls below full KD at 25% kept (MaskedKD 25% vs full KD)", "figure-2", "table1", T1,
          "below", "keep25", "kd", "figure 2: 74.3 at 50 of 196 patches vs 74.9 (main table, DeiT3-S: 74.8 vs 75.1)"),
    Claim("warmup_matches_kd", "Full KD for 3 epochs, then MaskedKD 50%, matches full KD (ours, not the paper's)",
          "–", "table1", T1, "matches", "warmup", "kd", "not in the paper", source="ours"),
    # paper table 1's feature-KD rows (bash reproduce/table1.sh --feature-kd: results/feature_kd_runs.json)
    Claim("manifold75_matches", "MaskedKD 75% matches its full teacher with Manifold feature KD", "feature-kd",
          "feature_kd", FK, "matches", "manifold75", "manifold", "75.2 vs 75.0"),
    Claim("attention50_matches", "MaskedKD 50% matches its full teacher with attention-map KD", "feature-kd",
          "feature_kd", FK, "matches", "attention50", "attention", "75.3 vs 75.3"),
    # figure 2 (right): the accuracy-vs-#patches curve
    Claim("fig2_teacher_falls", "The masked teacher's own accuracy falls with fewer patches (26 vs 64 of 64 kept)",
          "figure-2", "figure2", F2, "below", "keep26", "kd", "teacher ~73.8 at 80 of 196 vs ~79.8 at 196",
          metric="teacher_last"),
    Claim("fig2_student_falls_at_12", "The student falls below full KD when the teacher sees few patches (8 of 64; the "
          "paper's 30 of 196)", "figure-2", "figure2", F2, "below", "keep8", "kd", "73.0 at 30 of 196 vs 74.9"),
    # masking criteria and the curriculum
    Claim("crit_beats_random", "Student-attention masking beats random masking", "masking-criteria", "criteria", CR,
          "beats", "keep32", "keep32-random", "final gap to vanilla ~1.05 vs ~0.7"),
    Claim("crit_beats_teacher", "Student-attention masking beats the teacher's own attention", "masking-criteria", "criteria",
          CR, "beats", "keep32", "keep32-by-teacher", "final gap to vanilla ~1.05 vs ~0.7-0.85"),
    Claim("crit_beats_fixed", "Student-attention masking beats a fixed model's attention (DINO; ours: a no-KD "
          "student)", "masking-criteria", "criteria", CR, "beats", "keep32", "keep32-by-digits_student_nokd",
          "final gap to vanilla ~1.05 vs ~0.7-0.85"),
    Claim("curriculum_early", "Curriculum: early in training the MaskedKD teacher is less accurate than a "
          "randomly masked one", "masking-criteria", "criteria", CR, "below", "keep32", "keep32-random",
          "~71.8 (epoch 3) vs ~76.9", metric="teacher_first"),
    Claim("curriculum_late", "Curriculum: at the end the MaskedKD teacher is more accurate than a randomly masked "
          "one", "masking-criteria", "criteria", CR, "beats", "keep32", "keep32-random", "~79 vs ~76.9 (epoch 300)",
          metric="teacher_last"),
    # ablations
    Claim("student_masking_75", "Masking the student ends below masking the teacher, at 48 of 64 kept (the paper's 140 of 196)", "ablations",
          "ablation_student", AS, "below", "studentkeep48", "keep48", "73.4 vs 75.1 (140 of 196)"),
    Claim("student_masking_19", "Masking the student ends below masking the teacher, at 12 of 64 kept (the paper's 30 of "
          "196)",
          "ablations", "ablation_student", AS, "below", "studentkeep12", "keep12", "55.0 vs 73.0 (30 of 196)"),
    Claim("tome_aggressive", "At aggressive reduction a MaskedKD teacher (16 of 64 kept) supervises better than the "
          "cheapest ToMe teacher (r=32, about 1.3 times its MACs)", "ablations", "ablation_tome", AT, "beats", "keep16", "tome32",
          "74.3 vs 72.9 at 1.17 GFLOPs"),
    Claim("tome_teacher_quality", "At mild reduction a ToMe teacher (r=8) keeps more of its own accuracy than a masked "
          "one of about equal MACs (48 of 64)", "ablations", "ablation_tome", AT, "beats", "tome8", "keep48", "teacher ~79 vs ~78",
          metric="teacher_last"),
    # beyond the paper (ours)
    Claim("warmup_beats_keep40", "Full KD 3 epochs then 50% beats a fixed 40 of 64 at about the same teacher MACs "
          "(ours)", "–", "beyond", BY, "beats", "sched100x3-50", "keep40", "not in the paper", source="ours"),
    Claim("rising_beats_fixed", "A kept fraction rising 25% -> 75% beats a fixed 50% (same mean; ours)", "–",
          "beyond", BY, "beats", "sched25to75", "keep32", "not in the paper", source="ours"),
    # audio
    Claim("audio_kd_beats_nokd", "Audio (AST): distillation beats no distillation", "audio", "audio", AU,
          "beats", "kd", "nokd", "ESC-50 numbers not transcribed"),
    Claim("audio_m50_matches_kd", "Audio (AST): MaskedKD at 50% matches full KD", "audio", "audio", AU,
          "matches", "keep54", "kd", "ESC-50 numbers not transcribed"),
    # cost: arithmetic and timing, not accuracy
    Claim("flops_saving", "Keeping 50% cuts teacher FLOPs by ~51% and total training FLOPs by ~28%", "table-1, flops-model",
          "table1 (part 1), figure1", "bash reproduce/figure1.sh; bash reproduce/table1.sh",
          paper="866 vs 1770 PFLOPs (-51%); 0.281 of training FLOPs"),
    Claim("speedup", "The masked teacher's throughput rises with the FLOPs saving (x2.0-2.1 at 50%, x3.8-3.9 at 25%)",
          "throughput", "gpu_check, table1 (part 1)", "bash reproduce/gpu_check.sh; bash reproduce/table1.sh --speedups",
          paper="3702 vs 1790 img/s (x2.1)"),
)


def paper_ref(c: "Claim") -> str:
    """Where a claim is in the paper, as docs/paper.md anchors (ours: "–")."""
    anchors = [a.strip() for a in c.where.split(",") if a.strip() not in ("", "–")]
    return "docs/paper.md" + ", ".join(f"#{a}" for a in anchors) if anchors else "–"


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
    if not diffs:
        raise ValueError(f"claim {claim.key!r}: no seed has a {claim.metric!r} value in both rows {claim.a!r} and "
                         f"{claim.b!r} (seeds {sorted(rows[claim.a])} and {sorted(rows[claim.b])})")
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
        bound = MARGIN if r["kind"] == "matches" else 0.0
        on_bound = (abs(abs(r["mean"]) - bound) if r["kind"] == "matches" else abs(r["mean"])) == 0
        return ("no number of seeds would, at this mean" if on_bound else
                f"more than 1000 seeds if the mean and SD ({r['sd']:.1f}) stay as observed")
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
        evals = first_masked_evals(s)
        if not evals:
            continue
        total += 1
        bad += evals[0]["teacher_acc_masked"] < threshold
    return bad, total


def first_masked_evals(run: dict) -> list[dict]:
    """A run's evaluations with a masked teacher, without a keep schedule's full-view ones (which are logit KD)."""
    evals = [h for h in run.get("history", []) if h.get("teacher_acc_masked") is not None]
    if "num_keep" in (evals[0] if evals else {}):
        evals = [h for h in evals if h.get("num_keep")]
    return evals


def ab_words(c: Claim, labels: dict[str, str]) -> str:
    """'A label vs B label', with the metric when it is not the student's accuracy."""
    ab = f"{labels[c.a]} vs {labels[c.b]}"
    return ab if c.metric == "student" else f"{ab} ({METRICS[c.metric]})"


def claim_lines(results: list[dict], labels: dict[str, str], margin: float = MARGIN) -> list[str]:
    """Markdown table of evaluated claims: claim, A vs B, per-seed differences, mean and CI, rule, verdict."""
    by_key = {c.key: c for c in CLAIMS}
    lines = ["| claim (source) | A vs B | A - B per seed (points) | mean [95% CI] | rule | verdict |",
             "|---|---|---|---|---|---|"]
    for r in results:
        c = by_key[r["key"]]
        per = ", ".join(f"{d:+.1f}" for d in r["diffs"])
        v = r["verdict"] + (f": {settle_words(r)}" if settle_words(r) else "")
        lines.append(f"| {c.text} ({paper_ref(c)}) | {ab_words(c, labels)} | {per} | {fmt_ci(r)} | "
                     f"{kind_words(c.kind, margin)} | **{v}** |")
    return lines


def _evaluated(datas: dict[str, dict]) -> dict[str, tuple[dict, dict]]:
    """Claim key -> (its result, the runs file it comes from), over runs files keyed by script."""
    return {r["key"]: (r, d) for d in datas.values() for r in d.get("claims", [])}


def flops_result() -> dict:
    """The FLOPs claim settled by arithmetic (the docs/paper.md#flops-model, no run): DeiT-S teacher PFLOPs over 300
    ImageNet epochs at 50% kept vs all, and 1 - (3 S + T_masked) / (3 S + T_full) for DeiT-S -> DeiT-Ti. Holds when
    both round to the paper's figures (-51%, 0.28)."""
    import maskedkd as mkd
    from reproduce.lib import paper
    masked, full = (mkd.pflops(paper.teacher_macs("DeiT-S", k), 300) for k in (50, None))
    led = mkd.training_ledger(mkd.vit_config("deit_tiny_patch16_224"), mkd.vit_config("deit_small_patch16_224"), 98)
    teacher, total = 1 - masked / full, 1 - led["total_masked"] / led["total_full"]
    ok = round(100 * teacher) == 51 and round(total, 2) == 0.28
    return {"key": "flops_saving", "verdict": "holds" if ok else "does not hold",
            "ours": f"teacher {masked:.0f} vs {full:.0f} PFLOPs (-{100 * teacher:.1f}%), training -{100 * total:.1f}% "
                    "(arithmetic, no run)"}


GPU_RUNS = Path(__file__).resolve().parents[1] / "reference" / "gpu"  # reproduce/gpu_check.sh runs, committed
SPEEDUP_TOLERANCE = 0.10  # a measured img/s ratio "is" the paper's when within 10% of it


def speedup_result(gpu_runs: Path = GPU_RUNS) -> dict | None:
    """The throughput claim from the newest committed GPU run (section [4] of reproduce/gpu_check.py), eager rows
    (the paper's code ran its teachers eagerly): "rises" when every teacher's img/s grows at each step down in kept
    fraction; each paper ratio (table 1) is met when ours is within SPEEDUP_TOLERANCE of it. holds: rises and
    every paper ratio met; holds in part: rises, some ratios short; does not hold: a teacher does not speed up.
    These rules were written after the first GPU run was seen (it was not pre-registered). None without a run."""
    import json
    runs = sorted(gpu_runs.glob("*.json"))
    if not runs:
        return None
    r = json.loads(runs[-1].read_text())
    rows = [x for x in r.get("teachers", {}).get("rows", []) if "img_s_eager" in x]
    if not rows:
        return None
    by_teacher: dict[str, list[dict]] = {}
    for x in rows:
        by_teacher.setdefault(x["teacher"], []).append(x)
    rises = all(all(a["img_s_eager"] < b["img_s_eager"] for a, b in zip(xs, xs[1:]))
                for xs in (sorted(v, key=lambda x: -x["kept_pct"]) for v in by_teacher.values()))
    paper = [x for x in rows if x["paper_ratio"]]
    met = [x for x in paper if abs(x["ratio_eager"] / x["paper_ratio"] - 1) <= SPEEDUP_TOLERANCE]
    verdict = ("holds" if rises and len(met) == len(paper) else "holds in part" if rises else "does not hold")

    def span(pct, key):
        v = [x[key] for x in rows if x["kept_pct"] == pct and key in x]
        return f"x{min(v):.2f}-{max(v):.2f}" if v else "–"

    ours = (f"{r['machine']['gpu']}, {len(by_teacher)} teachers, bf16 eager: {span(50, 'ratio_eager')} at 50%, "
            f"{span(25, 'ratio_eager')} at 25% (compiled {span(50, 'ratio_compiled')}, {span(25, 'ratio_compiled')}); "
            f"{len(met)} of {len(paper)} paper ratios within {100 * SPEEDUP_TOLERANCE:.0f}% "
            f"(reproduce/reference/gpu/{runs[-1].name})")
    return {"key": "speedup", "verdict": verdict, "ours": ours, "rises": rises, "met": len(met), "of": len(paper)}


def _labels(d: dict) -> dict[str, str]:
    return {r["id"]: r["label"] for r in d["rows"]}


def _mode_note(d: dict) -> str:
    return "" if d.get("mode", "default") == "default" else f" ({d['mode']} mode)"


def claims_md(datas: dict[str, dict], header: str = "", margin: float = MARGIN) -> str:
    """results/claims.md: every claim; the evaluated ones (from the runs files `datas`, script -> content) with
    their numbers, the others 'not yet evaluated' with the command that will evaluate them."""
    done = _evaluated(datas)
    lines = [header or "# The paper's claims at embedded scale", "",
             f"Paired differences over seeds (same seed: same student initialisation and data order), 95% Student-t "
             f"intervals, equivalence margin {margin:g} points for \"matches\"; the rules are in "
             f"`reproduce/lib/claims.py`. Paper numbers are ImageNet's, for orientation only. Runs files: "
             + (", ".join(f"{k}_runs.json (seeds {d['seeds']}{_mode_note(d)})" for k, d in sorted(datas.items()))
                or "none") + ".", "",
             "| claim | source | paper (ImageNet) | evaluated by | A - B, mean [95% CI] (points) | verdict |",
             "|---|---|---|---|---|---|"]
    flops, speed = flops_result(), speedup_result()
    for c in CLAIMS:
        if c.key == flops["key"]:
            num, v = flops["ours"], flops["verdict"]
        elif speed and c.key == speed["key"]:
            num, v = speed["ours"], speed["verdict"]
        elif c.key in done:
            r, d = done[c.key]
            num = f"{ab_words(c, _labels(d))}: {fmt_ci(r)}, n = {len(r['seeds'])}"
            v = r["verdict"] + (f" ({settle_words(r)})" if settle_words(r) else "")
        else:
            num, v = "–", "not yet evaluated here"
            d = datas.get(c.script)
            missing = [] if d is None or not c.kind else [r for r in (c.a, c.b) if r not in {x["id"] for x in d["rows"]}]
            if missing:  # e.g. a smoke run, which trains one keep count: say why, not just "not yet"
                v = f"not evaluated: the {d['mode']} run in {c.script}_runs.json has no row {', '.join(missing)}"
        lines.append(f"| {c.text} | {paper_ref(c)} | {c.paper} | `{c.command}` | {num} | {v} |")
    return "\n".join(lines) + "\n"


def summary_block(datas: dict[str, dict], margin: float = MARGIN) -> str:
    """The short table at the top of reproduce/README.md, from the committed runs files: one line per claim with
    its command, the paper's number, ours (A - B with its interval), the verdict and the run-minutes of its two
    rows."""
    done = _evaluated(datas)
    lines = ["| claim (source) | command | paper (ImageNet) | ours: A - B, mean [95% CI], n seeds | verdict | "
             "run-minutes |", "|---|---|---|---|---|---|"]
    flops, speed = flops_result(), speedup_result()
    for c in CLAIMS:
        if c.key == flops["key"]:
            ours, v, mins = flops["ours"], f"**{flops['verdict']}**", "0"
        elif speed and c.key == speed["key"]:
            ours, v, mins = speed["ours"], f"**{speed['verdict']}**", "–"
        elif c.key in done:
            r, d = done[c.key]
            ours, v = f"{fmt_ci(r)}, n = {len(r['seeds'])}", f"**{r['verdict']}**"
            mins = f"{run_minutes(d, (c.a, c.b)):.0f}"
        else:
            ours, v, mins = "–", "not yet evaluated", "–"
        lines.append(f"| {c.text} ({paper_ref(c)}) | `{c.command}` | {c.paper} | {ours} | {v} | {mins} |")
    return "\n".join(lines) + "\n"


def run_minutes(data: dict, rows: tuple[str, ...] | None = None) -> float:
    """Minutes of training behind a runs file (or its `rows`): the sum of the runs' wall times (1 thread each; a
    2-core machine runs two at a time)."""
    return sum(r.get("wall_s") or 0 for r in data["runs"] if rows is None or r["row"] in rows) / 60


# --- a script's runs as data (results/NAME_runs.json) and the markdown made from them ---------------------------

def metric_of(run: dict, metric: str = "student") -> float | None:
    """One run's value of a claim's metric (METRICS); None where the run has no masked teacher."""
    if metric == "student":
        return run["final_acc"]
    evals = first_masked_evals(run)
    if metric == "teacher_first":
        return evals[0]["teacher_acc_masked"] if evals else None
    if metric == "teacher_last":
        return run["history"][-1].get("teacher_acc_masked") if run.get("history") else None
    raise ValueError(f"unknown claim metric {metric!r}: one of {sorted(METRICS)}")


def row_accs(data: dict, metric: str = "student") -> dict[str, dict[int, float]]:
    """Row id -> {seed: the metric's value} from a runs file (seeds without a value left out)."""
    out: dict[str, dict[int, float]] = {r["id"]: {} for r in data["rows"]}
    for run in data["runs"]:
        v = metric_of(run, metric)
        if v is not None:
            out[run["row"]][run["seed"]] = v
    return out


def evaluate_script(data: dict, margin: float = MARGIN) -> list[dict]:
    """Every claim of the runs file's script (data["script"], "table1" for files from before the key) whose two
    rows it holds, evaluated on the claim's metric."""
    script = data.get("script", "table1")
    ids = {r["id"] for r in data["rows"]}
    return [evaluate(c, row_accs(data, c.metric), margin) for c in CLAIMS
            if c.script == script and c.kind and c.a in ids and c.b in ids]


def _pm(xs: list[float]) -> str:
    m = statistics.fmean(xs)
    return f"{100 * m:.1f} ± {100 * statistics.stdev(xs):.1f}" if len(xs) > 1 else f"{100 * m:.1f}"


def rows_table(data: dict) -> list[str]:
    """Markdown table of a runs file's rows: mean ± SD over seeds, each seed, the masked teacher at the last
    evaluation, how many runs' masked teacher saw no digit at its first masked evaluation, teacher MACs saved."""
    lines = [f"| method | patches kept | student acc (%), mean ± SD | per seed {data['seeds']} | masked teacher, "
             f"last eval (%) | masked teacher < {100 * FAILED_TEACHER:.0f}% at its first masked eval | "
             f"teacher MACs saved | {data.get('paper_column', 'paper (ImageNet, DeiT-S -> DeiT-Ti)')} |",
             "|---|---|---|---|---|---|---|---|"]
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
    """The generated part of a script's section of reproduce/README.md, from reproduce/reference/SCRIPT_runs.json:
    the rows table and the claims table (tests/test_claims.py checks the README against it)."""
    labels = _labels(data)
    teacher = f"teacher test accuracy {100 * data['teacher_acc']:.1f}%; " if data.get("teacher_acc") else ""
    return "\n".join([
        f"Seeds {data['seeds']}; {teacher}{len(data['runs'])} runs, "
        f"{run_minutes(data):.0f} run-minutes of training (1 thread each).", "",
        *rows_table(data), "",
        f"Claims (paired by seed, 95% Student-t interval, equivalence margin {margin:g} points; rules in "
        "`reproduce/lib/claims.py`, every claim of the paper in `reproduce/reference/claims.md`):", "",
        *claim_lines(data["claims"], labels, margin)]) + "\n"


END = "<!-- generated: end -->"


def begin(key: str = "table1") -> str:
    """The marker opening the README block generated from reproduce/reference/KEY_runs.json ('*' for the summary
    of every runs file)."""
    return f"<!-- generated from reproduce/reference/{key}_runs.json: begin -->"


BEGIN = begin()


def _span(text: str, key: str) -> tuple[int, int]:
    """Start and end of the block begin(key) ... END; raises unless the marker is there once and its END comes
    before any other block's begin marker (a lost END must not let a rewrite swallow the next section)."""
    mark = begin(key)
    if text.count(mark) != 1:
        raise ValueError(f"{mark!r} occurs {text.count(mark)} times in the text (expected once)")
    i = text.index(mark) + len(mark)
    j = text.find(END, i)
    nxt = text.find("<!-- generated from ", i)
    if j < 0 or 0 <= nxt < j:
        raise ValueError(f"the block {mark!r} has no {END!r} before the next block or the end of the text")
    return i, j


def replace_block(text: str, block: str, key: str = "table1") -> str:
    """text with the part between begin(key) and its END marker replaced by block."""
    i, j = _span(text, key)
    return text[:i] + "\n" + block + text[j:]


def current_block(text: str, key: str = "table1") -> str:
    """The part of text between begin(key) and its END marker."""
    i, j = _span(text, key)
    return text[i + 1: j]
