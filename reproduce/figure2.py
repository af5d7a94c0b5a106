"""Paper figure 2 (right) [docs/paper.md#figure-2]: student accuracy and the masked teacher's accuracy vs the number of
patches the teacher sees, swept over 10 keep counts on the embedded set, with the paper's ImageNet curve
(DeiT-S -> DeiT-Ti, read from its plot) on its own axes. Shares finished runs with table 1.

    bash reproduce/figure2.sh [--quick]   # results/figure2.png, figure2.md, figure2.csv
"""
from __future__ import annotations

from reproduce.lib import driver, paper
from reproduce.lib.driver import accs, by_row, last_teacher
from reproduce.lib.embedded import student_run
from reproduce.lib.runner import fmt_pm, mean_std

KEEPS = [64, 56, 48, 40, 32, 26, 20, 16, 12, 8]  # of 64 patches; 64 = logit KD, the table's rows included


def rows(mode, seeds, args=None):
    task = args.regime if args else "digits"  # --regime: an embedded image regime
    keeps = KEEPS[::3] if mode == "smoke" else KEEPS
    return ([(f"{k} of 64" if k < 64 else "64 of 64 (logit KD)", [student_run(mode, s, k, task=task) for s in seeds])
             for k in keeps]
            + [("No distillation", [student_run(mode, s, None, teacher=False, task=task) for s in seeds])])


def curves(data):
    """keep count -> (student accuracies, masked-teacher accuracies) per seed, and the no-KD accuracies."""
    runs = by_row(data)
    return ({64 if rid == "kd" else int(rid[len("keep"):]): (accs(rs), last_teacher(rs)) for rid, rs in runs.items()
             if rid != "nokd"}, accs(runs["nokd"]))


def table(data):
    sweep, _ = curves(data)
    lines = ["| patches kept (of 64) | student acc (%) | masked-teacher acc (%) |", "|---|---|---|"]
    lines += [f"| {k} | {fmt_pm(s)} | {fmt_pm(t)} |" for k, (s, t) in sweep.items()]
    paper_lines = ["", "Paper (ImageNet, DeiT-S -> DeiT-Ti, read from the plot, docs/paper.md#figure-2):", "",
                   "| patches kept (of 196) | " + " | ".join(map(str, paper.FIG2_PATCHES)) + " |",
                   "|---" * (len(paper.FIG2_PATCHES) + 1) + "|",
                   "| student | " + " | ".join(map(str, paper.FIG2_STUDENT)) + " |",
                   "| teacher | " + " | ".join(map(str, paper.FIG2_TEACHER)) + " |"]
    csv_rows = [["num_keep", "student_acc_mean", "student_acc_std", "teacher_acc_mean", "teacher_acc_std"]]
    csv_rows += [[k, *mean_std(s), *mean_std(t)] for k, (s, t) in sweep.items()]
    return lines, csv_rows, paper_lines


def figure(data, path):
    plt = driver.plot()
    sweep, base = curves(data)
    keeps, seeds = list(sweep), data["seeds"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    stud = {k: s for k, (s, _) in sweep.items()}
    teach = {k: t for k, (_, t) in sweep.items()}
    for ax, xs, ys, yt, title in (
            (a, keeps, [100 * mean_std(stud[k])[0] for k in keeps], [100 * mean_std(teach[k])[0] for k in keeps],
             f"embedded digits, 64 patches ({len(seeds)} seed{'s' * (len(seeds) > 1)})"),
            (b, paper.FIG2_PATCHES, paper.FIG2_STUDENT, paper.FIG2_TEACHER,
             "paper: ImageNet, DeiT-S -> DeiT-Ti (read from plot)")):
        ax.plot(xs, ys, "o-", color="#4c72b0", label="student")
        ax.set_xlabel("# patches seen by the teacher")
        ax.set_ylabel("student accuracy (%)", color="#4c72b0")
        ax.invert_xaxis()
        tw = ax.twinx()
        tw.plot(xs, yt, "s--", color="#dd8452", label="teacher on masked input")
        tw.set_ylabel("masked-teacher accuracy (%)", color="#dd8452")
        ax.set_title(title, fontsize=9)
        if ax is a and len(seeds) > 1:  # seed spread (± 1 std) of the embedded runs
            for axis, d, c in ((ax, stud, "#4c72b0"), (tw, teach, "#dd8452")):
                m = [100 * mean_std(d[k])[0] for k in keeps]
                sd = [100 * mean_std(d[k])[1] for k in keeps]
                axis.fill_between(keeps, [u - v for u, v in zip(m, sd)], [u + v for u, v in zip(m, sd)], color=c,
                                  alpha=0.12, lw=0)
        if ax is a:
            ax.axhline(100 * mean_std(base)[0], color="gray", ls=":", label="student, no KD")
            h1, l1 = ax.get_legend_handles_labels()
            h2, l2 = tw.get_legend_handles_labels()
            ax.legend(h1 + h2, l1 + l2, loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


SPEC = driver.Spec("figure2", "Figure 2 (right): accuracy vs patches seen by the teacher", __doc__, rows, table,
                   head=lambda data: f"mode: {data['mode']}; no-KD student: {fmt_pm(curves(data)[1])}%",
                   figure=figure, paper_column="paper (not a row)", regimes=True)
main = SPEC.main

if __name__ == "__main__":
    main()
