#!/usr/bin/env bash
# See reproduce/branches.py.
exec bash "$(dirname "$0")/lib/run_py.sh" branches.py "$@"
