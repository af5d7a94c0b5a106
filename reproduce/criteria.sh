#!/usr/bin/env bash
# See reproduce/README.md and reproduce/criteria.py.
exec bash "$(dirname "$0")/lib/run_py.sh" criteria.py "$@"
