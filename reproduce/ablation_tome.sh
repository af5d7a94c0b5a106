#!/usr/bin/env bash
# See reproduce/README.md and reproduce/ablation_tome.py.
exec bash "$(dirname "$0")/lib/run_py.sh" ablation_tome.py "$@"
