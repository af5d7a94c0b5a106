"""The embedded-scale runs shared by table 1, figure 2 and the analyses: one run per (seed, kept patches), named
by what it is, so every script that needs the same run finds it finished in results/runs/."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from maskedkd.experiments import MODELS, TrainConfig, config_hash, get_config
from reproduce.lib import claims, flags, regime, report, stats

REFERENCE = Path(__file__).resolve().parents[1] / "reference"  # reproduce/reference: the default runs' outputs
README = REFERENCE.parent / "README.md"


def parser(doc: str) -> argparse.ArgumentParser:
    """The options every embedded-scale script shares."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 seed, fewer epochs: a first look")
    ap.add_argument("--smoke", action="store_true", help="tiny runs, for the test suite")
    ap.add_argument("--fresh", action="store_true", help="rerun instead of reusing finished runs")
    ap.add_argument("--jobs", type=flags.integer("[1, inf)"), default=2, help="parallel runs, one thread each")
    ap.add_argument("--out", default="results")
    ap.add_argument("--update-reference", action="store_true",
                    help="after the default run, copy its small outputs to reproduce/reference/ and regenerate the "
                         "script's block and the claims summary of reproduce/README.md")
    return ap


def parse_or_full(ap: argparse.ArgumentParser, argv, full_main):
    """The embedded options, or with --full the ImageNet-scale mode: the remaining arguments (--data,
    --checkpoints, --dry-run, ...; see reproduce/lib/full.py) go to full_main, and None is returned."""
    ap.add_argument("--full", action="store_true", help="ImageNet scale with real checkpoints (reproduce/lib/full.py)")
    args, rest = ap.parse_known_args(argv)
    if args.full:
        full_main(rest)
        return None
    if rest:
        ap.error(f"unrecognised arguments: {rest}")
    return args


def mode_of(args) -> str:
    mode = "smoke" if args.smoke else "quick" if args.quick else "default"
    if getattr(args, "update_reference", False) and mode != "default":
        raise SystemExit("--update-reference records the default run: drop --quick and --smoke")
    return mode


def finish(args, script: str, files: tuple[str, ...]) -> None:
    """After a script's outputs are written to args.out: with --update-reference, record them (its runs file and
    `files`) in reproduce/reference/ and regenerate the README blocks."""
    if args.update_reference:
        update_reference(script, Path(args.out), (f"{script}_runs.json", *files))


# The embedded image regimes (maskedkd/experiments/digits.py): the default, and the cluttered stress regime.
REGIMES = ("digits", "cluttered")
QUICK_EPOCHS = {"digits": 5, "cluttered": 4}  # of 15 (digits); cluttered: 1 clean + 3 cluttered of its 12


def plan(mode: str, task: str = "digits") -> tuple[list[int], dict]:
    """Seeds and student-run settings for the default / quick / smoke modes of a task (an image regime or
    "sounds")."""
    if task == "sounds":
        return {"smoke": ([0], dict(epochs=1, train_size=128, test_size=64, batch_size=32)),
                "quick": ([0], dict(epochs=5)),
                "default": ([0, 1, 2, 3, 4], {})}[mode]  # 5 seeds: the claims' 4 degrees of freedom
    if task not in REGIMES:
        raise ValueError(f"task {task!r}: expected 'sounds' or one of the image regimes {REGIMES}")
    if mode == "smoke":
        return [0], dict(epochs=1, train_size=256, test_size=200, batch_size=32)
    if mode == "quick":  # a first look: 1 seed, fewer epochs
        return [0], dict(epochs=QUICK_EPOCHS[task])
    # the student config's own recipe (experiments/digits.py); 5 seeds so that the paired differences of
    # reproduce/lib/claims.py have 4 degrees of freedom
    return [0, 1, 2, 3, 4], {}


def regime_option(ap: argparse.ArgumentParser) -> None:
    """--regime: the default embedded regime, or the cluttered stress regime (its own results folder)."""
    ap.add_argument("--regime", choices=REGIMES, default="digits",
                    help="digits: the default regime, chosen to match the paper's (reproduce/regime_trials.py); "
                         "cluttered: the stress regime in which the teacher cannot cope with missing parts")


CURVE_KEPT = (100, 75, 50, 40, 25)  # percent of the patches kept at random: the regime's teacher curve


def teacher_curve(tcfg: TrainConfig, params_path, data_cfg: TrainConfig, draws: int = 3) -> dict[str, float]:
    """Percent kept -> the teacher's test accuracy when shown that share of its patches chosen at random
    (keep_count; the mean over `draws` fixed draws), on the test set of data_cfg's data (the digit scene or the
    sound set). The property the method relies on: the paper's DeiT-B keeps 76.9 / 81.8 = 0.94 of its accuracy on
    a random half [docs/paper.md#masking-criteria]."""
    import statistics

    import torch

    import maskedkd as mkd
    from maskedkd.data.loaders import fixed_test_set
    from maskedkd.select import keep_count
    t_cfg = MODELS[tcfg.model]
    params = mkd.load_checkpoint(params_path, t_cfg)
    x, y = fixed_test_set(data_cfg)
    n = t_cfg.num_patches
    out = {}
    with torch.no_grad():
        for pct in CURVE_KEPT:
            k = keep_count(n, pct / 100)
            accs = []
            for d in range(1 if k == n else draws):
                g = torch.Generator().manual_seed(d)
                idx = None if k == n else torch.rand(len(x), n, generator=g).argsort(-1)[:, :k].sort(-1).values
                accs.append((mkd.teacher_forward(params, x, t_cfg, idx).argmax(-1) == y).float().mean().item())
            out[str(pct)] = statistics.fmean(accs)
    return out


def shown_path(path) -> str:
    """A weights path as a report shows it: relative to the repository when inside it (the shipped teacher, the same
    on every checkout), else as given (a cache entry)."""
    p = Path(path).resolve()
    root = REFERENCE.parents[1]
    return str(p.relative_to(root)) if p.is_relative_to(root) else str(path)


def teacher_config(mode: str, task: str = "digits") -> TrainConfig:
    return get_config(f"{task}_teacher_smoke" if mode == "smoke" else f"{task}_teacher")


def student_run(mode: str, seed: int, num_keep: int | None, *, teacher: bool = True, criterion: str = "topk",
                scorer: str = "student", task: str = "digits", **extra) -> TrainConfig:
    """A student run: no KD (teacher=False), logit KD (num_keep None, or every patch) or MaskedKD with num_keep
    patches; `extra` sets other TrainConfig fields (kd_kind, keep_schedule, adaptive_mass, teacher_tome_r,
    student_keep). Named by run_name."""
    _, kw = plan(mode, task)
    fields = {"seed": seed, **kw, **extra}  # one replace: a config is checked whole, never half-made
    if teacher:
        t = teacher_config(mode, task)
        full = num_keep is None or num_keep == MODELS[t.model].num_patches
        masked = not (full or extra.get("teacher_tome_r") or extra.get("keep_schedule"))
        fields.update(teacher=f"cache:{t.name}", teacher_model=t.model, num_keep=num_keep if masked else 0,
                      criterion=criterion if masked else "topk", scorer=scorer if masked else "student")
    c = get_config(f"{task}_student_nokd").replace(**fields)
    return c.replace(name=run_name(c, task))


def warmup_epochs(mode: str) -> int:
    """Full-KD epochs before MaskedKD 50% in the warm-up remedy (3 in the default mode; 1 in quick and smoke)."""
    return 3 if mode == "default" else 1


def warmup_run(mode: str, seed: int, task: str = "digits") -> TrainConfig:
    """The full-KD warm-up remedy: the teacher sees every patch for warmup_epochs(mode) epochs, then the 50% the
    student ranks highest (keep_schedule "100*3,50"). The same run as reproduce/beyond.py's warm-up row (named
    digits_student_sched100x3-50-sN in the default mode), so either script reuses the other's finished run."""
    smoke = {"epochs": 2, "eval_every": 1} if mode == "smoke" else {}  # smoke: 1 + 1 epochs
    return student_run(mode, seed, None, keep_schedule=f"100*{warmup_epochs(mode)},50", task=task, **smoke)


def run_name(c: TrainConfig, task: str = "digits") -> str:
    """A run's name, read off its config: what the teacher sees (no KD, full KD, kept count, schedule, adaptive
    budget, ToMe r, or the student masked instead), then the non-default criterion, scorer and kd kind, then the
    seed. The name is part of the config hash, so these names are the cache keys of every finished run."""
    kind = "" if c.kd_kind == "soft" else f"-{c.kd_kind}"
    if not c.teacher:
        what = "nokd"
    elif c.adaptive_mass:
        what = f"adaptive{int(100 * c.adaptive_mass)}max{c.num_keep}{kind}"
    elif c.teacher_tome_r:
        what = f"tome{c.teacher_tome_r}{kind}"
    elif c.keep_schedule:  # "100*3,50" -> 100x3-50
        what = "sched" + c.keep_schedule.replace(":", "to").replace("*", "x").replace(",", "-") + kind
    elif c.student_keep:
        what = f"studentkeep{c.student_keep}"
    elif not c.num_keep:
        what = f"kd{kind}"
    else:
        tag = ("" if c.criterion == "topk" else f"-{c.criterion}") + (
            "" if c.scorer == "student" else f"-by-{c.scorer.replace('cache:', '')}")
        what = f"keep{c.num_keep}{tag}{kind}"
    return f"{task}_student_{what}-s{c.seed}"


# --- a script's runs as data: results/SCRIPT_runs.json, the claims it settles, and the committed reference -------

def row_id(c: TrainConfig) -> str:
    """A run's row: its name without the task prefix and the seed ('keep32-random', 'tome8', 'nokd')."""
    return c.name.split("_student_", 1)[1].rsplit("-s", 1)[0]


def describe(c: TrainConfig) -> tuple[str, str]:
    """(what the teacher sees, the teacher MACs saved against a full teacher, scorer passes counted) of a run."""
    from maskedkd.flops import macs
    from maskedkd.teachers import run_macs
    from maskedkd.select import keep_schedule
    if not c.teacher:
        return "–", "–"
    t = MODELS[c.teacher_model]
    n = t.num_patches
    cost = run_macs(c)
    saved = f"{100 * (1 - (cost['teacher'] + cost['scorer']) / macs(t)):.0f}%"
    if c.teacher_tome_r:
        return f"{n} / {n}, ToMe r={c.teacher_tome_r}", saved
    if c.keep_schedule:
        counts = list(dict.fromkeys(k or n for k in keep_schedule(c.keep_schedule, n, c.epochs)))
        shown = counts if len(counts) <= 3 else [counts[0], "…", counts[-1]]
        return " → ".join(map(str, shown)) + f" / {n}", saved
    if c.adaptive_mass:
        return f"≤ {c.num_keep} / {n}, {100 * c.adaptive_mass:.0f}% of attention", saved
    kept = f"{c.num_keep or n} / {n}"
    return (kept + f", student sees {c.student_keep}" if c.student_keep else kept), saved


def record(script: str, mode: str, seeds: list[int], runs: list[tuple[str, int, TrainConfig, dict]],
           labels: dict[str, str], out: Path, *, paper: dict[str, str] | None = None, **extra) -> dict:
    """Write results/SCRIPT_runs.json (runs_data) and results/claims.md from every runs file in `out`."""
    data = runs_data(script, mode, seeds, runs, labels, paper=paper, **extra)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{script}_runs.json").write_text(json.dumps(data, indent=1) + "\n")
    write_claims_page(out)
    return data


def runs_data(script: str, mode: str, seeds: list[int], runs: list[tuple[str, int, TrainConfig, dict]],
              labels: dict[str, str], *, paper: dict[str, str] | None = None, **extra) -> dict:
    """A runs file's content: the rows (id, label, kept, saved, paper) in order of first appearance, each run (row,
    seed, name, config hash, final accuracy, evaluation history, wall time) and the script's claims of
    reproduce/lib/claims.py evaluated on them. `runs` holds (row id, seed, config, summary); `extra` adds top-level
    fields (e.g. paper_column, teacher_acc)."""
    unique: dict[tuple[str, int], tuple] = {}
    for rid, seed, c, s in runs:  # a run listed twice (full KD is also "keep 64 of 64") is recorded once
        if (rid, seed) in unique and config_hash(unique[rid, seed][2]) != config_hash(c):
            raise ValueError(f"row {rid!r}, seed {seed}: two different runs ({unique[rid, seed][2].name}, {c.name})")
        unique[rid, seed] = (rid, seed, c, s)
    runs = list(unique.values())
    rows, seen = [], set()
    for rid, _, c, _ in runs:
        if rid not in seen:
            seen.add(rid)
            kept, saved = describe(c)
            rows.append({"id": rid, "label": labels.get(rid, rid), "kept": kept, "saved": saved,
                         "paper": (paper or {}).get(rid, "–")})
    data = {"script": script, "mode": mode, "seeds": seeds, "num_patches": next(
        (MODELS[c.teacher_model].num_patches for *_, c, _ in runs if c.teacher), MODELS[runs[0][2].model].num_patches),
        "margin": stats.MARGIN, **extra, "rows": rows,
        "runs": [{"row": rid, "seed": seed, "name": s["name"], "config_hash": config_hash(c), "final_acc": s["final_acc"],
                  "history": s["history"], "wall_s": s.get("wall_s")} for rid, seed, c, s in runs]}
    data["claims"] = claims.evaluate_script(data)
    return data


def runs_files(folder: Path) -> dict[str, dict]:
    """Script -> content of every SCRIPT_runs.json in folder."""
    return {p.name[:-len("_runs.json")]: json.loads(p.read_text()) for p in sorted(folder.glob("*_runs.json"))}


def write_claims_page(folder: Path) -> None:
    """folder/claims.md: every claim of the paper, settled from the runs files in folder where they are there."""
    datas = runs_files(folder)
    (folder / "claims.md").write_text(report.claims_md(datas, header=(
        "# The paper's claims at embedded scale\n\nGenerated by reproduce/lib/embedded.py from the runs files "
        f"in `{folder.name}/`; a claim whose script has not run is listed with the command that evaluates it.")))


def claims_sentence(data: dict) -> str:
    """One line for a script's markdown: how many of its claims hold, fail, or stay inconclusive."""
    n = {v: sum(r["verdict"] == v for r in data["claims"]) for v in ("holds", "does not hold", "inconclusive")}
    return ("Claims settled by these runs (paired by seed, 95% interval; results/claims.md): "
            + (", ".join(f"{k} {v}" for v, k in n.items() if k) or "none") + ".")


def update_reference(script: str, out: Path, files: tuple[str, ...], reference: Path = REFERENCE,
                     readme: Path = README, rows: set[str] | None = None) -> None:
    """Copy a default run's small outputs (`files`, SCRIPT_runs.json among them) into reproduce/reference/, then
    regenerate reference/claims.md, the script's block of reproduce/README.md and the claims summary at its top
    from the committed runs files (tests/test_claims.py checks them against the default plans)."""
    data = json.loads((out / f"{script}_runs.json").read_text())
    if data["mode"] != "default" or (rows is not None and {r["id"] for r in data["rows"]} != rows):
        raise SystemExit(f"--update-reference takes the default run's outputs (mode {data['mode']!r}, rows "
                         f"{[r['id'] for r in data['rows']]}): run `bash reproduce/{script}.sh` without --quick or "
                         "--smoke first")
    reference.mkdir(parents=True, exist_ok=True)
    for name in files:
        shutil.copyfile(out / name, reference / name)
    regenerate(reference, readme)
    print(f"reference updated: {reference} ({', '.join(files)}, claims.md), the {script} block and the claims "
          f"summary of {readme}", file=sys.stderr)


def _json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


# The README blocks rendered from other reference files than runs files: block -> (its files, the first required,
# the rest passed as paths whether they exist or not; renderer)
BLOCKS = {"regime": (("regime.json",), lambda p: regime.block(_json(p))),
          "audio_regime": (("audio_regime.json", "regime.json"), lambda p, image: regime.block(_json(p), _json(image))),
          "audio_regime_trials": (("audio_regime_trials.jsonl",), regime.trials_table),
          "regime_trials": (("regime_trials.jsonl",), regime.trials_table),
          "branches": (("branches.json",), lambda p: report.branches_block(_json(p)))}

# the scripts whose default runs have a block in reproduce/README.md
SCRIPTS_WITH_BLOCKS = ("table1", "feature_kd", "figure2", "criteria", "ablation_student", "ablation_tome", "beyond",
                       "audio")


def regenerate(reference: Path = REFERENCE, readme: Path = README) -> None:
    """reference/claims.md, every script's block of reproduce/README.md and the claims summary at its top, from the
    committed runs files (a script without a block in the README gets none: add its markers to show it)."""
    write_claims_page(reference)
    datas = runs_files(reference)
    text = readme.read_text()
    for script, data in datas.items():
        if report.begin(script) in text:
            text = report.replace_block(text, report.readme_block(data), script)
    for script in SCRIPTS_WITH_BLOCKS:  # a script without a recorded default run shows no numbers
        if script not in datas and report.begin(script) in text:
            text = report.replace_block(text, "", script)
    for name, (files, render) in BLOCKS.items():
        if (reference / files[0]).is_file() and report.begin(name) in text:
            text = report.replace_block(text, render(*(reference / f for f in files)), name)
    readme.write_text(report.replace_block(text, report.summary_block(datas), "*"))
