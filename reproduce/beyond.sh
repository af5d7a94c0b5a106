#!/usr/bin/env bash
# See reproduce/README.md and reproduce/beyond.py.
exec bash "$(dirname "$0")/lib/run_py.sh" beyond.py "$@"
