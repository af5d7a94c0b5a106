#!/usr/bin/env bash
# See reproduce/rehearsal.py: the full-scale path (DeiT-Ti <- DeiT-S at 224 px, ImageFolder, torchrun x2, bf16) on a CPU.
exec bash "$(dirname "$0")/lib/run_py.sh" rehearsal.py "$@"
