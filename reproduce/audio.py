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

import json
from pathlib import Path

from maskedkd.experiments import MODELS, TrainConfig
from maskedkd.select import keep_count
from reproduce.lib import driver, embedded, regime
from reproduce.lib.driver import accs, by_row, last_teacher
from reproduce.lib.embedded import student_run
from reproduce.lib.runner import fmt_pm, mean_std

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


def full(argv) -> None:
    """--full: ESC-50 5-fold runs with a user-provided AST teacher (one process per run), each row's mean over the
    folds."""
    import argparse
    from maskedkd.train import run
    ap = argparse.ArgumentParser(description="audio.sh --full: ESC-50 with an AST teacher")
    ap.add_argument("--data", required=True, help="the ESC-50 folder (audio/, meta/esc50.csv)")
    ap.add_argument("--teacher", required=True, help="an AST teacher checkpoint (50 classes, 512 frames)")
    ap.add_argument("--out", default="results")
    args = ap.parse_args(argv)
    rows = [("No distillation", "", 1.0), ("Logit KD", args.teacher, 1.0)] + [
        (f"+MaskedKD {int(100 * f)}%", args.teacher, f) for f in FRACTIONS]
    for label, teacher, f in rows:
        fold_accs = [run(esc50_run(args.data, k, Path(args.out), teacher, f))["final_acc"] for k in range(1, 6)]
        print(label, fmt_pm(fold_accs))


def rows(mode, seeds, args=None):
    n = MODELS["sounds_student"].num_patches
    keeps = [keep_count(n, f) for f in (FRACTIONS[1:2] if mode == "smoke" else FRACTIONS)]
    return ([("No distillation", [student_run(mode, s, None, teacher=False, task="sounds") for s in seeds]),
             ("Logit KD (full teacher)", [student_run(mode, s, None, task="sounds") for s in seeds])]
            + [(f"+MaskedKD {k}/{n} ({100 * k / n:.0f}%)", [student_run(mode, s, k, task="sounds") for s in seeds])
               for k in keeps])


def teacher(mode, seeds, cfgs, sums, out) -> dict:
    """Runs-file fields: the regime, the teacher's weights and its random-patch curve."""
    from maskedkd.teachers import cached_teacher
    tcfg = embedded.teacher_config(mode, "sounds")
    path = cached_teacher(tcfg)  # the shipped artefact when its hash matches; else trained by the runs
    return {"regime": "sounds", "teacher": embedded.shown_path(path),
            "teacher_random_curve": embedded.teacher_curve(tcfg, path, cfgs[0])}


def figures(data) -> dict:
    return regime.figures(data, data["header"]["wall_s"])


def head(data) -> str:
    minutes = figures(data)["audio_minutes"]
    return (f"mode: {data['mode']}; 108 patches of 16x16, stride 10; teacher weights: {data['teacher']}; student "
            f"runs: {len(data['runs'])}, {data['trained_now']} trained in this invocation"
            + (f", so {minutes:.1f} minutes from an empty results/" if minutes is not None
               else ", the others reused from results/runs"))


def table(data):
    labels = {r["id"]: r["label"] for r in data["rows"]}
    lines = ["| method | student acc (%) | masked-teacher acc (%) | paper (ESC-50) |", "|---|---|---|---|"]
    csv_rows = [["method", "acc_mean", "acc_std", "masked_teacher_acc"]]
    for rid, ss in by_row(data).items():
        acc, t = accs(ss), last_teacher(ss)
        lines.append(f"| {labels[rid]} | {fmt_pm(acc)} | {'–' if t[0] is None else fmt_pm(t)} | not transcribed |")
        csv_rows.append([labels[rid], *mean_std(acc), None if t[0] is None else mean_std(t)[0]])
    curve = ", ".join(f"{k}%: {100 * v:.1f}" for k, v in data["teacher_random_curve"].items())
    lines += ["", f"The teacher's test accuracy with a random share of its 108 patches kept: {curve}."]
    return lines, csv_rows


def figure(data, path):
    plt = driver.plot()
    runs = by_row(data)
    n = MODELS["sounds_student"].num_patches
    ks = [n] + [int(rid[4:]) for rid in runs if rid.startswith("keep")]
    ys = [100 * mean_std(accs(rs))[0] for rid, rs in runs.items() if rid != "nokd"]
    plt.figure(figsize=(5, 3.5))
    plt.plot(ks, ys, "o-", label="student (KD at each keep count)")
    plt.axhline(100 * mean_std(accs(runs["nokd"]))[0], ls=":", color="gray", label="no KD")
    plt.gca().invert_xaxis(), plt.xlabel("patches the teacher hears (of 108)"), plt.ylabel("student acc (%)")
    plt.legend(), plt.tight_layout(), plt.savefig(path, dpi=120)


SPEC = driver.Spec("audio", "Audio: MaskedKD on AST (embedded synthetic sound events)", __doc__, rows, table,
                   head=head, figure=figure, task="sounds", extra=teacher, full=full,
                   paper_column="paper (ESC-50: not transcribed)",
                   outputs=lambda data: {"audio_regime.json": json.dumps(figures(data), indent=1) + "\n"})
main = SPEC.main

if __name__ == "__main__":
    main()
