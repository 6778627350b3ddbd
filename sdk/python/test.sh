#!/usr/bin/env bash
# Runs the Python library's unit tests, and the Python examples', each world
# against its own generated bindings (`componentize-py bindings`) with the
# host's imports faked (tests/fakes.py). Needs componentize-py 0.25.1, or
# COMPONENTIZE_PY set to its path; the bindings go to $OUT_DIR (default:
# target/py-bindings).
set -euo pipefail
sdk="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$sdk/../.." && pwd)"
cpy="${COMPONENTIZE_PY:-componentize-py}"
out="${OUT_DIR:-$root/target/py-bindings}"
command -v "$cpy" >/dev/null || { echo "error: componentize-py not found; pip install componentize-py==0.25.1 (./dev test does it)" >&2; exit 1; }
python="${PYTHON:-python3}"

bindings() { # WORLD -> the directory of its bindings
  local dir="$out/$1"
  rm -rf "$dir"
  "$cpy" -d "$root/wit" -w "$1" bindings "$dir" >/dev/null
  echo "$dir"
}

run() { # WORLD DIR PATTERN [EXTRA_PATH]
  local b; b="$(bindings "$1")"
  echo "== $2 ($1 world)"
  PYTHONPATH="$b:$sdk:$sdk/tests${4:+:$4}" "$python" -m unittest discover -s "$2" -p "$3"
}

run framework "$sdk/tests" 'test_framework*.py'
run placement "$sdk/tests" 'test_placement*.py'
run health-check "$sdk/tests" 'test_health*.py'
run isolator "$sdk/tests" 'test_isolator*.py'
for example in "$root"/examples/*-python; do
  ls "$example"/test_*.py >/dev/null 2>&1 || continue
  kind="$(sed -n 's/^kind *= *"\(.*\)"/\1/p' "$example/plugin.toml")"
  run "$kind" "$example" 'test_*.py' "$example"
done
