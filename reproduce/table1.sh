#!/usr/bin/env bash
# Paper table 1, regenerated: `bash reproduce/table1.sh [--quick | --full --data DIR --checkpoints DIR]`.
# Uses the project's venv when there is one (python3 -m venv .venv && .venv/bin/pip install -e .).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD/reproduce${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" reproduce/table1.py "$@"
