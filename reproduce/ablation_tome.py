"""Token merging vs masking in the teacher, at matched teacher FLOPs [docs/paper.md#ablations].

    bash reproduce/ablation_tome.sh [--quick]    # results/ablation_tome.md, .csv, .png
    bash reproduce/ablation_tome.sh --full --data /path/to/imagenet --checkpoints DIR [--dry-run]
        # DeiT-S -> DeiT-Ti at 120/98/80/60/50/30 patches and matched r, 300 epochs: results/ablation_tome_full.md

For each MaskedKD keep count, the ToMe merge count r (per block) whose teacher MACs come closest; students are
trained with either teacher. The paper: ToMe keeps the teacher more accurate at mild reduction, while MaskedKD
gives the better student at aggressive reduction ("supervision quality" is not teacher accuracy).
MaskedKD runs are shared with figure 2.
"""
from __future__ import annotations

import csv
import time
from pathlib import Path

from reproduce.lib import full
from reproduce.lib import embedded
from reproduce.lib.embedded import mode_of, parse_or_full, parser, plan, row_id, student_run

import maskedkd as mkd
from maskedkd.experiments import MODELS
from reproduce.lib.runner import fmt_pm, machine_header, mean_std, run_all
from maskedkd.tome import tome_macs

KEEPS = [48, 32, 26, 16, 8]  # of 64
# paper, read from its plot (DeiT-S -> DeiT-Ti, ImageNet) [docs/paper.md#ablations]: GFLOPs -> student acc
PAPER_MASKEDKD = {2.76: 75.1, 2.25: 75.1, 1.83: 74.9, 1.38: 74.5, 1.16: 74.3, 0.70: 73.0}
PAPER_TOME = {2.75: 75.0, 2.3: 75.0, 1.85: 74.8, 1.43: 73.2, 1.17: 72.9, 0.70: 72.0}


def matched_r(cfg, target: int) -> int:
    return min(range(cfg.num_patches // 2 + 1), key=lambda r: abs(tome_macs(cfg, r) - target))


def full_main(argv):
    """ImageNet: DeiT-S teacher -> DeiT-Ti student; the paper's points are at 120/98/80/60/50/30 of 196 patches
    (their DeiT-S GMACs match its x axis [docs/paper.md#ablations]) and ToMe at the r with the nearest teacher MACs."""
    t_cfg = mkd.vit_config("deit_small_patch16_224")
    paper_m = list(PAPER_MASKEDKD.values())

    def runs(args):
        out = []
        for k, p in zip((120, 98, 80, 60, 50, 30), paper_m):
            r = matched_r(t_cfg, mkd.macs(t_cfg, k))
            g = f"{mkd.macs(t_cfg, k) / 1e9:.2f} / {tome_macs(t_cfg, r) / 1e9:.2f} GMACs"
            out += [full.Run(f"MaskedKD keep {k}/196 ({g.split(' / ')[0]} GMACs)", "DeiT-Ti", "DeiT-S",
                             {"num_keep": k}, paper=str(p)),
                    full.Run(f"ToMe r={r} per block ({g.split(' / ')[1]})", "DeiT-Ti", "DeiT-S",
                             {"teacher_tome_r": r}, paper=nearest_tome(tome_macs(t_cfg, r) / 1e9))]
        return out
    return full.analysis("ablation_tome", "Token merging vs masking in the teacher", runs, argv)


def nearest_tome(gmacs: float) -> str:
    """The paper's ToMe point nearest in teacher GFLOPs (read from its plot), as 'acc @ GFLOPs'."""
    g = min(PAPER_TOME, key=lambda x: abs(x - gmacs))
    return f"{PAPER_TOME[g]} @ {g}"


def main(argv=None):
    args = parse_or_full(parser(__doc__), argv, full_main)
    if args is None:
        return
    mode = mode_of(args)
    seeds, _ = plan(mode)
    keeps = KEEPS[1:2] if mode == "smoke" else KEEPS
    t_cfg = MODELS["digits_teacher"]
    rs = [matched_r(t_cfg, mkd.macs(t_cfg, k)) for k in keeps]
    t0 = time.time()
    masked = [student_run(mode, s, k) for k in keeps for s in seeds]
    merged = [student_run(mode, s, None, teacher_tome_r=r) for r in rs for s in seeds]
    sums = run_all(masked + merged, root=Path(args.out) / "runs", jobs=args.jobs, fresh=args.fresh,
                   desc="ToMe vs masking")
    cfgs = masked + merged
    labels = {row_id(c): (f"ToMe teacher, r={c.teacher_tome_r} per block" if c.teacher_tome_r else
                          f"MaskedKD teacher, {c.num_keep} of 64") for c in cfgs}
    data = embedded.record("ablation_tome", mode, seeds, [(row_id(c), c.seed, c, s) for c, s in zip(cfgs, sums)],
                           labels, Path(args.out), paper_column="paper (see the ToMe section)")
    n = len(seeds)
    blk = lambda xs, i: xs[i * n:(i + 1) * n]  # noqa: E731
    m_runs, t_runs = sums[:len(masked)], sums[len(masked):]
    lines = [machine_header("Token merging vs masking in the teacher (docs/paper.md#ablations)", seeds=seeds,
                            wall_s=time.time() - t0, extra=f"mode: {mode}; teacher {t_cfg.embed_dim}d x {t_cfg.depth}"),
             "| teacher | teacher MMACs/img | student acc (%) | teacher acc (%) |", "|---|---|---|---|"]
    rows, pts = [], {"MaskedKD": [], "ToMe": []}
    unreachable = []  # keep counts below ToMe's cheapest teacher: their nearest r is the largest one, already listed
    for i, (k, r) in enumerate(zip(keeps, rs)):
        for label, runs, cost in (("MaskedKD", m_runs, mkd.macs(t_cfg, k)), ("ToMe", t_runs, tome_macs(t_cfg, r))):
            if label == "ToMe" and r in rs[:i]:
                unreachable.append(k)
                continue
            ss = blk(runs, i)
            acc = [s["final_acc"] for s in ss]
            tacc = [s["history"][-1]["teacher_acc_masked"] for s in ss]
            what = f"{label} ({'keep ' + str(k) if label == 'MaskedKD' else f'r={r} per block'})"
            lines.append(f"| {what} | {cost / 1e6:.2f} | {fmt_pm(acc)} | {fmt_pm(tacc)} |")
            rows.append([label, k if label == "MaskedKD" else r, cost, *mean_std(acc), mean_std(tacc)[0]])
            pts[label].append((cost / 1e6, 100 * mean_std(acc)[0], 100 * mean_std(tacc)[0]))
    if unreachable:
        lines += ["", f"ToMe cannot reach the teacher MACs of keep {', '.join(map(str, unreachable))}: merging at most "
                  f"half the tokens per block, its cheapest teacher (r={max(rs)}) costs "
                  f"{tome_macs(t_cfg, max(rs)) / 1e6:.2f} MMACs/img, listed once."]
    lines += ["", "Paper (read from its plot): student acc at teacher GFLOPs — MaskedKD "
              + ", ".join(f"{g}: {a}" for g, a in PAPER_MASKEDKD.items()) + "; ToMe "
              + ", ".join(f"{g}: {a}" for g, a in PAPER_TOME.items()) + "."]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lines += ["", embedded.claims_sentence(data)]
    (out / "ablation_tome.md").write_text("\n".join(lines) + "\n")
    with open(out / "ablation_tome.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["teacher", "keep_or_r", "teacher_macs", "student_acc_mean", "student_acc_std", "teacher_acc"])
        w.writerows(rows)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, p in pts.items():
        a.plot([q[0] for q in p], [q[1] for q in p], "o-", label=label)
        b.plot([q[0] for q in p], [q[2] for q in p], "o-", label=label)
    a.set_ylabel("student acc (%)"), b.set_ylabel("teacher acc (%)")
    for ax in (a, b):
        ax.set_xlabel("teacher MMACs / image"), ax.legend()
    fig.tight_layout()
    fig.savefig(out / "ablation_tome.png", dpi=120)
    print("\n".join(lines))
    embedded.finish(args, "ablation_tome", ("ablation_tome.md", "ablation_tome.csv"))


if __name__ == "__main__":
    main()
