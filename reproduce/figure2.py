"""Paper figure 2 (right) [docs/paper.md#figure-2]: student accuracy and the masked teacher's accuracy vs the number of
patches the teacher sees, swept over 10 keep counts on the embedded set, with the paper's ImageNet curve
(DeiT-S -> DeiT-Ti, read from its plot) on its own axes. Shares finished runs with table 1.

    bash reproduce/figure2.sh [--quick]   # results/figure2.png, figure2.md, figure2.csv
"""
from __future__ import annotations

import csv
import time
from pathlib import Path

from reproduce.lib import embedded
from reproduce.lib.embedded import mode_of, parser, plan, row_id, student_run

from reproduce.lib import paper
from reproduce.lib.runner import fmt_pm, machine_header, mean_std, run_all

KEEPS = [64, 56, 48, 40, 32, 26, 20, 16, 12, 8]  # of 64 patches; 64 = logit KD, the table's rows included


def main(argv=None):
    ap = parser(__doc__)
    args = ap.parse_args(argv)
    mode = mode_of(args)
    keeps = KEEPS[::3] if mode == "smoke" else KEEPS
    seeds, _ = plan(mode)
    t0 = time.time()
    cfgs = [student_run(mode, s, k) for k in keeps for s in seeds]
    nokd = [student_run(mode, s, None, teacher=False) for s in seeds]
    sums = run_all(cfgs + nokd, root=Path(args.out) / "runs", jobs=args.jobs, fresh=args.fresh, desc="figure 2 sweep")
    labels = {row_id(c): (f"{c.num_keep} of 64" if c.num_keep else "64 of 64 (logit KD)") for c in cfgs}
    data = embedded.record("figure2", mode, seeds, [(row_id(c), c.seed, c, s) for c, s in zip(cfgs + nokd, sums)],
                           {**labels, "nokd": "No distillation"}, Path(args.out), paper_column="paper (not a row)")
    by_k = {k: sums[i * len(seeds):(i + 1) * len(seeds)] for i, k in enumerate(keeps)}
    base = [s["final_acc"] for s in sums[len(cfgs):]]
    stud = {k: [s["final_acc"] for s in v] for k, v in by_k.items()}
    teach = {k: [s["history"][-1]["teacher_acc_masked"] for s in v] for k, v in by_k.items()}

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
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
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "figure2.png", dpi=120)
    lines = [machine_header("Figure 2 (right): accuracy vs patches seen by the teacher", seeds=seeds,
                            wall_s=time.time() - t0, extra=f"mode: {mode}; no-KD student: {fmt_pm(base)}%"),
             "| patches kept (of 64) | student acc (%) | masked-teacher acc (%) |", "|---|---|---|"]
    lines += [f"| {k} | {fmt_pm(stud[k])} | {fmt_pm(teach[k])} |" for k in keeps]
    lines += ["", embedded.claims_sentence(data)]
    lines += ["", "Paper (ImageNet, DeiT-S -> DeiT-Ti, read from the plot, docs/paper.md#figure-2):", "",
              "| patches kept (of 196) | " + " | ".join(map(str, paper.FIG2_PATCHES)) + " |",
              "|---" * (len(paper.FIG2_PATCHES) + 1) + "|",
              "| student | " + " | ".join(map(str, paper.FIG2_STUDENT)) + " |",
              "| teacher | " + " | ".join(map(str, paper.FIG2_TEACHER)) + " |"]
    (out / "figure2.md").write_text("\n".join(lines) + "\n")
    with open(out / "figure2.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["num_keep", "student_acc_mean", "student_acc_std", "teacher_acc_mean", "teacher_acc_std"])
        for k in keeps:
            w.writerow([k, *mean_std(stud[k]), *mean_std(teach[k])])
    print("\n".join(lines))
    embedded.finish(args, "figure2", ("figure2.md", "figure2.csv"))


if __name__ == "__main__":
    main()
