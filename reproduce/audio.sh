#!/usr/bin/env bash
# See reproduce/README.md and reproduce/audio.py.
exec bash "$(dirname "$0")/lib/run_py.sh" audio.py "$@"
