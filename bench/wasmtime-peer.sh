# Sourced by the benchmarks that measure wasmbox beside the wasmtime CLI: where both are, wasmbox
# built (release), and how the wasmtime CLI is installed.
#
# Environment:
#   CARGO_TARGET_DIR   where wasmbox is built (default ~/.cache/wasmbox-target)
#   WASMBOX_TOOLS_DIR  where the wasmtime CLI is installed (default ~/.cache/wasmbox-tools)

# The wasmtime version wasmbox embeds.
WASMTIME_VERSION=48.0.8
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmbox-target}"
TOOLS_DIR="${WASMBOX_TOOLS_DIR:-$HOME/.cache/wasmbox-tools}"
WASMBOX="$CARGO_TARGET_DIR/release/wasmbox"
WASMTIME="$TOOLS_DIR/bin/wasmtime"

echo "building wasmbox (release) in $CARGO_TARGET_DIR ..." >&2
(cd "$ROOT" && cargo build --release --quiet -p wasmbox-shim)

# Installs wasmtime-cli $WASMTIME_VERSION with its default features (cache and serve included)
# into $TOOLS_DIR, replacing what is there.
install_wasmtime() {
    echo "installing wasmtime-cli $WASMTIME_VERSION (default features) into $TOOLS_DIR ..." >&2
    cargo install wasmtime-cli --version "=$WASMTIME_VERSION" --locked --root "$TOOLS_DIR" --force
}
