#!/usr/bin/env bash
# See reproduce/README.md and reproduce/ablation_student.py.
exec bash "$(dirname "$0")/_py.sh" ablation_student.py "$@"
