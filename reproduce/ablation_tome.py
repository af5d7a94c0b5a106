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

import maskedkd as mkd
from maskedkd.experiments import MODELS
from maskedkd.tome import tome_macs
from reproduce.lib import driver, full
from reproduce.lib.driver import accs, by_row, last_teacher
from reproduce.lib.embedded import student_run
from reproduce.lib.runner import fmt_pm, mean_std

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


def rows(mode, seeds, args=None):
    task = args.regime if args else "digits"  # --regime: an embedded image regime
    keeps = KEEPS[1:2] if mode == "smoke" else KEEPS
    t_cfg = MODELS["digits_teacher"]
    rs = [matched_r(t_cfg, mkd.macs(t_cfg, k)) for k in keeps]
    return ([(f"MaskedKD teacher, {k} of 64", [student_run(mode, s, k, task=task) for s in seeds]) for k in keeps]
            + [(f"ToMe teacher, r={r} per block",
                [student_run(mode, s, None, teacher_tome_r=r, task=task) for s in seeds])
               for r in rs])


def points(data):
    """[(label, keep count or r, teacher MACs, runs)] in the table's order: each keep count's MaskedKD row, then its
    matched ToMe row unless an earlier keep count already has that r; and the keep counts ToMe cannot reach."""
    t_cfg, runs = MODELS["digits_teacher"], by_row(data)
    keeps = [int(rid[4:]) for rid in runs if rid.startswith("keep")]
    rs = [matched_r(t_cfg, mkd.macs(t_cfg, k)) for k in keeps]
    out, unreachable = [], []  # keep counts below ToMe's cheapest teacher: their nearest r is already listed
    for i, (k, r) in enumerate(zip(keeps, rs)):
        out.append(("MaskedKD", k, mkd.macs(t_cfg, k), runs[f"keep{k}"]))
        if r in rs[:i]:
            unreachable.append(k)
        else:
            out.append(("ToMe", r, tome_macs(t_cfg, r), runs[f"tome{r}"]))
    return out, unreachable, rs


def table(data):
    t_cfg = MODELS["digits_teacher"]
    pts, unreachable, rs = points(data)
    lines = ["| teacher | teacher MMACs/img | student acc (%) | teacher acc (%) |", "|---|---|---|---|"]
    csv_rows = [["teacher", "keep_or_r", "teacher_macs", "student_acc_mean", "student_acc_std", "teacher_acc"]]
    for label, kr, cost, ss in pts:
        what = f"{label} ({'keep ' + str(kr) if label == 'MaskedKD' else f'r={kr} per block'})"
        lines.append(f"| {what} | {cost / 1e6:.2f} | {fmt_pm(accs(ss))} | {fmt_pm(last_teacher(ss))} |")
        csv_rows.append([label, kr, cost, *mean_std(accs(ss)), mean_std(last_teacher(ss))[0]])
    if unreachable:
        lines += ["", f"ToMe cannot reach the teacher MACs of keep {', '.join(map(str, unreachable))}: merging at most "
                  f"half the tokens per block, its cheapest teacher (r={max(rs)}) costs "
                  f"{tome_macs(t_cfg, max(rs)) / 1e6:.2f} MMACs/img, listed once."]
    lines += ["", "Paper (read from its plot): student acc at teacher GFLOPs — MaskedKD "
              + ", ".join(f"{g}: {a}" for g, a in PAPER_MASKEDKD.items()) + "; ToMe "
              + ", ".join(f"{g}: {a}" for g, a in PAPER_TOME.items()) + "."]
    return lines, csv_rows


def figure(data, path):
    plt = driver.plot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for label in ("MaskedKD", "ToMe"):
        p = [(cost / 1e6, 100 * mean_std(accs(ss))[0], 100 * mean_std(last_teacher(ss))[0])
             for lab, _, cost, ss in points(data)[0] if lab == label]
        a.plot([q[0] for q in p], [q[1] for q in p], "o-", label=label)
        b.plot([q[0] for q in p], [q[2] for q in p], "o-", label=label)
    a.set_ylabel("student acc (%)"), b.set_ylabel("teacher acc (%)")
    for ax in (a, b):
        ax.set_xlabel("teacher MMACs / image"), ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


_T = MODELS["digits_teacher"]
SPEC = driver.Spec("ablation_tome", "Token merging vs masking in the teacher (docs/paper.md#ablations)", __doc__, rows,
                   table, head=lambda data: f"mode: {data['mode']}; teacher {_T.embed_dim}d x {_T.depth}",
                   figure=figure, full=full_main, paper_column="paper (see the ToMe section)", regimes=True)
main = SPEC.main

if __name__ == "__main__":
    main()
