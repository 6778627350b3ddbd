#!/usr/bin/env bash
# Builds a Python plugin with this library into a component.
#   sdk/python/build.sh WORLD APP_DIR MODULE OUT.wasm
# WORLD is the plugin's world (health-check, ...); MODULE (in APP_DIR) sets
# `WitWorld = <world module>.export(YourClass)`. Needs componentize-py
# 0.25.1 (pip install componentize-py==0.25.1; ./dev test installs it), or
# COMPONENTIZE_PY set to its path.
set -euo pipefail
[ $# -eq 4 ] || { echo "usage: $0 WORLD APP_DIR MODULE OUT.wasm" >&2; exit 2; }
sdk="$(cd "$(dirname "$0")" && pwd)"
world="$1" app="$(cd "$2" && pwd)" module="$3" out="$4"
cpy="${COMPONENTIZE_PY:-componentize-py}"
command -v "$cpy" >/dev/null || { echo "error: componentize-py not found; pip install componentize-py==0.25.1 (./dev test does it)" >&2; exit 1; }
"$cpy" -d "$sdk/../../wit" -w "$world" componentize -p "$sdk" -p "$app" "$module" -o "$out"
