#!/usr/bin/env bash
# CRI benchmark: pods through containerd's CRI plugin with one long-lived gRPC client (no `ctr`),
# wasmbox pods against the same pods with a native busybox container under
# io.containerd.runc.v2, in one containerd, in the same run. See bench/README.md.
#
# Needs root (containerd, runc, mounts, network namespaces). Installs what is missing (containerd,
# runc, busybox-static, CNI plugins, gcc for the pause binary, grpcio from PyPI), builds wasmbox
# (release), then runs bench/cri.py.
#
# Environment:
#   PODS, PARALLEL     pods per round and runtime, and how many at a time (default 50, 5)
#   RUNNING            pods kept running for the memory figure (default 10)
#   CARGO_TARGET_DIR   where wasmbox is built (default ~/.cache/wasmbox-target)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmbox-target}"

missing=()
command -v containerd >/dev/null || missing+=(containerd)
command -v runc >/dev/null || missing+=(runc)
command -v ip >/dev/null || missing+=(iproute2)
command -v nsenter >/dev/null || missing+=(util-linux)
command -v cc >/dev/null || missing+=(gcc)
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || missing+=(libc6-dev)
[ -x /bin/busybox ] || missing+=(busybox-static)
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
# shellcheck source=bench/packages.sh
source "$ROOT/bench/packages.sh"
install_missing "${missing[@]}"
cri_python

echo "building wasmbox (release) in $CARGO_TARGET_DIR ..." >&2
(cd "$ROOT" && cargo build --release --quiet -p wasmbox-shim --bins)
proto="$(cri_proto "$ROOT")"

exec python3 "$ROOT/bench/cri.py" \
    --bin-dir "$CARGO_TARGET_DIR/release" --root "$ROOT" --proto "$proto" \
    --pods "${PODS:-50}" --parallel "${PARALLEL:-5}" --running "${RUNNING:-10}"
