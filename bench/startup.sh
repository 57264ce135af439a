#!/usr/bin/env bash
# Startup benchmark: `wasmbox run` against `wasmtime run` (48.0.8) on examples/hello/hello.wasm,
# cold and warm compiled-code cache. See bench/README.md.
#
# Builds wasmbox (release), installs the wasmtime CLI if it is missing, is another version, or was
# built without its compiled-code cache, then runs bench/startup.py.
#
# Environment:
#   RUNS               timed runs per tool and phase (default 20)
#   CARGO_TARGET_DIR   where wasmbox is built (default ~/.cache/wasmbox-target)
#   WASMBOX_TOOLS_DIR  where the wasmtime CLI is installed (default ~/.cache/wasmbox-tools)
#   TMPDIR             where the benchmark's cache directories are made
set -euo pipefail

# shellcheck source=bench/wasmtime-peer.sh
source "$(dirname "${BASH_SOURCE[0]}")/wasmtime-peer.sh"
WASM="$ROOT/examples/hello/hello.wasm"

# True when $WASMTIME is version $WASMTIME_VERSION and can cache compiled code in a directory we
# name. A build without the `cache` feature (e.g. `--no-default-features`) ignores the cache
# configuration silently, which would make its "warm" runs cold.
wasmtime_usable() {
    [[ -x "$WASMTIME" ]] || return 1
    [[ "$("$WASMTIME" --version 2>/dev/null)" == "wasmtime $WASMTIME_VERSION"* ]] || return 1
    local probe rc=0
    probe="$(mktemp -d)"
    printf '[cache]\ndirectory = "%s/c"\n' "$probe" >"$probe/cache.toml"
    "$WASMTIME" run -C cache=y -C "cache-config=$probe/cache.toml" "$WASM" >/dev/null 2>&1 || rc=1
    [[ $rc -eq 0 && -d "$probe/c/modules" ]] || rc=1
    rm -rf "$probe"
    return $rc
}

if ! wasmtime_usable; then
    install_wasmtime
    if ! wasmtime_usable; then
        echo "startup.sh: $WASMTIME is not a wasmtime $WASMTIME_VERSION with a working cache" >&2
        exit 1
    fi
fi

exec python3 "$ROOT/bench/startup.py" \
    --wasmbox "$WASMBOX" --wasmtime "$WASMTIME" --wasm "$WASM" --runs "${RUNS:-20}"
