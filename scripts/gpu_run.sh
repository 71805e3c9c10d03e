#!/usr/bin/env bash
# Run scripts/gpu_run.py: scripts/gpu_run.sh OUT [--small] [--work DIR] (paths relative to where it is called).
# PYTHON picks the interpreter (default: the repository's .venv/bin/python if there, else python3).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1 FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
default_python=python3
[ -x "$root/.venv/bin/python" ] && default_python="$root/.venv/bin/python"
exec "${PYTHON:-$default_python}" "$root/scripts/gpu_run.py" "$@"
