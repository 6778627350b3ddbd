#!/usr/bin/env bash
# The cost of a plugin's language: scaffolds the same placement plugin
# (AVOID) in Rust, Python and C with `wasmos plugin new`, builds each with
# `wasmos plugin build`, and runs host/runtime/benches/languages.rs on them.
#   bench/languages.sh [criterion args]
# Needs what ./dev test installs (target/tools, target/py, the wasmos
# binary it builds; WASMOS=PATH for another).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
wasmos="${WASMOS:-$root/target/debug/wasmos}"
[ -x "$wasmos" ] || { echo "error: build wasmos first: cargo build -p wasmos" >&2; exit 1; }
export PATH="$root/target/tools/bin:$PATH"
export COMPONENTIZE_PY="${COMPONENTIZE_PY:-$root/target/py/bin/componentize-py}"
export WASI_ADAPTER="${WASI_ADAPTER:-$(ls "$root"/target/debug/build/wasmos-tests-*/out/wasi_snapshot_preview1.reactor.wasm 2>/dev/null | head -1)}"
[ -f "$WASI_ADAPTER" ] || { echo "error: set WASI_ADAPTER (./dev test writes it under target/debug/build/wasmos-tests-*/out)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
components=""
for lang in rust python c; do
  echo "== building the AVOID placement plugin in $lang" >&2
  (cd "$work" && "$wasmos" plugin new "avoid-$lang" --kind placement --lang "$lang" >/dev/null)
  CARGO_TARGET_DIR="$root/target/scaffolds" "$wasmos" plugin build "$work/avoid-$lang" >&2
  components="${components:+$components,}$lang=$work/avoid-$lang/avoid-$lang.wasm"
done
cd "$root"
WASMOS_LANG_COMPONENTS="$components" cargo bench -p wasmos-runtime --bench languages -- "$@"
