"""Do table 1's verdicts survive a change of machine? The default run under two CPU kernel branches.

Another machine gives another trajectory of every run (maskedkd/reproducible.py: the kernel branch decides the
bits). Running the default table 1 a second time under the other branch, on this machine, gives such a trajectory
on purpose; a verdict that changes between the two is reported as such, not as a finding.

    bash reproduce/table1.sh                                              # the reference branch (this CPU's)
    ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 bash reproduce/table1.sh --out results_avx2
    bash reproduce/branches.sh results results_avx2 [--update-reference]

Writes results/branches.md and branches.json (each table-1 claim: the verdict and interval under each branch, and
whether the verdicts are the same); --update-reference copies them to reproduce/reference/ and regenerates the
README block (tests/test_claims.py checks it against the committed table-1 runs file).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from reproduce.lib import flags, records, report

RESERVED = ("key", "a", "b", "same")  # a claim's own keys in compare(), beside the two labels


def compare(a: dict, b: dict, label_a: str, label_b: str) -> dict:
    """Claim by claim, the verdicts of two table-1 runs files of the same plan (same runs and config hashes)."""
    plan_a = {(r["row"], r["seed"]): r["config_hash"] for r in a["runs"]}
    plan_b = {(r["row"], r["seed"]): r["config_hash"] for r in b["runs"]}
    if plan_a != plan_b or a["mode"] != b["mode"]:
        raise SystemExit("the two runs files are not the same plan (rows, seeds, config hashes or mode differ): "
                         "run the same table1.sh invocation under each branch")
    if label_a == label_b or {label_a, label_b} & set(RESERVED):
        raise ValueError(f"branch labels {label_a!r}, {label_b!r} must differ and avoid {RESERVED}")
    cb = {c["key"]: c for c in b["claims"]}
    claims = []
    for ca in a["claims"]:
        c2 = cb[ca["key"]]
        claims.append({"key": ca["key"], "a": ca["a"], "b": ca["b"],
                       label_a: {k: ca[k] for k in ("seeds", "mean", "low", "high", "verdict")},
                       label_b: {k: c2[k] for k in ("seeds", "mean", "low", "high", "verdict")},
                       "same": ca["verdict"] == c2["verdict"]})
    return {"mode": a["mode"], "seeds": a["seeds"], "branches": [label_a, label_b], "claims": claims,
            "same": sum(c["same"] for c in claims), "total": len(claims)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first", help="results folder of the run under this CPU's own branch")
    ap.add_argument("second", help="results folder of the run under the other branch")
    ap.add_argument("--labels", type=flags.labels(2, RESERVED), default=["avx512", "avx2"],
                    help="names of the two branches, in the same order (distinct; not one of the record's keys)")
    ap.add_argument("--out", default="results")
    ap.add_argument("--update-reference", action="store_true")
    args = ap.parse_args(argv)
    la, lb = args.labels
    a, b = (json.loads((Path(d) / "table1_runs.json").read_text()) for d in (args.first, args.second))
    cmp = compare(a, b, la, lb)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "branches.json").write_text(json.dumps(cmp, indent=1) + "\n")
    (out / "branches.md").write_text("# Table 1's verdicts under two CPU kernel branches (reproduce/branches.py)\n\n"
                                     + report.branches_block(cmp))
    print(report.branches_block(cmp), end="")
    if args.update_reference:
        if cmp["mode"] != "default":
            raise SystemExit("--update-reference records default runs: run table1.sh without --quick or --smoke")
        ref = json.loads((records.REFERENCE / "table1_runs.json").read_text())
        if {r["config_hash"] for r in ref["runs"]} != {r["config_hash"] for r in a["runs"]}:
            raise SystemExit("the first folder's table-1 runs are not the committed reference's: update that first")
        for name in ("branches.json", "branches.md"):
            shutil.copyfile(out / name, records.REFERENCE / name)
        records.regenerate()
        print(f"reference updated: {records.REFERENCE}/branches.json, .md and the README block", file=sys.stderr)


if __name__ == "__main__":
    main()
