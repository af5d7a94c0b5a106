#!/usr/bin/env bash
# See reproduce/fingerprint.py.
exec bash "$(dirname "$0")/lib/run_py.sh" fingerprint.py "$@"
