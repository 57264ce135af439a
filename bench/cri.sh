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
python3 -c 'import grpc, grpc_tools' 2>/dev/null ||
    python3 -m pip install --quiet grpcio==1.85.4 grpcio-tools==1.85.4

echo "building wasmbox (release) in $CARGO_TARGET_DIR ..." >&2
(cd "$ROOT" && cargo build --release --quiet -p wasmbox-shim --bins)
# The CRI API's proto, as the k8s-cri crate the tests use ships it.
proto="$(cd "$ROOT" && cargo metadata --format-version 1 --quiet |
    python3 -c 'import json, os, sys
p = [p for p in json.load(sys.stdin)["packages"] if p["name"] == "k8s-cri"][0]
print(os.path.join(os.path.dirname(p["manifest_path"]), "proto"))')"

exec python3 "$ROOT/bench/cri.py" \
    --bin-dir "$CARGO_TARGET_DIR/release" --root "$ROOT" --proto "$proto" \
    --pods "${PODS:-50}" --parallel "${PARALLEL:-5}" --running "${RUNNING:-10}"
