#!/usr/bin/env bash
# Runs reproduce/SCRIPT.py (the program behind reproduce/SCRIPT.sh) as the module reproduce.SCRIPT from the repository
# root, with the project's venv when there is one (python3 -m venv .venv && .venv/bin/pip install -e .), offline.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export HF_HUB_OFFLINE=1
# one CPU kernel branch (maskedkd/reproducible.py): the same bits on every machine of that branch; yours win if set
pin="$("$PY" -I maskedkd/reproducible.py)"  # -I: a file run alone (stdlib only, no torch), nothing shadowed
eval "$pin"
script="$1"; shift
exec "$PY" -m "reproduce.${script%.py}" "$@"
