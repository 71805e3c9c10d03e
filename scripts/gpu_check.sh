#!/usr/bin/env bash
# Run scripts/gpu_check.py from the repository root; options pass through
# (--small, --resolution 512, --targets attention, --out FILE). PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" scripts/gpu_check.py "$@"
