#!/usr/bin/env bash
# Image benchmarks (see bench/README.md):
#  1. pull of a ~20 MiB component image from a local registry: `wasmbox pull` against
#     `skopeo copy docker://... oci:DIR`, interleaved, fresh destination every run;
#  2. time to first output: `wasmbox run IMAGE` (image in the store) against
#     `wasmbox run FILE.wasm` of the same module, compiled-code cache warm for both.
#
# Environment: RUNS (pull runs, default 10), FTO_RUNS (first-output runs, default 20),
# MIB (size of the big image, default 20), CARGO_TARGET_DIR, TMPDIR.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmbox-target}"
for tool in docker-registry skopeo; do
    if ! command -v "$tool" >/dev/null; then
        echo "installing $tool ..." >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool"
    fi
done
echo "building wasmbox (release) in $CARGO_TARGET_DIR ..." >&2
(cd "$ROOT" && cargo build --release --quiet -p wasmbox-shim)
exec python3 "$ROOT/bench/images.py" --wasmbox "$CARGO_TARGET_DIR/release/wasmbox" --root "$ROOT" \
    --runs "${RUNS:-10}" --fto-runs "${FTO_RUNS:-20}" --mib "${MIB:-20}"
