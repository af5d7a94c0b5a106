#!/usr/bin/env bash
# See reproduce/README.md and reproduce/ablation_student.py.
exec bash "$(dirname "$0")/lib/run_py.sh" ablation_student.py "$@"
