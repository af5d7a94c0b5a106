"""Audio: MaskedKD on the Audio Spectrogram Transformer [docs/paper.md#audio].

    bash reproduce/audio.sh [--quick]     # embedded synthetic sound events: results/audio.md, .csv, .png
    bash reproduce/audio.sh --full --data /path/to/ESC-50 --teacher /path/to/ast_esc50_teacher.safetensors

Embedded default: the sound regime chosen on teacher, no-KD and logit-KD figures alone
(reproduce/reference/audio_regime_trials.jsonl): clips of three events of the class, an AST teacher (128 wide,
4 blocks) shipped in maskedkd/assets, a smaller AST student (64 wide, 3 blocks) on 2000 of those clips with a fifth
of the labels wrong, 1.0 s clips (100 frames x 128 mel bins, 108 overlapping patches): no KD, logit KD and MaskedKD
at several keep fractions (the paper suggests the best fraction differs from vision, so it is swept), 5 seeds.
Writes results/audio_regime.json, the regime's figures against their targets (reproduce/lib/regime.py).
--full: ESC-50's 5 folds (train on 4, test on 1, averaged: the AST recipe) with a teacher checkpoint (a Hugging
Face AST file, 512 frames, 50 classes) and the tiny AST student. The paper's audio numbers are not transcribed
(docs/paper.md#audio): their cells say so.
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from reproduce.lib import embedded
from reproduce.lib import regime
from reproduce.lib.embedded import mode_of, parser, plan, row_id, student_run

from maskedkd.experiments import MODELS, TrainConfig
from reproduce.lib.runner import fmt_pm, machine_header, finished_runs, mean_std, run_all
from maskedkd.select import keep_count

FRACTIONS = [0.75, 0.5, 0.4, 0.25, 0.1]


def esc50_run(data_path: str, fold: int, out: Path, teacher: str = "", keep_ratio: float = 1.0) -> TrainConfig:
    """One --full run: the tiny AST student on ESC-50 with test fold `fold`, AST's ESC-50 recipe (lr 1e-5 at batch
    48, 25 epochs, SpecAugment freqm 24 / timem 96 [docs/paper.md#audio]); no KD when teacher is empty, else KD
    from the AST teacher checkpoint at `teacher` shown keep_ratio of its patches. Written out in full, not derived
    from the embedded student, so that the embedded regime's choices (label noise, events) never reach ESC-50."""
    from maskedkd.data.audio import ESC50_SPECAUG
    what = "nokd" if not teacher else ("kd" if keep_ratio == 1.0 else f"maskedkd{round(100 * keep_ratio)}")
    name = f"esc50_student_{what}-fold{fold}"
    return TrainConfig(name=name, data="esc50", data_path=data_path, fold=fold, model="esc50_student",
                       drop_path=0.0, epochs=25, batch_size=48, lr=1e-5 * 512 / 48, warmup_epochs=1, threads=1,
                       compile=False, teacher=teacher, teacher_model="esc50_teacher" if teacher else "",
                       keep_ratio=keep_ratio, out_dir=str(out / "esc50" / name), resume=True, **ESC50_SPECAUG)


def full(args) -> None:
    """ESC-50 5-fold runs with a user-provided AST teacher (one process per run): each row's mean over the folds."""
    from maskedkd.train import run
    rows = [("No distillation", "", 1.0), ("Logit KD", args.teacher, 1.0)] + [
        (f"+MaskedKD {int(100 * f)}%", args.teacher, f) for f in FRACTIONS]
    for label, teacher, f in rows:
        accs = [run(esc50_run(args.data, k, Path(args.out), teacher, f))["final_acc"] for k in range(1, 6)]
        print(label, fmt_pm(accs))


def main(argv=None):
    ap = parser(__doc__)
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--data", default="")
    ap.add_argument("--teacher", default="")
    args = ap.parse_args(argv)
    if args.full:
        if not (args.data and args.teacher):
            ap.error("--full needs --data /path/to/ESC-50 and --teacher /path/to/checkpoint")
        return full(args)
    mode = mode_of(args)
    seeds, _ = plan(mode, "sounds")
    n = MODELS["sounds_student"].num_patches
    keeps = [keep_count(n, f) for f in (FRACTIONS[1:2] if mode == "smoke" else FRACTIONS)]
    t0 = time.time()
    rows = ([("No distillation", [student_run(mode, s, None, teacher=False, task="sounds") for s in seeds]),
             ("Logit KD (full teacher)", [student_run(mode, s, None, task="sounds") for s in seeds])]
            + [(f"+MaskedKD {k}/{n} ({100 * k / n:.0f}%)", [student_run(mode, s, k, task="sounds") for s in seeds])
               for k in keeps])
    flat = [c for _, cs in rows for c in cs]
    done_before = finished_runs(flat, Path(args.out) / "runs", args.fresh)
    sums = run_all(flat, root=Path(args.out) / "runs", jobs=args.jobs, fresh=args.fresh, desc="audio")
    from maskedkd.teachers import cached_teacher
    tcfg = embedded.teacher_config(mode, "sounds")
    teacher_path = cached_teacher(tcfg)  # the shipped artefact when its hash matches; else trained by the runs
    by = {label: sums[i * len(seeds):(i + 1) * len(seeds)] for i, (label, _) in enumerate(rows)}
    data = embedded.record("audio", mode, seeds, [(row_id(c), c.seed, c, s) for c, s in zip(flat, sums)],
                           {row_id(cs[0]): label for label, cs in rows}, Path(args.out),
                           paper_column="paper (ESC-50: not transcribed)", regime="sounds",
                           teacher=embedded.shown_path(teacher_path), trained_now=len(flat) - done_before,
                           teacher_random_curve=embedded.teacher_curve(tcfg, teacher_path, flat[0]))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wall_s = time.time() - t0
    fig = regime.figures(data, wall_s)
    (out / "audio_regime.json").write_text(json.dumps(fig, indent=1) + "\n")
    minutes = fig["audio_minutes"]
    lines = [machine_header("Audio: MaskedKD on AST (embedded synthetic sound events)", seeds=seeds,
                            wall_s=wall_s, extra=f"mode: {mode}; 108 patches of 16x16, stride 10; teacher weights: "
                            f"{data['teacher']}; student runs: {len(flat)}, {data['trained_now']} trained in this "
                            "invocation" + (f", so {minutes:.1f} minutes from an empty results/" if minutes is not None
                                            else ", the others reused from results/runs")),
             "| method | student acc (%) | masked-teacher acc (%) | paper (ESC-50) |", "|---|---|---|---|"]
    table = []
    for label, ss in by.items():
        acc = [s["final_acc"] for s in ss]
        t = [s["history"][-1].get("teacher_acc_masked") for s in ss]
        lines.append(f"| {label} | {fmt_pm(acc)} | {'–' if t[0] is None else fmt_pm(t)} | not transcribed |")
        table.append([label, *mean_std(acc), None if t[0] is None else mean_std(t)[0]])
    curve = ", ".join(f"{k}%: {100 * v:.1f}" for k, v in data["teacher_random_curve"].items())
    lines += ["", f"The teacher's test accuracy with a random share of its 108 patches kept: {curve}.", "",
              embedded.claims_sentence(data)]
    (out / "audio.md").write_text("\n".join(lines) + "\n")
    with open(out / "audio.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "acc_mean", "acc_std", "masked_teacher_acc"])
        w.writerows(table)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    ks = [n] + keeps
    accs = [100 * mean_std([s["final_acc"] for s in ss])[0] for label, ss in list(by.items())[1:]]
    plt.figure(figsize=(5, 3.5))
    plt.plot(ks, accs, "o-", label="student (KD at each keep count)")
    plt.axhline(100 * mean_std([s["final_acc"] for s in by["No distillation"]])[0], ls=":", color="gray", label="no KD")
    plt.gca().invert_xaxis(), plt.xlabel("patches the teacher hears (of 108)"), plt.ylabel("student acc (%)")
    plt.legend(), plt.tight_layout(), plt.savefig(out / "audio.png", dpi=120)
    print("\n".join(lines))
    embedded.finish(args, "audio", ("audio.md", "audio.csv", "audio_regime.json"))


if __name__ == "__main__":
    main()
