#!/usr/bin/env bash
# See reproduce/README.md and reproduce/figure2.py.
exec bash "$(dirname "$0")/lib/run_py.sh" figure2.py "$@"
