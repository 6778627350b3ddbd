#!/usr/bin/env bash
# Builds this C isolator into a component, with the library in sdk/c.
#   ./build.sh [OUT.wasm]
# The tools it needs are listed at the top of sdk/c/build.sh.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec "$here/../../sdk/c/build.sh" isolator "${1:-$here/limits-c.wasm}" "$here/plugin.c"
