"""Trials that chose the default embedded regime, logged to reproduce/reference/regime_trials.jsonl; with
`--task sounds`, the trials of the embedded sound regime, logged to audio_regime_trials.jsonl.

The regime (the digit scene, the teacher's recipe, the student's budget) is chosen on the teacher, no-KD and
logit-KD figures alone, against targets fixed before any trial from the paper's regime [docs/paper.md#table-1]:

- the teacher shown a random half of its patches keeps >= 0.90 of its full accuracy (paper: DeiT-B 76.9 / 81.8);
- no-KD student / teacher between 0.80 and 0.95 (paper: DeiT-Ti 72.0 / DeiT-S 79.8);
- logit KD beats no KD: paired 95% interval above zero over 5 seeds, paired SD <= 1.0 point, no stalled run;
- table1.sh's default (5 seeds, every row) <= 15 minutes on 2 cores;
- added before the second round of trials (regime.PRECONDITION): the student's attention is informative, i.e. the
  teacher shown the top half of a no-KD student's last-block CLS attention is at least as accurate as on a random half,
  paired mean over 5 seeds >= 0 (student trials log it for every student, with the figures it is reported beside).

No MaskedKD run is made here. Every trial appends one line (its overrides and measured figures) to the log, so the
choice can be audited against the log alone.

    python -m reproduce.regime_trials teacher NAME [key=value ...]          # a teacher candidate + its curve
    python -m reproduce.regime_trials students NAME TEACHER_TRIAL [--seeds 0,1,2,3,4] [key=value ...]
    python -m reproduce.regime_trials probe TEACHER_TRIAL      # the curve of a running teacher trial's checkpoint
    python -m reproduce.regime_trials shipped NAME CONFIG      # a shipped teacher (CONFIG's asset) as a teacher trial
    python -m reproduce.regime_trials note NAME "text"          # a decision (a trial stopped early, and why)
    python -m reproduce.regime_trials --task sounds teacher NAME [key=value ...]   # the same for the AST set

The sound regime's targets are the same kind: the AST teacher keeps >= 0.90 on a random half of its
patches, no-KD / teacher between 0.80 and 0.95, logit KD above no KD with paired SD <= 1.5 points and no stalled
student, `bash reproduce/audio.sh` <= 20 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from maskedkd.experiments import apply_overrides, config_from_json, get_config, write_config
from reproduce.lib import flags, stats
from reproduce.lib.embedded import attention_figures, teacher_curve

ROOT = Path(__file__).resolve().parents[1]
LOGS = {"digits": ROOT / "reproduce" / "reference" / "regime_trials.jsonl",
        "sounds": ROOT / "reproduce" / "reference" / "audio_regime_trials.jsonl"}
LOG = LOGS["digits"]
WORK = ROOT / "results" / "regime_trials"
# teacher-trial fields a student trial copies: the data a student sees is the data its teacher was chosen on
SCENE_KEYS = {"digits": ("digit_size", "copies", "distractors", "jitter", "num_clutter", "noise", "texture"),
              "sounds": ("train_size", "test_size", "label_noise", "events")}


def log(entry: dict, path: Path | None = None) -> None:
    path = path or LOG
    entry = {"time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **entry}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")
    print(json.dumps(entry, indent=1))


def train(cfg, threads: int = 1) -> tuple[dict, float]:
    """Train one config in a subprocess (one torch thread); its summary and wall seconds."""
    out = WORK / "runs" / cfg.name
    path = WORK / "configs" / f"{cfg.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_config(cfg.replace(out_dir=str(out), threads=threads, overwrite=True), path)
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "maskedkd.train", str(path)], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    return json.loads((out / "summary.json").read_text()), time.time() - t0


def half_over_full(curve: dict[str, float]) -> float | None:
    """The teacher's accuracy on a random half of its patches over its full accuracy; None for a teacher at 0%."""
    return round(curve["50"] / curve["100"], 4) if curve["100"] else None


def trial_name(task: str, name: str) -> str:
    return f"trial_teacher_{name}" if task == "digits" else f"trial_{task}_teacher_{name}"


def teacher_trial(name: str, overrides: list[str], task: str = "digits") -> None:
    cfg = apply_overrides(get_config(f"{task}_teacher"), overrides).replace(name=trial_name(task, name))
    summary, wall = train(cfg, threads=1)
    curve = teacher_curve(cfg, WORK / "runs" / cfg.name / "params.safetensors", cfg)
    log({"kind": "teacher", "trial": name, "overrides": overrides, "wall_s": round(wall, 1),
         "teacher_full_acc": curve["100"], "random_curve": {k: round(v, 4) for k, v in curve.items()},
         "random_half_over_full": half_over_full(curve), "history": summary["history"]}, LOGS[task])


def shipped_trial(name: str, config: str, task: str = "digits") -> None:
    """Log a shipped teacher (a registered config's cached weights, maskedkd/assets) as teacher trial NAME, so that
    student trials can be made against the teacher the regime ships."""
    import shutil

    from maskedkd.teachers import cached_teacher
    cfg = get_config(config).replace(name=trial_name(task, name))
    (WORK / "runs" / cfg.name).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached_teacher(get_config(config)), WORK / "runs" / cfg.name / "params.safetensors")
    write_config(cfg, WORK / "configs" / f"{cfg.name}.json")
    curve = teacher_curve(cfg, WORK / "runs" / cfg.name / "params.safetensors", cfg)
    log({"kind": "teacher", "trial": name, "overrides": [f"shipped={config}"], "wall_s": 0.0,
         "teacher_full_acc": curve["100"], "random_curve": {k: round(v, 4) for k, v in curve.items()},
         "random_half_over_full": half_over_full(curve), "history": []}, LOGS[task])


def probe(name: str, task: str = "digits") -> None:
    """Log the random-patch curve of a teacher trial's last checkpoint (a trial still training)."""
    import torch

    cfg = config_from_json(WORK / "configs" / f"{trial_name(task, name)}.json")
    ck = torch.load(WORK / "runs" / cfg.name / "checkpoint.pt", weights_only=True)
    curve = teacher_curve(cfg, ck["params"], cfg)
    log({"kind": "probe", "trial": name, "checkpoint_epoch": ck["epoch"], "step_in_epoch": ck["step_in_epoch"],
         "global_step": ck["global_step"], "teacher_full_acc": curve["100"],
         "random_curve": {k: round(v, 4) for k, v in curve.items()},
         "random_half_over_full": half_over_full(curve)}, LOGS[task])


def students_trial(name: str, teacher_trial_name: str, seeds: list[int], overrides: list[str], jobs: int,
                   task: str = "digits") -> None:
    from concurrent.futures import ThreadPoolExecutor
    tname = trial_name(task, teacher_trial_name)
    tcfg = json.loads((WORK / "configs" / f"{tname}.json").read_text())
    t_path = WORK / "runs" / tname / "params.safetensors"
    scene = {k: tcfg[k] for k in SCENE_KEYS[task] if k in tcfg}
    base = apply_overrides(get_config(f"{task}_student_nokd").replace(**scene), overrides)
    prefix = "trial" if task == "digits" else f"trial_{task}"
    cfgs = []
    for s in seeds:
        cfgs.append(base.replace(seed=s, name=f"{prefix}_{name}_nokd-s{s}"))
        cfgs.append(base.replace(seed=s, name=f"{prefix}_{name}_kd-s{s}", teacher=str(t_path),
                                 teacher_model=tcfg["model"]))
    with ThreadPoolExecutor(jobs) as ex:
        results = list(ex.map(train, cfgs))
    acc = {c.name: s["final_acc"] for c, (s, _) in zip(cfgs, results)}
    nokd = [acc[f"{prefix}_{name}_nokd-s{s}"] for s in seeds]
    kd = [acc[f"{prefix}_{name}_kd-s{s}"] for s in seeds]
    diff = [100 * (a - b) for a, b in zip(kd, nokd)]
    teacher_acc = json.loads(next(l for l in reversed(LOGS[task].read_text().splitlines())
                                  if f'"trial": "{teacher_trial_name}"' in l))["teacher_full_acc"]
    entry = {"kind": "students", "trial": name, "teacher_trial": teacher_trial_name, "overrides": overrides,
             "seeds": seeds, "nokd": nokd, "kd": kd, "kd_minus_nokd": [round(d, 2) for d in diff],
             "kd_minus_nokd_mean": round(statistics.mean(diff), 2),
             "kd_minus_nokd_sd": round(statistics.stdev(diff), 2) if len(diff) > 1 else None,
             "nokd_over_teacher": round(statistics.mean(nokd) / teacher_acc, 4) if teacher_acc else None,
             "wall_s": {c.name: round(w, 1) for c, (_, w) in zip(cfgs, results)},
             "histories": {c.name: s["history"] for c, (s, _) in zip(cfgs, results)}}
    if len(diff) > 1:
        _, _, low, high = stats.t_interval(diff)
        entry["kd_minus_nokd_ci95"] = [round(low, 2), round(high, 2)]
    if task == "digits":  # the method's precondition (regime.PRECONDITION): one teacher evaluation per student
        t_cfg = config_from_json(WORK / "configs" / f"{tname}.json")
        att = {c.name: attention_figures(c, WORK / "runs" / c.name / "params.safetensors", t_cfg, t_path)
               for c in cfgs}
        entry["attention"] = {name: {k: round(v, 4) for k, v in f.items()} for name, f in att.items()}
        for row in ("nokd", "kd"):
            d = [att[f"{prefix}_{name}_{row}-s{s}"]["top_minus_random"] for s in seeds]
            entry[f"{row}_top_minus_random"] = [round(v, 2) for v in d]
            if len(d) > 1:
                mean, _, low, high = stats.t_interval(d)
                entry[f"{row}_top_minus_random_ci95"] = [round(mean, 2), round(low, 2), round(high, 2)]
    log(entry, LOGS[task])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", choices=sorted(LOGS), default="digits",
                    help="digits: the image regime; sounds: the AST sound regime")
    sub = ap.add_subparsers(dest="what", required=True)
    t = sub.add_parser("teacher")
    t.add_argument("name")
    t.add_argument("overrides", nargs="*")
    s = sub.add_parser("students")
    s.add_argument("name")
    s.add_argument("teacher_trial")
    s.add_argument("overrides", nargs="*")
    s.add_argument("--seeds", type=flags.int_list(), default=[0, 1, 2, 3, 4])
    s.add_argument("--jobs", type=flags.integer("[1, inf)"), default=2)
    sh = sub.add_parser("shipped")
    sh.add_argument("name")
    sh.add_argument("config")
    p = sub.add_parser("probe")
    p.add_argument("name")
    n = sub.add_parser("note")
    n.add_argument("name")
    n.add_argument("text")
    a = ap.parse_args(argv)
    if a.what == "shipped":
        shipped_trial(a.name, a.config, a.task)
    elif a.what == "probe":
        probe(a.name, a.task)
    elif a.what == "note":
        log({"kind": "note", "trial": a.name, "text": a.text}, LOGS[a.task])
    elif a.what == "teacher":
        teacher_trial(a.name, a.overrides, a.task)
    else:
        students_trial(a.name, a.teacher_trial, a.seeds, a.overrides, a.jobs, a.task)


if __name__ == "__main__":
    main()
