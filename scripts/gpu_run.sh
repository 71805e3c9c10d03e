#!/usr/bin/env bash
# Run scripts/gpu_run.py from the repository root: scripts/gpu_run.sh OUT [--small] [--work DIR].
# PYTHON picks the interpreter (default: .venv/bin/python if there, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
default_python=python3
[ -x .venv/bin/python ] && default_python=.venv/bin/python
exec "${PYTHON:-$default_python}" scripts/gpu_run.py "$@"
