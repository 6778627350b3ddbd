#!/usr/bin/env bash
# Builds this Python placement plugin into a component, with the library in
# sdk/python.
#   ./build.sh [OUT.wasm]
# Needs componentize-py (pip install componentize-py==0.25.1), or set
# COMPONENTIZE_PY to its path.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/binpack-py.wasm}"
exec "$here/../../sdk/python/build.sh" placement "$here" app "$out"
