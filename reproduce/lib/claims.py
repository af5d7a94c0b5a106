"""The paper's claims, written down once as data, and how a set of embedded runs settles each one: a claim names
two rows of one script and a kind (beats, below, matches); reproduce/lib/stats.py holds the statistics and the
verdict rules, reproduce/lib/report.py the markdown made from the results.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from reproduce.lib.stats import MARGIN, paired, seeds_to_settle, t_interval, verdict

FAILED_TEACHER = 0.20  # a masked teacher below this at its first masked evaluation saw no digit (chance is 10%)


@dataclass(frozen=True)
class Claim:
    """One claim of the paper (or ours, source="ours"): `text` in words, `where` its section of docs/paper.md, `kind`
    one of beats / below / matches for an evaluated claim (row `a` against row `b`, ids of the script's rows, compared on
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
    regime: str | None = None  # the image regime whose runs settle it (None: whichever regime the runs file is of)

    def on(self, regime: str) -> "Claim":
        """The claim with its rows as they are named on an image regime: "{regime}" in a row id stands for the
        regime's name (a fixed model is that regime's own no-KD student)."""
        return replace(self, a=self.a.format(regime=regime), b=self.b.format(regime=regime)) if self.kind else self


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
          "student)", "masking-criteria", "criteria", CR, "beats", "keep32", "keep32-by-{regime}_student_nokd",
          "final gap to vanilla ~1.05 vs ~0.7-0.85"),
    Claim("curriculum_early", "Curriculum: early in training the MaskedKD teacher is less accurate than a "
          "randomly masked one", "masking-criteria", "criteria", CR, "below", "keep32", "keep32-random",
          "~71.8 (epoch 3) vs ~76.9", metric="teacher_first"),
    Claim("curriculum_late", "Curriculum: at the end the MaskedKD teacher is more accurate than a randomly masked "
          "one", "masking-criteria", "criteria", CR, "beats", "keep32", "keep32-random", "~79 vs ~76.9 (epoch 300)",
          metric="teacher_last"),
    # beyond the paper: the flat-last criterion (maskedkd.select.topk_flat_last), written down before any of its runs.
    # On the fixed-places stress regime the student's attention parks on blank patches; on the default it should not.
    Claim("flat_last_teacher_vs_random", "Flat patches last: its masked teacher at 50% is at least as accurate as a "
          "randomly masked one, within the matching margin, on the fixed-places stress regime (ours)", "–", "criteria",
          f"{CR} --regime fixed_places", "noninferior", "keep32-topk_flat_last", "keep32-random", "not in the paper",
          source="ours", metric="teacher_last", regime="fixed_places"),
    Claim("flat_last_student_vs_maskedkd", "Flat patches last: its student is at least as accurate as plain "
          "MaskedKD's, within the matching margin, on the fixed-places stress regime (ours)", "–", "criteria",
          f"{CR} --regime fixed_places", "noninferior", "keep32-topk_flat_last", "keep32", "not in the paper",
          source="ours", regime="fixed_places"),
    Claim("flat_last_matches_maskedkd", "Flat patches last matches plain MaskedKD at 50% on the default regime (ours)",
          "–", "criteria", CR, "matches", "keep32-topk_flat_last", "keep32", "not in the paper", source="ours",
          regime="digits"),
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
    script, regime = data.get("script", "table1"), data.get("regime", "digits")
    ids = {r["id"] for r in data["rows"]}
    mine = [c.on(regime) for c in CLAIMS if c.script == script and c.kind and c.regime in (None, regime)]
    return [evaluate(c, row_accs(data, c.metric), margin) for c in mine if c.a in ids and c.b in ids]
