"""Masking the student instead of the teacher [docs/paper.md#ablations].

    bash reproduce/ablation_student.sh [--quick]   # results/ablation_student.md, .csv, .png
    bash reproduce/ablation_student.sh --full --data /path/to/imagenet --checkpoints DIR [--dry-run]
        # DeiT-S -> DeiT-Ti at 196/140/100/60/30 patches, 300 epochs: results/ablation_student_full.md

Same keep counts for both: MaskedKD (the teacher sees k patches picked by the student, the student the full
image) vs the opposite (the student trains on k random patches, the teacher sees the full image); students are
evaluated on full images. The paper: masking the student degrades accuracy steadily as k falls, masking the
teacher does not (ImageNet values read from its plot beside ours). MaskedKD runs are shared with figure 2.
"""
from __future__ import annotations

from reproduce.lib import driver, full
from reproduce.lib.driver import accs, by_row
from reproduce.lib.embedded import student_run
from reproduce.lib.runner import fmt_pm, mean_std

KEEPS = [64, 48, 32, 20, 12]  # of 64 patches
# read from the paper's plot at 196 / 140 / 100 / 60 / 30 of 196 patches [docs/paper.md#ablations]
PAPER_STUDENT_MASKED = {64: 74.9, 48: 73.4, 32: 69.8, 20: 64.5, 12: 55.0}
PAPER_TEACHER_MASKED = {64: 74.9, 48: 75.1, 32: 75.1, 20: 74.5, 12: 73.0}
FULL_KEEPS = dict(zip(KEEPS, [196, 140, 100, 60, 30]))  # the same points on ImageNet's 196 patches


def full_main(argv):
    """ImageNet: DeiT-S teacher -> DeiT-Ti student [docs/paper.md#ablations], teacher masked (MaskedKD) vs student
    masked."""
    def runs(args):
        out = [full.Run("Logit KD (nothing masked)", "DeiT-Ti", "DeiT-S", paper=str(PAPER_TEACHER_MASKED[64]))]
        for k, n in list(FULL_KEEPS.items())[1:]:
            out += [full.Run(f"teacher sees {n}/196 (MaskedKD)", "DeiT-Ti", "DeiT-S", {"num_keep": n},
                             paper=str(PAPER_TEACHER_MASKED[k])),
                    full.Run(f"student sees {n}/196 (random)", "DeiT-Ti", "DeiT-S", {"student_keep": n},
                             paper=str(PAPER_STUDENT_MASKED[k]))]
        return out
    return full.analysis("ablation_student", "Masking the student instead of the teacher", runs, argv)


def rows(mode, seeds, args=None):
    task = args.regime if args else "digits"  # --regime: an embedded image regime
    keeps = [64, 32] if mode == "smoke" else KEEPS
    teacher_side = [(f"teacher masked, {k} of 64" if k < 64 else "logit KD, 64 of 64",
                     [student_run(mode, s, k, task=task) for s in seeds]) for k in keeps]
    student_side = [(f"student masked, {k} of 64",
                     [student_run(mode, s, None, student_keep=k, task=task) for s in seeds])
                    for k in keeps if k < 64]
    return teacher_side + student_side


def paper(rid, label=""):
    k = int(rid[len("studentkeep"):]) if rid.startswith("studentkeep") else 64 if rid == "kd" else int(rid[4:])
    return str(PAPER_STUDENT_MASKED[k] if rid.startswith("studentkeep") else PAPER_TEACHER_MASKED[k])


def curves(data):
    """keep count -> (students of the masked-teacher runs, students trained on that many random patches); at 64 both
    are logit KD."""
    runs = by_row(data)
    keeps = [64 if rid == "kd" else int(rid[4:]) for rid in runs if not rid.startswith("studentkeep")]
    return {k: (accs(runs["kd" if k == 64 else f"keep{k}"]), accs(runs["kd" if k == 64 else f"studentkeep{k}"]))
            for k in keeps}


def table(data):
    lines = ["| patches kept (of 64) | teacher masked: student acc (%) | student masked: student acc (%) | "
             "paper teacher / student masked (ImageNet) |", "|---|---|---|---|"]
    csv_rows = [["num_keep", "teacher_masked_mean", "teacher_masked_std", "student_masked_mean", "student_masked_std"]]
    for k, (t, s) in curves(data).items():
        lines.append(f"| {k} | {fmt_pm(t)} | {fmt_pm(s)} | {PAPER_TEACHER_MASKED[k]} / {PAPER_STUDENT_MASKED[k]} |")
        csv_rows.append([k, *mean_std(t), *mean_std(s)])
    return lines, csv_rows


def figure(data, path):
    plt = driver.plot()
    c = curves(data)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(list(c), [100 * mean_std(t)[0] for t, _ in c.values()], "o-", label="teacher masked (MaskedKD)")
    a.plot(list(c), [100 * mean_std(s)[0] for _, s in c.values()], "s--", label="student masked")
    a.set_title("embedded digits (64 patches)", fontsize=9)
    b.plot(list(PAPER_TEACHER_MASKED), list(PAPER_TEACHER_MASKED.values()), "o-", label="teacher masked (MaskedKD)")
    b.plot(list(PAPER_STUDENT_MASKED), list(PAPER_STUDENT_MASKED.values()), "s--", label="student masked")
    b.set_title("paper: ImageNet, DeiT-S -> DeiT-Ti (x mapped to 64ths)", fontsize=9)
    for ax in (a, b):
        ax.invert_xaxis(), ax.set_xlabel("patches seen by the masked model (of 64)"), ax.set_ylabel("student acc (%)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


SPEC = driver.Spec("ablation_student", "Masking the student instead of the teacher (docs/paper.md#ablations)",
                   __doc__, rows, table, figure=figure, paper=paper, full=full_main,
                   paper_column="paper (ImageNet, DeiT-S -> DeiT-Ti, x mapped to 64ths)", regimes=True)
main = SPEC.main

if __name__ == "__main__":
    main()
