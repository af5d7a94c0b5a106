#!/usr/bin/env bash
# See reproduce/README.md and reproduce/criteria.py.
exec bash "$(dirname "$0")/_py.sh" criteria.py "$@"
