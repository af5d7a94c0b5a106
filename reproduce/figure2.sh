#!/usr/bin/env bash
# See reproduce/README.md and reproduce/figure2.py.
exec bash "$(dirname "$0")/_py.sh" figure2.py "$@"
