#!/usr/bin/env bash
# Builds this C health check into a component.
#   ./build.sh [OUT.wasm]
# Needs Debian's clang, lld, wasi-libc and libclang-rt-14-dev-wasm32
# (apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32), and from
# crates.io wit-bindgen-cli 0.63 and wasm-tools 1.263
# (cargo install --locked wit-bindgen-cli@0.63.0 wasm-tools@1.263.0), and the
# WASI preview1 adapter in $WASI_ADAPTER (wasi_snapshot_preview1.reactor.wasm,
# from the wasi-preview1-component-adapter-provider crate; the test build
# writes it out). ./dev test sets all of this up.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/health-tcp-c.wasm}"
for tool in clang wit-bindgen wasm-tools; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found; see the top of $0" >&2; exit 1; }
done
[ -f "${WASI_ADAPTER:-}" ] || { echo "error: set WASI_ADAPTER to wasi_snapshot_preview1.reactor.wasm" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
wit-bindgen c "$here/../../wit" --world health-check --out-dir "$work"
clang --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Werror \
  -I "$work" -o "$work/core.wasm" \
  "$here/plugin.c" "$work/health_check.c" "$work/health_check_component_type.o"
wasm-tools component new "$work/core.wasm" --adapt "wasi_snapshot_preview1=$WASI_ADAPTER" -o "$out"
wasm-tools validate "$out"
