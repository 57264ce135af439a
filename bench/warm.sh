#!/usr/bin/env bash
# Warm first starts (see bench/README.md): the Python app pushed to a local docker-registry;
# `wasmbox pull` (compiling ahead) then `serve` to its first 200, against a warm start, against
# `pull --no-compile` then `serve` (the first start compiles), and `wasmbox pull` against
# `skopeo copy` plus `wasmtime compile`.
#
# Environment: RUNS (default 5), CARGO_TARGET_DIR, WASMBOX_TOOLS_DIR, TMPDIR (where stores and
# caches go; default /var/tmp, a disk, as /var/cache is).
set -euo pipefail

# shellcheck source=bench/wasmtime-peer.sh
source "$(dirname "${BASH_SOURCE[0]}")/wasmtime-peer.sh"
# shellcheck source=bench/packages.sh
source "$(dirname "${BASH_SOURCE[0]}")/packages.sh"
for tool in docker-registry skopeo; do
    command -v "$tool" >/dev/null || install_missing "$tool"
done
"$WASMTIME" --version 2>/dev/null | grep -qE "^wasmtime $WASMTIME_VERSION( |\$)" || install_wasmtime
bash "$ROOT/examples/http-py/build.sh"
exec python3 "$ROOT/bench/warm.py" --wasmbox "$WASMBOX" --wasmtime "$WASMTIME" \
    --layout "$ROOT/examples/images/http-py" --runs "${RUNS:-5}"
