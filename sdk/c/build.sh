#!/usr/bin/env bash
# Builds a C plugin with this library into a component.
#   sdk/c/build.sh WORLD OUT.wasm SOURCE.c...
# WORLD is the plugin's world (framework, placement, isolator, health-check); the
# sources implement its callbacks (see wasmos.h). Needs Debian's clang,
# lld, wasi-libc and libclang-rt-14-dev-wasm32 (apt-get install clang lld
# wasi-libc libclang-rt-14-dev-wasm32), wit-bindgen-cli 0.63 and
# wasm-tools 1.263 from crates.io (cargo install --locked
# --no-default-features --features c wit-bindgen-cli@0.63.0, and
# --features component,validate wasm-tools@1.263.0), and the WASI preview1
# adapter in $WASI_ADAPTER (wasi_snapshot_preview1.reactor.wasm, from the
# wasi-preview1-component-adapter-provider crate). ./dev test sets all of
# this up. WIT_DIR: the contract's directory (default: wit/ of this repository).
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 WORLD OUT.wasm SOURCE.c..." >&2; exit 2; }
sdk="$(cd "$(dirname "$0")" && pwd)"
world="$1" out="$2"
shift 2
case "$world" in
  health-check) part=health.c ;;
  isolator) part=isolator.c ;;
  placement) part=placement.c ;;
  framework) part=framework.c ;;
  *) echo "error: no world '$world': framework, placement, isolator or health-check" >&2; exit 2 ;;
esac
for tool in clang wit-bindgen wasm-tools; do
  command -v "$tool" >/dev/null || { echo "error: $tool not found; see the top of $0" >&2; exit 1; }
done
[ -f "${WASI_ADAPTER:-}" ] || { echo "error: set WASI_ADAPTER to wasi_snapshot_preview1.reactor.wasm" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Every world's bindings under one name (`wit_...`), so one library source
# serves them all.
wit-bindgen c "${WIT_DIR:-$sdk/../../wit}" --world "$world" --rename-world wit --out-dir "$work" >"$work/bindgen.log" 2>&1 \
  || { cat "$work/bindgen.log" >&2; exit 1; }
define="WASMOS_WORLD_$(echo "$world" | tr 'a-z-' 'A-Z_')"
clang --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Werror -D"$define" \
  -I "$work" -I "$sdk" -o "$work/core.wasm" \
  "$@" "$sdk/common.c" "$sdk/$part" "$work/wit.c" "$work/wit_component_type.o"
wasm-tools component new "$work/core.wasm" --adapt "wasi_snapshot_preview1=$WASI_ADAPTER" -o "$out"
wasm-tools validate "$out"
