#!/usr/bin/env bash
# Builds this Python health check into a component.
#   ./build.sh [OUT.wasm]
# Needs componentize-py (pip install componentize-py==0.25.1), or set
# COMPONENTIZE_PY to its path.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/health-tcp-py.wasm}"
cpy="${COMPONENTIZE_PY:-componentize-py}"
command -v "$cpy" >/dev/null || { echo "error: componentize-py not found; pip install componentize-py==0.25.1 (./dev test does it)" >&2; exit 1; }
"$cpy" -d "$here/../../wit" -w health-check componentize -p "$here" app -o "$out"
