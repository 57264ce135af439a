#!/usr/bin/env bash
# Cold starts of big modules against the wasmtime CLI (see bench/cold.py and bench/README.md).
#
# Environment: RUNS (default 5), CARGO_TARGET_DIR, WASMBOX_TOOLS_DIR, WASMBOX_SVG_FLATTEN (the
# module tests/run.sh fetches; default under ~/.cache/wasmbox-fixtures), TMPDIR.
set -euo pipefail

# shellcheck source=bench/wasmtime-peer.sh
source "$(dirname "${BASH_SOURCE[0]}")/wasmtime-peer.sh"
"$WASMTIME" --version 2>/dev/null | grep -qE "^wasmtime $WASMTIME_VERSION( |\$)" || install_wasmtime
svg="${WASMBOX_SVG_FLATTEN:-$HOME/.cache/wasmbox-fixtures/svg-flatten-3.1.9.wasm}"
[ -f "$svg" ] || { echo "no $svg: run tests/run.sh once (it fetches svg-flatten), or set WASMBOX_SVG_FLATTEN" >&2; exit 1; }
bash "$ROOT/examples/http-py/build.sh"
exec python3 "$ROOT/bench/cold.py" --wasmbox "$WASMBOX" --wasmtime "$WASMTIME" \
    --svg-flatten "$svg" --http-py "$ROOT/examples/http-py/http-py.wasm" --runs "${RUNS:-5}"
