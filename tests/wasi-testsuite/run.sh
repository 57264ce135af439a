#!/usr/bin/env bash
# Runs the official WASI testsuite's preview 1 suites (C, AssemblyScript, Rust) through
# `wasmbox run` with the adapter beside this script, and fails on any failure.
#
#   tests/wasi-testsuite/run.sh WASMBOX_BINARY
#
# The suite is `../shared/wasi-testsuite` (or $WASI_TESTSUITE), copied to a temp dir first since
# tests write under their fs-tests.dir. Needs python3 (3.11 or later) with colorama and requests.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$(dirname "$here")")"
suite="${WASI_TESTSUITE:-$root/../shared/wasi-testsuite}"
export WASMBOX="${1:?usage: $0 WASMBOX_BINARY}"
python3 -c 'import colorama, requests' 2>/dev/null ||
    python3 -m pip install --quiet colorama requests
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$suite" "$work/suite"
export WASMBOX_CACHE_DIR="$work/cache"
cd "$work/suite/test-runner"
python3 "$here/runner.py" . -r "$here/wasmbox.py" --disable-colors \
    -t ../tests/c/testsuite/wasm32-wasip1 ../tests/assemblyscript/testsuite/wasm32-wasip1 \
    ../tests/rust/testsuite/wasm32-wasip1 --json-output-location "$work/results.json" >"$work/log" 2>&1 ||
    { cat "$work/log"; echo "wasi-testsuite: failures (above)" >&2; exit 1; }
python3 - "$work/results.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
total = sum(r["passed"] + r["failed"] for r in d["results"])
passed = sum(r["passed"] for r in d["results"])
for r in d["results"]:
    print(f"  {r['name']}: {r['passed']} passed, {r['failed']} failed, {r['skipped']} skipped")
print(f"wasi-testsuite preview 1: {passed} of {total} passed")
sys.exit(0 if passed == total and total == 72 else 1)
PY
