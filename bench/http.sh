#!/usr/bin/env bash
# HTTP serving benchmark: `wasmbox serve` against `wasmtime serve` (48.0.8) with wrk, on the C
# hello component (examples/http-hello), a WASI 0.3 hello (the WASI testsuite's http-service)
# and the Python app (examples/http-py); for the C hello also wasmbox with metrics and tracing
# on, over HTTPS, and a native hyper server (bench/hyper-hello). See bench/README.md.
#
# Builds wasmbox and bench/hyper-hello (release), installs wrk (Debian) and the wasmtime CLI if
# missing, builds the Python component, then runs bench/serve.py.
#
# Environment:
#   ROUNDS             rounds per point (default 3)
#   DURATION           seconds per wrk run (default 10)
#   CONNECTIONS        connection counts (default 1,16,64)
#   CARGO_TARGET_DIR   where wasmbox is built (default ~/.cache/wasmbox-target)
#   WASMBOX_TOOLS_DIR  where the wasmtime CLI is installed (default ~/.cache/wasmbox-tools)
set -euo pipefail

# shellcheck source=bench/wasmtime-peer.sh
source "$(dirname "${BASH_SOURCE[0]}")/wasmtime-peer.sh"

# shellcheck source=bench/packages.sh
source "$(dirname "${BASH_SOURCE[0]}")/packages.sh"
command -v wrk >/dev/null || install_missing wrk

if ! "$WASMTIME" --version 2>/dev/null | grep -qE "^wasmtime $WASMTIME_VERSION( |\$)" ||
    ! "$WASMTIME" serve --help >/dev/null 2>&1; then
    install_wasmtime
fi

bash "$ROOT/examples/http-py/build.sh"
(cd "$ROOT" && cargo build --release --quiet -p wasmbox-bench-hyper-hello)
suite="${WASI_TESTSUITE:-$ROOT/../shared/wasi-testsuite}"

exec python3 "$ROOT/bench/serve.py" --wasmbox "$WASMBOX" --wasmtime "$WASMTIME" \
    --component "hello=$ROOT/examples/http-hello/http-hello.wasm" \
    --component "hello-p3=$suite/tests/rust/testsuite/wasm32-wasip3/http-service.wasm" \
    --p3 hello-p3 \
    --component "python=$ROOT/examples/http-py/http-py.wasm" \
    --variants-of hello --native "$CARGO_TARGET_DIR/release/hyper-hello"
