#!/usr/bin/env bash
# See reproduce/gpu_check.py: the compiled bf16 step on one CUDA GPU (speed, MFU, compile, memory, compiled == eager).
exec bash "$(dirname "$0")/lib/run_py.sh" gpu_check.py "$@"
