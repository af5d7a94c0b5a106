"""The same bits on every x86 CPU of one kernel branch: which vector kernels torch and MKL may use.

Training is chaotic: the first differing bit of a step grows into a different run. Two machines differ in those
bits when their CPUs offer different vector extensions, because torch dispatches its own kernels (GELU, layer
norm, softmax, the fused CPU attention, the optimizer) by CPU capability and MKL picks a GEMM code path per CPU.
Pinning both to one branch makes every machine that supports the branch compute the same bits with the same
thread count (MKL's conditional numerical reproducibility, CNR):

    ATEN_CPU_CAPABILITY=avx512   MKL_CBWR=AVX512    on CPUs with AVX-512 (F, BW, VL, DQ)
    ATEN_CPU_CAPABILITY=avx2     MKL_CBWR=AVX2      on other x86 CPUs with AVX2 and FMA

Both are read when torch starts, so they are set in the environment of a new process: `pinned_env()` for the
reproduce scripts' training subprocesses (reproduce/lib/runner.py) and reproduce/lib/run_py.sh for the scripts
themselves. A value the user has set is kept; MASKEDKD_KERNELS=native leaves both to torch and MKL. Measured on the reference machine (an AVX-512 Xeon): the AVX-512 pin
gives the same bits as no pin at all, so the committed reference runs stand, and costs nothing measurable
(reproduce/fingerprint.py --cost prints the ratio); pinning AVX2 there, or STRICT CNR, changes the bits.
Machines of different branches still differ from each other; there the seeds' intervals carry the comparison.
reproduce/fingerprint.py checks a short run against the committed fingerprint of the reference machine.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

AVX512 = {"avx512f", "avx512bw", "avx512vl", "avx512dq"}  # what torch's AVX512 capability needs
AVX2 = {"avx2", "fma"}


def cpu_info() -> dict[str, str | set[str]]:
    """vendor, family, model, name and flags of the first CPU in /proc/cpuinfo (empty where there is none)."""
    info: dict[str, str | set[str]] = {"vendor": "", "family": "", "model": "", "name": "", "flags": set()}
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return info
    keys = {"vendor_id": "vendor", "cpu family": "family", "model": "model", "model name": "name", "flags": "flags"}
    for line in path.read_text().splitlines():
        if not line.strip():
            break  # the first processor's block is enough
        k, _, v = (s.strip() for s in line.partition(":"))
        if k in keys:
            info[keys[k]] = set(v.split()) if k == "flags" else v
    return info


def branch(flags: set[str] | None = None) -> str | None:
    """The widest kernel branch this CPU supports: 'avx512', 'avx2', or None (not x86, or neither)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    flags = cpu_info()["flags"] if flags is None else flags
    return "avx512" if AVX512 <= flags else "avx2" if AVX2 <= flags else None


def pinned_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of env (default os.environ) with ATEN_CPU_CAPABILITY and MKL_CBWR pinned to this CPU's branch
    unless already set; unchanged on CPUs without a branch and where MASKEDKD_KERNELS=native (torch's and MKL's own
    choice per CPU)."""
    env = dict(os.environ if env is None else env)
    b = branch()
    if b is not None and env.get("MASKEDKD_KERNELS", "pinned") != "native":
        env.setdefault("ATEN_CPU_CAPABILITY", b)
        env.setdefault("MKL_CBWR", b.upper())
    return env


def kernels() -> str:
    """What this process computes with: torch's CPU capability and MKL's code-path setting, e.g.
    'aten AVX512, MKL_CBWR AVX512' (recorded in every run's summary)."""
    import torch
    return f"aten {torch.backends.cpu.get_cpu_capability()}, MKL_CBWR {os.environ.get('MKL_CBWR', 'unset')}"


if __name__ == "__main__":  # `eval "$(python maskedkd/reproducible.py)"`: export the pin for this CPU (run_py.sh)
    pinned = pinned_env()
    print("; ".join(f"export {k}={pinned[k]}" for k in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")
                   if k in pinned and k not in os.environ))
