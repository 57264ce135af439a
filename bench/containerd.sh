#!/usr/bin/env bash
# containerd benchmark: wasm through containerd-shim-wasmbox-v1 against a static native program
# through io.containerd.runc.v2, in one containerd, in the same run. See bench/README.md.
#
# Needs root (containerd, runc, mounts). Installs containerd, runc and busybox-static when missing,
# builds wasmbox (release), then runs bench/containerd.py.
#
# Environment:
#   RUNS               `ctr run --rm` runs per runtime for (a) (default 20)
#   TASKS, PARALLEL    tasks per runtime and how many at a time for (b) (default 200, 10)
#   IDLE               idle containers for (c) (default 100)
#   CARGO_TARGET_DIR   where wasmbox is built (default ~/.cache/wasmbox-target)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmbox-target}"

missing=()
command -v containerd >/dev/null || missing+=(containerd)
command -v runc >/dev/null || missing+=(runc)
[ -x /bin/busybox ] || missing+=(busybox-static)
# shellcheck source=bench/packages.sh
source "$ROOT/bench/packages.sh"
install_missing "${missing[@]}"

echo "building wasmbox (release) in $CARGO_TARGET_DIR ..." >&2
(cd "$ROOT" && cargo build --release --quiet -p wasmbox-shim --bins)

exec python3 "$ROOT/bench/containerd.py" \
    --bin-dir "$CARGO_TARGET_DIR/release" --examples "$ROOT/examples" \
    --runs "${RUNS:-20}" --tasks "${TASKS:-200}" --parallel "${PARALLEL:-10}" --idle "${IDLE:-100}"
