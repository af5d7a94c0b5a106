"""Does this machine compute the reference machine's bits? A short embedded MaskedKD run (512 images, 2 epochs, 32 of
64 patches, one thread, the kernel branch pinned as the reproduce scripts pin it: maskedkd/reproducible.py),
fingerprinted by its logged losses and the SHA-256 of its final weights, against reproduce/reference/fingerprint.json.

    bash reproduce/fingerprint.sh            # prints MATCH or DIFFER (exit 1), in seconds
    bash reproduce/fingerprint.sh --write    # record this machine's fingerprint as the reference
    bash reproduce/fingerprint.sh --cost     # time the run pinned / unpinned / pinned to AVX2

A MATCH on a machine of the same kernel branch means the embedded tables regenerate there to the digit; a DIFFER
means they will differ by run-to-run chaos (the intervals of reproduce/lib/claims.py are what carries across).
tests/test_reproducible.py runs the check where the CPU is of the reference machine's kind (vendor, family, model).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

REFERENCE = Path(__file__).resolve().parent / "reference" / "fingerprint.json"
OVERRIDES = dict(num_keep=32, train_size=512, test_size=200, epochs=2, eval_every=1, clean_epochs=1, log_every=1,
                 batch_size=32, seed=0)


def config():
    from maskedkd.experiments import get_config
    return get_config("cluttered_student_kd").replace(name="fingerprint", **OVERRIDES)


def fingerprint(root: Path, env: dict[str, str] | None = None) -> dict:
    """Train the short run in a subprocess (runner.run_all's: pinned kernels unless `env` says otherwise, one
    thread) under root; its kernels, CPU, logged losses, final accuracy and weights' SHA-256."""
    from reproduce.lib import runner
    from maskedkd.reproducible import branch, cpu_info
    from safetensors.torch import load_file
    if env is not None:
        old = dict(os.environ)
        os.environ.clear()
        os.environ.update(env)
    try:
        (s,) = runner.run_all([config()], root=root, jobs=1, fresh=True, desc="fingerprint")
    finally:
        if env is not None:
            os.environ.clear()
            os.environ.update(old)
    d = runner.run_dir(root, config())
    losses = [r["loss"] for r in map(json.loads, (d / "log.jsonl").read_text().splitlines()) if "loss" in r]
    params = load_file(str(d / "params.safetensors"))
    digest = hashlib.sha256()
    for k in sorted(params):
        digest.update(k.encode() + params[k].contiguous().numpy().tobytes())
    info = cpu_info()
    return {"kernels": s["kernels"], "cpu": {"vendor": info["vendor"], "family": info["family"],
                                             "model": info["model"], "branch": branch()},
            "losses": losses, "final_acc": s["final_acc"], "params_sha256": digest.hexdigest(),
            "wall_s": s["wall_s"]}


def same_bits(a: dict, b: dict) -> bool:
    return a["losses"] == b["losses"] and a["params_sha256"] == b["params_sha256"] and a["final_acc"] == b["final_acc"]


def cost(root: Path, repeats: int = 3) -> dict:
    """Wall time of the short run pinned (as the scripts run), unpinned and pinned to AVX2 (median of `repeats`
    interleaved rounds, maskedkd.bench.interleaved); and whether each gives the pinned run's bits."""
    import torch

    from maskedkd.bench import interleaved
    from maskedkd.reproducible import pinned_env
    base = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}
    envs = {"pinned": pinned_env(base), "unpinned": {**base, "MASKEDKD_KERNELS": "native"},
            "avx2": {**base, "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}}
    prints = {}

    def run(k):
        prints[k] = fingerprint(root / k, envs[k])

    sec = interleaved({k: (lambda k=k: run(k)) for k in envs}, repeats, torch.device("cpu"), warmup=False)
    return {k: {"median_s": round(sec[k], 2), "vs_pinned": round(sec[k] / sec["pinned"], 3),
                "same_bits_as_pinned": same_bits(prints[k], prints["pinned"]), "kernels": prints[k]["kernels"]}
            for k in envs}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="record this machine's fingerprint as the reference")
    ap.add_argument("--cost", action="store_true", help="time pinned / unpinned / AVX2-pinned runs side by side")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.cost:
            print(json.dumps(cost(Path(tmp)), indent=1))
            return 0
        fp = fingerprint(Path(tmp))
    if args.write:
        REFERENCE.write_text(json.dumps(fp, indent=1) + "\n")
        print(f"written: {REFERENCE}")
        return 0
    ref = json.loads(REFERENCE.read_text())
    ok = same_bits(fp, ref)
    print(f"{'MATCH' if ok else 'DIFFER'}: this machine ({fp['cpu']}, {fp['kernels']}) vs the reference "
          f"({ref['cpu']}, {ref['kernels']}); weights {fp['params_sha256'][:16]} vs {ref['params_sha256'][:16]}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
