#!/usr/bin/env bash
# Builds this C health check into a component, with the library in sdk/c.
#   ./build.sh [OUT.wasm]
# The tools it needs are listed at the top of sdk/c/build.sh.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec "$here/../../sdk/c/build.sh" health-check "${1:-$here/health-tcp-c.wasm}" "$here/plugin.c"
