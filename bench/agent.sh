#!/usr/bin/env bash
# `wasmbox agent` on a node (see bench/agent.py and bench/README.md): CRI PullImage of the Python
# app, the agent compiling it, and pods of it started at once and on the warm node.
#
# Needs root. Installs what is missing (containerd, CNI plugins, docker-registry, skopeo, gcc for
# the pause binary, grpcio from PyPI), builds wasmbox (release, with the agent), then runs
# bench/agent.py.
#
# Environment: RUNS (default 3), CARGO_TARGET_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmbox-target}"

missing=()
command -v containerd >/dev/null || missing+=(containerd)
command -v ip >/dev/null || missing+=(iproute2)
command -v nsenter >/dev/null || missing+=(util-linux)
command -v cc >/dev/null || missing+=(gcc)
command -v docker-registry >/dev/null || missing+=(docker-registry)
command -v skopeo >/dev/null || missing+=(skopeo)
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || missing+=(libc6-dev)
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
# shellcheck source=bench/packages.sh
source "$ROOT/bench/packages.sh"
install_missing "${missing[@]}"
cri_python

echo "building wasmbox (release, with the agent) in $CARGO_TARGET_DIR ..." >&2
(cd "$ROOT" && cargo build --release --quiet -p wasmbox-shim --bins --features agent)
bash "$ROOT/examples/http-py/build.sh"
proto="$(cri_proto "$ROOT")"

exec python3 "$ROOT/bench/agent.py" --bin-dir "$CARGO_TARGET_DIR/release" --root "$ROOT" \
    --proto "$proto" --layout "$ROOT/examples/images/http-py" --runs "${RUNS:-3}"
