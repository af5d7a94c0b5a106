"""Paper table 1 [docs/paper.md#table-1], in two honest parts. See reproduce/README.md.

    bash reproduce/table1.sh            # default: embedded scale, 5 seeds (see reproduce/README.md for its time)
    bash reproduce/table1.sh --update-reference   # the default, then its small outputs -> reproduce/reference/
    bash reproduce/table1.sh --quick    # 1 seed, 5 of the 30 epochs: a first look
    bash reproduce/table1.sh --regime cluttered   # a stress regime (fixed_places, cluttered): results/REGIME/
    bash reproduce/table1.sh --speedups # also part 1's teacher speed-ups measured on this CPU (minutes more)
    bash reproduce/table1.sh --full --data /path/to/imagenet --checkpoints /path/to/teachers [--rows 1,2] [--dry-run]

Part 1, exact: the cost columns of every paper row (teacher GMAC/img, PFLOPs and their change, beside the
paper's values) and the teacher-forward speed-up masked/unmasked measured here on random weights.
Part 2, embedded scale: student accuracy on the default digits regime (or, --regime cluttered, the stress regime)
with a locally trained teacher, mean +- SD over
seeds: no KD, logit KD, MaskedKD at 75/50/40/25% kept, and full KD for 3 epochs then MaskedKD 50% (the remedy of
beyond.sh, the same runs), beside the paper's ImageNet numbers; then the table-1 claims of reproduce/lib/claims.py,
each a paired comparison of two rows over the seeds with a 95% interval and a verdict.
Writes results/table1.md, table1.csv, claims.md (every claim of the paper) and table1_runs.json (each run's name,
config hash, final accuracy and history: what reproduce/reference/ and the README's table-1 block are made from).
"""
from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path

import torch

import maskedkd as mkd
from maskedkd.bench import bench_teacher
from maskedkd.experiments import MODELS, TrainConfig
from maskedkd.select import keep_count
from reproduce.lib import claims, driver, embedded, full, paper, records, regime, report, stats
from reproduce.lib.embedded import plan, student_run, teacher_config, warmup_epochs, warmup_run
from reproduce.lib.runner import mean_std

KEPT = (75, 50, 40, 25)


def student_rows(mode: str, seed: int, feature_kd: bool = False, task: str = "digits"
                 ) -> list[tuple[str, str, TrainConfig]]:
    """(row id, label, run config) of every part-2 row for one seed of a regime; the row ids are the claims'
    (lib/claims.py)."""
    n = MODELS["digits_student"].num_patches
    rows = ([("nokd", "No distillation", student_run(mode, seed, None, teacher=False, task=task)),
             ("kd", "Logit KD (full teacher)", student_run(mode, seed, None, task=task))]
            + [(f"keep{p}", f"+MaskedKD {p}%", student_run(mode, seed, keep_count(n, p / 100), task=task))
               for p in KEPT]
            + [("warmup", warmup_label(mode), warmup_run(mode, seed, task))])  # beyond.sh's remedy: the same runs
    if feature_kd:  # the paper's feature-KD rows: Manifold + MaskedKD 75%, Attention + MaskedKD 50% [docs/paper.md#feature-kd]
        for kind, pct in (("manifold", 75), ("attention", 50)):
            rows += [(kind, f"{kind.title()} KD (full teacher)", student_run(mode, seed, None, kd_kind=kind, task=task)),
                     (f"{kind}{pct}", f"{kind.title()} +MaskedKD {pct}%",
                      student_run(mode, seed, keep_count(n, pct / 100), kd_kind=kind, task=task))]
    return rows


REGIME_TITLES = {"digits": "the default digits regime", "fixed_places": "the fixed-places stress regime",
                 "cluttered": "the cluttered-digits stress regime"}


def warmup_label(mode: str) -> str:
    w = warmup_epochs(mode)
    return f"Full KD {w} epoch{'s' * (w > 1)}, then MaskedKD 50% (ours)"


def speedups(mode: str, measure: bool = False) -> list[float | str | None]:
    """Part 1's speed-up column, one entry per paper row (None: a row without a masked teacher): the measured
    teacher-forward speed-up (with `measure`; one architecture in smoke mode; about 5 of the default run's minutes on
    2 cores, most of them DeiT3-L and -H), or the note that says why a row has none. Kept in the runs file."""
    from tqdm.auto import tqdm
    out, speed = [], {}
    for r in tqdm(paper.TABLE1, desc="table 1 speed-ups", dynamic_ncols=True, disable=not measure and mode != "smoke"):
        cfg = r.teacher and paper.teacher_config(r.teacher)
        key = r.kept and (cfg.name, r.kept)
        if not key:
            out.append(None)
        elif not measure and mode != "smoke":
            out.append("`--speedups`")
        elif mode == "smoke" and speed and key not in speed:
            out.append("smoke: not measured")
        else:
            if key not in speed:
                cfg = cfg.replace(depth=1) if mode == "smoke" else cfg
                batch, iters = {"smoke": (2, 1), "quick": (1, 2)}.get(mode, (2, 3))
                speed[key] = bench_teacher(cfg.name, keep_count(cfg.num_patches, r.kept / 100), batch=batch,
                                           iters=iters, device=torch.device("cpu"), cfg=cfg)["speedup"]
            out.append(speed[key])
    return out


def part1(speeds: list) -> list[dict]:
    """Cost columns of every paper row (exact arithmetic), with its speed-up entry (`speedups`)."""
    rows = []
    for r, sp in zip(paper.TABLE1, speeds):
        if r.teacher is None:
            rows.append({"row": r, "gmac": None})
            continue
        m_full, m = paper.teacher_macs(r.teacher, None), paper.teacher_macs(r.teacher, r.kept)
        ours_pf = mkd.pflops(m, r.epochs)
        d = {"row": r, "gmac": m / 1e9, "pflops": ours_pf, "change": m / m_full - 1,
             "diff": None if r.pflops is None else ours_pf / r.pflops - 1}
        if isinstance(sp, str):
            d["speedup_note"] = sp
        elif sp is not None:
            d["speedup"] = sp
        rows.append(d)
    return rows


PAPER_TI = {"nokd": "72.0", "kd": "75.0", "keep75": "– (no logit row; 75.2 with Manifold KD)", "keep50": "75.2",
            "keep40": "74.9", "keep25": "74.8 (DeiT3-S teacher)", "warmup": "– (not in the paper)",
            "manifold": "75.0", "manifold75": "75.2", "attention": "75.3", "attention50": "75.3"}


def render(res: dict) -> tuple[str, list[dict]]:
    """table1.md and the rows of table1.csv, from an invocation's runs (table1_runs.json, with the feature-KD rows
    of feature_kd_runs.json when it trained them)."""
    seeds, mode, p1 = res["seeds"], res["mode"], part1(res["speedups"])
    lines = [driver.header("Table 1: MaskedKD main results, regenerated", res,
                           f"mode: {mode}; teacher weights: {res['teacher']}; student runs: {len(res['runs'])}, "
                           f"{res['trained_now']} trained in this invocation, the others reused from results/runs")]
    lines += ["## Part 1: the cost columns of every paper row (exact arithmetic; speed-up measured here)", "",
              "Teacher GMAC/img and PFLOPs by the FLOPs model of docs/paper.md#flops-model; `diff` is ours vs the paper's PFLOPs. "
              "The speed-up is the teacher forward time unmasked / masked on this CPU (random weights, batch 2; 1 in "
              "--quick), measured with `--speedups` (minutes on 2 cores), "
              "beside the paper's img/s ratio (GPU).", "",
              "| student | teacher | method | paper acc | GMAC/img | PFLOPs ours | PFLOPs paper | diff | change ours | "
              "speed-up here | paper img/s (ratio) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    csv_rows = []
    for d in p1:
        r = d["row"]
        if d["gmac"] is None:
            lines.append(f"| {r.student} | – | {r.label} | {r.acc} | – | – | – | – | – | – | – |")
            csv_rows.append({"part": 1, "student": r.student, "teacher": "", "method": r.label, "paper_acc": r.acc})
            continue
        sp = f"x{d['speedup']:.2f}" if "speedup" in d else d.get("speedup_note", "–")
        diff = "–" if d["diff"] is None else f"{100 * d['diff']:+.2f}%"
        paper_speed = (f"{r.img_s} (x{r.img_s_ratio})" if r.img_s and r.img_s_ratio else
                       (str(r.img_s) if r.img_s else "–"))
        lines.append(
            f"| {r.student} | {r.teacher} | {r.label} | {r.acc} | {d['gmac']:.3f} | {d['pflops']:.0f} | "
            f"{r.pflops if r.pflops is not None else '–'} | "
            f"{diff} | "
            f"{100 * d['change']:+.0f}% | {sp} | {paper_speed} |")
        csv_rows.append({"part": 1, "student": r.student, "teacher": r.teacher, "method": r.label,
                         "paper_acc": r.acc, "gmac_per_img": round(d["gmac"], 4), "pflops_ours": round(d["pflops"], 1),
                         "pflops_paper": r.pflops, "pflops_diff": None if d["diff"] is None else round(d["diff"], 5),
                         "speedup_here": round(d["speedup"], 3) if "speedup" in d else None,
                         "paper_img_s": r.img_s, "paper_ratio": r.img_s_ratio})
    worst = max(abs(d["diff"]) for d in p1 if d.get("diff") is not None)
    lines += ["", f"Largest |diff| over rows with a paper PFLOPs value: {100 * worst:.2f}% (tolerance 0.3%).", ""]

    s_cfg = MODELS["digits_student"]
    t_cfg = MODELS["digits_teacher"]
    labels = {r["id"]: r["label"] for r in res["rows"]}
    curve = res["teacher_random_curve"]
    lines += [f"## Part 2: accuracy at embedded scale ({REGIME_TITLES[res['regime']]}, not ImageNet)", "",
              "The teacher's test accuracy with a random share of its patches kept (the property the method relies "
              "on; the paper's DeiT-B keeps 76.9 of 81.8 on a random half, docs/paper.md#masking-criteria): "
              + ", ".join(f"{k}%: {100 * v:.1f}" for k, v in curve.items())
              + f" (random half / full = {curve['50'] / curve['100']:.2f}).", "",
              f"Student {s_cfg.embed_dim}d x {s_cfg.depth} ({s_cfg.num_patches} patches of 4x4 on 32x32), teacher "
              f"{t_cfg.embed_dim}d x {t_cfg.depth}, teacher test accuracy {100 * res['teacher_acc']:.1f}% (weights "
              f"trained once; {res['teacher_s'] / 60:.1f} min spent on the teacher in this run). Mean ± SD over seeds "
              f"{seeds}; every row uses the same seeds, so a seed's student starts from the same weights and sees the "
              "same batches in every row. The paper's numbers are DeiT-Ti with a DeiT-S teacher on ImageNet-1k: a "
              "different scale.", "", *report.rows_table(res), "",
              "## Claims", "", f"Paired differences A - B over the seeds, 95% Student-t interval, equivalence margin "
              f"{stats.MARGIN:g} points for \"matches\"; the rules and the margin's reasoning are in "
              "`reproduce/lib/claims.py`, every claim of the paper in results/claims.md.", "",
              *report.claim_lines(res["claims"], labels), "", reading(res), ""]
    accs = claims.row_accs(res)
    for row in res["rows"]:
        xs = [accs[row["id"]][s] for s in sorted(accs[row["id"]])]
        if not xs:
            continue
        runs = [r for r in res["runs"] if r["row"] == row["id"]]
        t_last = [r["history"][-1].get("teacher_acc_masked") for r in runs]
        bad, total = claims.masked_failures(runs)
        csv_rows.append({"part": 2, "row": row["id"], "method": row["label"],
                         "num_keep": next(c for rid, _, c in student_rows(mode, 0, True, res["regime"])
                                          if rid == row["id"]).num_keep
                         or None, "seeds": len(xs), "student_acc_mean": round(mean_std(xs)[0], 5),
                         "student_acc_std": round(mean_std(xs)[1], 5),
                         "masked_teacher_acc_mean": None if t_last[0] is None else round(mean_std(t_last)[0], 5),
                         "masked_teacher_failures": bad if total else None, "teacher_macs_saved": row["saved"],
                         "paper_acc": row["paper"]})
    for r in res["claims"]:
        csv_rows.append({"part": "claims", "row": f"{r['a']} vs {r['b']}", "method": r["key"],
                         "seeds": len(r["seeds"]), "diff_mean": round(r["mean"], 4), "diff_sd": round(r["sd"], 4),
                         "ci_low": round(r["low"], 4), "ci_high": round(r["high"], 4), "verdict": r["verdict"]})
    return "\n".join(lines), csv_rows


def files(res: dict) -> dict[str, str]:
    """table1.md, table1.csv and regime.json of an invocation, from its runs (render)."""
    md, rows = render(res)
    keys = sorted({k for r in rows for k in r})
    table = [keys] + [[r.get(k, "") for k in keys] for r in rows]  # as csv.DictWriter writes them
    figures = regime.figures(split(res)[0], res["header"]["wall_s"])
    return {"table1.md": md, "table1.csv": driver.csv_text(table), "regime.json": json.dumps(figures, indent=1) + "\n"}


def reading(res: dict) -> str:
    """A one-paragraph reading written from the numbers (not a fixed conclusion)."""
    accs = claims.row_accs(res)
    mean = {rid: statistics.fmean(v.values()) for rid, v in accs.items() if v}
    labels = {r["id"]: r["label"] for r in res["rows"]}
    ranked = ", ".join(f"{labels[k]} {100 * v:.1f}" for k, v in sorted(mean.items(), key=lambda kv: -kv[1]))
    counts = {v: sum(r["verdict"] == v for r in res["claims"]) for v in ("holds", "does not hold", "inconclusive")}
    said = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    fails = [(labels[r["id"]], *claims.masked_failures([x for x in res["runs"] if x["row"] == r["id"]]))
             for r in res["rows"] if r["id"].startswith("keep") or r["id"] == "warmup"]
    n_bad, n_all = sum(b for _, b, _ in fails), sum(t for *_, t in fails)
    return (f"**Reading.** Of the {len(res['claims'])} claims evaluated above: {said} (the verdicts are the "
            f"rules' output over {len(res['seeds'])} seed{'s' * (len(res['seeds']) > 1)}, not a judgement). "
            f"Ranking by mean: {ranked}. In {n_bad} of the {n_all} "
            "MaskedKD runs the masked teacher was below "
            f"{100 * claims.FAILED_TEACHER:.0f}% at its first masked evaluation (the patches the student's early "
            "attention ranked first did not show the teacher the digit). The paper reports that on ImageNet MaskedKD at 50% matches full "
            "KD (75.2 vs 75.0 for DeiT-S -> DeiT-Ti); the reading above is what these embedded-scale runs show, "
            "whatever it is.")


REFERENCE_FILES = ("table1.md", "table1.csv", "table1_runs.json", "regime.json")
FEATURE_ROWS = ("manifold", "manifold75", "attention", "attention50")


def split(res: dict) -> tuple[dict, dict | None]:
    """The runs of one invocation as table1_runs.json (the table-1 rows) and, with --feature-kd,
    feature_kd_runs.json (the feature-KD rows), each with its own claims."""
    def part(script, keep):
        rows = [r for r in res["rows"] if keep(r["id"])]
        d = {**res, "script": script, "rows": rows, "runs": [r for r in res["runs"] if keep(r["row"])]}
        if script == "feature_kd":
            d["paper_column"] = "paper (ImageNet, DeiT-S -> DeiT-Ti; manifold / attention rows of table 1)"
        d["claims"] = claims.evaluate_script(d)
        return d
    main_part = part("table1", lambda rid: rid not in FEATURE_ROWS)
    feature = part("feature_kd", lambda rid: rid in FEATURE_ROWS)
    return main_part, (feature if feature["rows"] else None)


def update_reference(out: Path, reference: Path = records.REFERENCE, readme: Path = records.README,
                     feature_kd: bool = False) -> None:
    """Copy a default run's small outputs into reproduce/reference/ and regenerate the table-1 (or feature-KD)
    block of reproduce/README.md and its claims summary (tests/test_claims.py checks them against the plan)."""
    if feature_kd:
        records.update_reference("feature_kd", out, ("feature_kd_runs.json",), reference, readme, set(FEATURE_ROWS))
    else:
        records.update_reference("table1", out, REFERENCE_FILES, reference, readme,
                                  {r for r, _, _ in student_rows("default", 0)})


class Table1(driver.Spec):
    """Table 1's steps beside the driver's: its teacher trained and timed
    first and part 1's speed-ups, the feature-KD rows' own runs file and claims (--feature-kd), its files
    (markdown, CSV, regime.json) and its reference update."""

    def before(self, args, mode: str) -> dict:
        """The teacher, trained once (minutes) if neither shipped nor cached, and timed; part 1's speed-ups."""
        from maskedkd.train import train_cached_teacher
        if args.fresh:
            from maskedkd.data.cache import cache_dir
            shutil.rmtree(cache_dir() / "teachers", ignore_errors=True)
        t0 = time.time()
        path = train_cached_teacher(teacher_config(mode, args.regime))
        return {"teacher": embedded.shown_path(path), "teacher_s": time.time() - t0,
                "speedups": speedups(mode, args.speedups), "feature_kd": args.feature_kd}

    def claims(self, data: dict) -> list[dict]:
        return claims.evaluate_script(data) + claims.evaluate_script({**data, "script": "feature_kd"})

    def runs_files(self, data: dict) -> dict[str, dict]:
        table, feature = split(data)
        return {"table1_runs.json": table, **({"feature_kd_runs.json": feature} if feature else {})}

    def render(self, data: dict) -> dict[str, str]:
        return files(data)

    def finish(self, args, out: Path, names: tuple[str, ...]) -> None:
        if args.update_reference:
            update_reference(out, feature_kd=args.feature_kd)


def rows(mode: str, seeds: list[int], args) -> list[tuple[str, list[TrainConfig]]]:
    per_seed = [student_rows(mode, s, args.feature_kd, args.regime) for s in seeds]
    return [(rid, label, [rs[j][2] for rs in per_seed]) for j, (rid, label, _) in enumerate(per_seed[0])]


def teacher_curve(mode, seeds, cfgs, sums, out) -> dict:
    """The teacher's random-patch curve on the students' test set (embedded.teacher_curve), and what the no-KD and
    logit-KD students' attention is worth to it (embedded.attention_figures: the method's precondition,
    regime.PRECONDITION), one evaluation per student."""
    from maskedkd.teachers import cached_teacher
    from reproduce.lib.runner import run_dir
    task = cfgs[0].name.split("_student_", 1)[0]
    tcfg = teacher_config(mode, task)
    t_path = cached_teacher(tcfg)
    curve = embedded.teacher_curve(tcfg, t_path, cfgs[0].replace(test_size=plan(mode, task)[1].get("test_size", 2000)))
    attention = {c.name: embedded.attention_figures(c, run_dir(out / "runs", c) / "params.safetensors", tcfg, t_path)
                 for c in cfgs if embedded.row_id(c) in ("nokd", "kd")}
    return {"teacher_acc": curve["100"], "teacher_random_curve": curve, "attention": attention}


def options(ap) -> None:
    ap.add_argument("--speedups", action="store_true",
                    help="also measure part 1's teacher-forward speed-ups on this CPU (random weights; minutes)")
    ap.add_argument("--feature-kd", action="store_true",
                    help="also the Manifold / Attention KD rows with and without masking (~+20 min)")


SPEC = Table1("table1", "Table 1: MaskedKD main results, regenerated", __doc__, rows,
              paper=lambda rid, label: PAPER_TI[rid], extra=teacher_curve, full=full.main, options=options,
              regimes=True)
main = SPEC.main

if __name__ == "__main__":
    main()
