#!/usr/bin/env bash
# See reproduce/README.md and reproduce/audio.py.
exec bash "$(dirname "$0")/_py.sh" audio.py "$@"
