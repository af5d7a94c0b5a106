#!/usr/bin/env bash
# See reproduce/README.md and reproduce/table1.py.
exec bash "$(dirname "$0")/lib/run_py.sh" table1.py "$@"
