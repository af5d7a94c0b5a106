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

import csv
import time
from pathlib import Path

from reproduce.lib import full
from reproduce.lib import embedded
from reproduce.lib.embedded import mode_of, parse_or_full, parser, plan, row_id, student_run

from reproduce.lib.runner import fmt_pm, machine_header, mean_std, run_all

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


def main(argv=None):
    args = parse_or_full(parser(__doc__), argv, full_main)
    if args is None:
        return
    mode = mode_of(args)
    keeps = [64, 32] if mode == "smoke" else KEEPS
    seeds, _ = plan(mode)
    t0 = time.time()
    teacher_side = [student_run(mode, s, k) for k in keeps for s in seeds]
    student_side = [student_run(mode, s, None, student_keep=k) if k < 64 else student_run(mode, s, None)
                    for k in keeps for s in seeds]
    sums = run_all(teacher_side + student_side, root=Path(args.out) / "runs", jobs=args.jobs, fresh=args.fresh,
                   desc="student-masking ablation")
    cfgs = teacher_side + student_side
    labels = {row_id(c): (f"student masked, {c.student_keep} of 64" if c.student_keep else
                          f"teacher masked, {c.num_keep} of 64" if c.num_keep else "logit KD, 64 of 64") for c in cfgs}
    paper = {row_id(c): str(PAPER_STUDENT_MASKED[c.student_keep] if c.student_keep else
                            PAPER_TEACHER_MASKED[c.num_keep or 64]) for c in cfgs}
    data = embedded.record("ablation_student", mode, seeds, [(row_id(c), c.seed, c, s) for c, s in zip(cfgs, sums)],
                           labels, Path(args.out), paper=paper,
                           paper_column="paper (ImageNet, DeiT-S -> DeiT-Ti, x mapped to 64ths)")
    n = len(seeds)
    acc = lambda block, i: [s["final_acc"] for s in block[i * n:(i + 1) * n]]  # noqa: E731
    t_runs, s_runs = sums[:len(teacher_side)], sums[len(teacher_side):]
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(keeps, [100 * mean_std(acc(t_runs, i))[0] for i in range(len(keeps))], "o-", label="teacher masked (MaskedKD)")
    a.plot(keeps, [100 * mean_std(acc(s_runs, i))[0] for i in range(len(keeps))], "s--", label="student masked")
    a.set_title("embedded digits (64 patches)", fontsize=9)
    b.plot(list(PAPER_TEACHER_MASKED), list(PAPER_TEACHER_MASKED.values()), "o-", label="teacher masked (MaskedKD)")
    b.plot(list(PAPER_STUDENT_MASKED), list(PAPER_STUDENT_MASKED.values()), "s--", label="student masked")
    b.set_title("paper: ImageNet, DeiT-S -> DeiT-Ti (x mapped to 64ths)", fontsize=9)
    for ax in (a, b):
        ax.invert_xaxis(), ax.set_xlabel("patches seen by the masked model (of 64)"), ax.set_ylabel("student acc (%)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "ablation_student.png", dpi=120)
    lines = [machine_header("Masking the student instead of the teacher (docs/paper.md#ablations)", seeds=seeds,
                            wall_s=time.time() - t0, extra=f"mode: {mode}"),
             "| patches kept (of 64) | teacher masked: student acc (%) | student masked: student acc (%) | "
             "paper teacher / student masked (ImageNet) |", "|---|---|---|---|"]
    rows = []
    for i, k in enumerate(keeps):
        lines.append(f"| {k} | {fmt_pm(acc(t_runs, i))} | {fmt_pm(acc(s_runs, i))} | "
                     f"{PAPER_TEACHER_MASKED[k]} / {PAPER_STUDENT_MASKED[k]} |")
        rows.append([k, *mean_std(acc(t_runs, i)), *mean_std(acc(s_runs, i))])
    lines += ["", embedded.claims_sentence(data)]
    (out / "ablation_student.md").write_text("\n".join(lines) + "\n")
    with open(out / "ablation_student.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["num_keep", "teacher_masked_mean", "teacher_masked_std", "student_masked_mean",
                    "student_masked_std"])
        w.writerows(rows)
    print("\n".join(lines))
    embedded.finish(args, "ablation_student", ("ablation_student.md", "ablation_student.csv"))


if __name__ == "__main__":
    main()
