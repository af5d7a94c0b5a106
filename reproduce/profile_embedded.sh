#!/usr/bin/env bash
# See reproduce/profile_embedded.py.
exec bash "$(dirname "$0")/lib/run_py.sh" profile_embedded.py "$@"
