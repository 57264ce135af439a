#!/usr/bin/env bash
# Runs the official WASI testsuite through `wasmbox run` with the adapter beside this script.
#
#   tests/wasi-testsuite/run.sh p1 WASMBOX_BINARY
#       the preview 1 suites (C, AssemblyScript, Rust): fails on anything short of 72 of 72.
#   tests/wasi-testsuite/run.sh p3 WASMBOX_BINARY WASMTIME_BINARY
#       the Rust WASI 0.3 suite, through wasmbox and through `wasmtime` in the same run, both
#       counts printed (compare.py). Fails when wasmbox fails a command test expectations-p3.toml
#       does not name with its reason, when a test that file names passes (it is then stale), and
#       when either run passes nothing. Tests of the `wasi:http/service` world (WASI 0.3 HTTP
#       services) go through `wasmbox serve` and `wasmtime serve`.
#
# The suite is `../shared/wasi-testsuite` (or $WASI_TESTSUITE), copied to a temp dir first since
# tests write under their fs-tests.dir. Needs python3 (3.11 or later) with colorama and requests.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$(dirname "$here")")"
suite="${WASI_TESTSUITE:-$root/../shared/wasi-testsuite}"
which="${1:?usage: $0 p1|p3 WASMBOX_BINARY [WASMTIME_BINARY]}"
export WASMBOX="${2:?usage: $0 p1|p3 WASMBOX_BINARY [WASMTIME_BINARY]}"
python3 -c 'import colorama, requests' 2>/dev/null ||
    python3 -m pip install --quiet colorama requests
# The runs happen in a network namespace of their own holding only loopback (the tests get every
# address there, and nothing beyond this machine is reachable), when one can be made.
if [ "${WASMBOX_TESTSUITE_NETNS:-}" != 1 ] && unshare --net true 2>/dev/null; then
    exec unshare --net bash -c 'ip link set lo up && WASMBOX_TESTSUITE_NETNS=1 exec bash "$0" "$@"' \
        "${BASH_SOURCE[0]}" "$@"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export WASMBOX_CACHE_DIR="$work/cache"

# run NAME ADAPTER SUITE_DIRS...: one runner pass on a fresh copy of the suite; results in
# $work/NAME.json, the log in $work/NAME.log.
run() {
    local name="$1" adapter="$2"
    shift 2
    rm -rf "$work/suite"
    cp -r "$suite" "$work/suite"
    (cd "$work/suite/test-runner" &&
        python3 "$here/runner.py" . -r "$adapter" --disable-colors -t "$@" \
            --json-output-location "$work/$name.json" >"$work/$name.log" 2>&1)
}

case "$which" in
p1)
    run p1 "$here/wasmbox.py" ../tests/c/testsuite/wasm32-wasip1 \
        ../tests/assemblyscript/testsuite/wasm32-wasip1 ../tests/rust/testsuite/wasm32-wasip1 ||
        { cat "$work/p1.log"; echo "wasi-testsuite: failures (above)" >&2; exit 1; }
    python3 - "$work/p1.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
total = sum(r["passed"] + r["failed"] for r in d["results"])
passed = sum(r["passed"] for r in d["results"])
for r in d["results"]:
    print(f"  {r['name']}: {r['passed']} passed, {r['failed']} failed, {r['skipped']} skipped")
print(f"wasi-testsuite preview 1: {passed} of {total} passed")
sys.exit(0 if passed == total and total == 72 else 1)
PY
    ;;
p3)
    export WASMTIME="${3:?usage: $0 p3 WASMBOX_BINARY WASMTIME_BINARY}"
    # Both runs fail (exit non-zero) when any test fails; the comparison below judges them.
    run wasmbox "$here/wasmbox.py" ../tests/rust/testsuite/wasm32-wasip3 || true
    run wasmtime "$work/suite/adapters/wasmtime.py" \
        ../tests/rust/testsuite/wasm32-wasip3 || true
    python3 "$here/compare.py" "$work/wasmbox.json" "$work/wasmtime.json" \
        "$here/expectations-p3.toml" "$suite/tests/rust/testsuite/wasm32-wasip3" ||
        { cat "$work/wasmbox.log"; exit 1; }
    ;;
*)
    echo "usage: $0 p1|p3 WASMBOX_BINARY [WASMTIME_BINARY]" >&2
    exit 2
    ;;
esac
