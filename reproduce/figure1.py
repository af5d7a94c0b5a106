"""Paper figure 1 (left) [docs/paper.md#figure-1]: per-image training compute of the paper's four teacher -> student
pairs:
student forward + backward (3x forward), teacher forward, masked teacher forward. Pure arithmetic from the
FLOPs model, beside the values read from the paper's plot.

    bash reproduce/figure1.sh     # writes results/figure1.png and results/figure1.md (seconds)
"""
from __future__ import annotations

import argparse
from pathlib import Path

import maskedkd as mkd
from reproduce.lib import paper
from maskedkd.select import keep_count


def compute() -> list[dict]:
    rows = []
    for pair, s, t, kept, *plot in paper.FIG1:
        s_cfg, t_cfg = mkd.vit_config(s), mkd.vit_config(t)
        led = mkd.training_ledger(s_cfg, t_cfg, keep_count(t_cfg.num_patches, kept / 100))
        ours = [led["student_fwd_bwd"] / 1e9, led["teacher_full"] / 1e9, led["teacher_masked"] / 1e9]
        rows.append({"pair": pair, "kept": kept, "ours": ours, "paper": plot})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results")
    args = ap.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = compute()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 4))
    names = ["student F+B", "teacher F", "teacher F (masked)"]
    w = 0.27
    for j, (name, color) in enumerate(zip(names, ["#4c72b0", "#dd8452", "#55a868"])):
        xs = [i + (j - 1) * w for i in range(len(rows))]
        ax.bar(xs, [r["ours"][j] for r in rows], w, label=name, color=color)
        ax.scatter(xs, [r["paper"][j] for r in rows], color="k", marker="_", s=200, zorder=3,
                   label="read from the paper's plot" if j == 0 else None)
    ax.set_xticks(range(len(rows)), [f"{r['pair']}\n({r['kept']}% kept)" for r in rows])
    ax.set_ylabel("training compute per image (GFLOPs = GMACs)")
    ax.set_title("Figure 1: per-image training compute (FLOPs model, docs/paper.md#flops-model)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "figure1.png", dpi=120)
    lines = ["# Figure 1: per-image training compute (GMACs)", "",
             "| pair | kept | student F+B ours / paper | teacher F ours / paper | teacher F masked ours / paper |",
             "|---|---|---|---|---|"]
    for r in rows:
        cells = " | ".join(f"{o:.2f} / ≈{p}" for o, p in zip(r["ours"], r["paper"]))
        lines.append(f"| {r['pair']} | {r['kept']}% | {cells} |")
    (out / "figure1.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    main()
