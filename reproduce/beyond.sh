#!/usr/bin/env bash
# See reproduce/README.md and reproduce/beyond.py.
exec bash "$(dirname "$0")/_py.sh" beyond.py "$@"
