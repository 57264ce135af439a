#!/usr/bin/env bash
# OCI runtime benchmark: wasmbox as podman's and Docker's runtime against runc, in the same run.
# See bench/README.md.
#
# Needs root. Installs podman, docker.io, runc and busybox-static when missing, builds wasmbox
# (release), then runs bench/oci.py.
#
# Environment:
#   RUNS               `run --rm` runs per runtime and engine (default 20)
#   IDLE               idle containers per runtime for the memory figure (default 20)
#   CARGO_TARGET_DIR   where wasmbox is built (default ~/.cache/wasmbox-target)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmbox-target}"

missing=()
command -v podman >/dev/null || missing+=(podman)
[ -x /usr/sbin/dockerd ] || missing+=(docker.io)
[ -x /usr/bin/runc ] || missing+=(runc)
[ -x /bin/busybox ] || missing+=(busybox-static)
# shellcheck source=bench/packages.sh
source "$ROOT/bench/packages.sh"
install_missing "${missing[@]}"

echo "building wasmbox (release) in $CARGO_TARGET_DIR ..." >&2
(cd "$ROOT" && cargo build --release --quiet -p wasmbox-shim --bins)

exec python3 "$ROOT/bench/oci.py" --wasmbox "$CARGO_TARGET_DIR/release/wasmbox" \
    --hello "$ROOT/examples/hello/hello.wasm" --files "$ROOT/examples/files/files.wasm" \
    --runs "${RUNS:-20}" --idle "${IDLE:-20}"
