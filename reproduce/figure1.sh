#!/usr/bin/env bash
# See reproduce/README.md and reproduce/figure1.py.
exec bash "$(dirname "$0")/lib/run_py.sh" figure1.py "$@"
