#!/usr/bin/env bash
# The project's test command: installs what the tests need, then runs every check and test.
# Usable on a fresh machine; CI runs exactly this (see .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmbox-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }

step "toolchain: $(cargo --version)"
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy

step "system packages the tests use (containerd and runc, CNI plugins, a registry and its clients)"
missing=()
command -v containerd >/dev/null || missing+=(containerd)
command -v ctr >/dev/null || missing+=(containerd)
command -v runc >/dev/null || missing+=(runc)
[ -x /bin/busybox ] || missing+=(busybox-static)
command -v ip >/dev/null || missing+=(iproute2)
command -v script >/dev/null || missing+=(bsdutils)
command -v setpriv >/dev/null || missing+=(util-linux)
command -v prlimit >/dev/null || missing+=(util-linux)
command -v mount >/dev/null || missing+=(mount)
command -v mknod >/dev/null || missing+=(coreutils)
command -v docker-registry >/dev/null || missing+=(docker-registry)
command -v skopeo >/dev/null || missing+=(skopeo)
command -v umoci >/dev/null || missing+=(umoci)
command -v podman >/dev/null || missing+=(podman)
[ -x /usr/sbin/dockerd ] || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
command -v podman-compose >/dev/null || missing+=(podman-compose)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v tar >/dev/null || missing+=(tar)
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
command -v nsenter >/dev/null || missing+=(util-linux)
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
command -v protoc >/dev/null || missing+=(protobuf-compiler)
command -v cc >/dev/null || missing+=(gcc)
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || missing+=(libc6-dev)
if [ ${#missing[@]} -gt 0 ]; then
    as_root=()
    [ "$(id -u)" = 0 ] || as_root=(sudo)
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq "${missing[@]}"
fi

step "Python packages the tests use (h2 for the HTTP/2 clients in tests/clients, prometheus_client's parser, opentelemetry-proto for the OTLP receiver)"
python3 -c 'import h2' 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check h2
python3 -c 'import prometheus_client' 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check prometheus-client==0.21.1
python3 -c 'import opentelemetry.proto.collector.trace.v1.trace_service_pb2' 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check opentelemetry-proto==1.29.0

step "third-party programs the tests run (svg-flatten, C++ for WASI, from PyPI)"
fixtures="${WASMBOX_FIXTURES_DIR:-$HOME/.cache/wasmbox-fixtures}"
export WASMBOX_SVG_FLATTEN="$fixtures/svg-flatten-3.1.9.wasm"
svg_flatten_sha256=96d12caaa84428b0262d87e93024a561663b4046dd9e47d2cbc1978f4b1fc8d7
if ! echo "$svg_flatten_sha256  $WASMBOX_SVG_FLATTEN" | sha256sum -c --status 2>/dev/null; then
    mkdir -p "$fixtures"
    wheel_dir="$(mktemp -d)"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps -d "$wheel_dir" \
        svg-flatten-wasi==3.1.9
    python3 - "$wheel_dir" "$WASMBOX_SVG_FLATTEN.part" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("svg_flatten_wasi/svg-flatten.wasm"))
PY
    rm -rf "$wheel_dir"
    echo "$svg_flatten_sha256  $WASMBOX_SVG_FLATTEN.part" | sha256sum -c --quiet
    mv "$WASMBOX_SVG_FLATTEN.part" "$WASMBOX_SVG_FLATTEN"
fi

step "format"
cargo fmt --all -- --check

step "example guests are reproducible from their sources"
WASMBOX_SKIP_BINDGEN=1 bash examples/build.sh --check

step "examples built here, not committed (the Python and JavaScript HTTP components)"
bash examples/http-py/build.sh
bash examples/http-js/build.sh

step "clippy"
cargo clippy --workspace --all-targets --features wasmbox-shim/agent -- -D warnings

step "binaries the end-to-end tests drive"
cargo build --workspace --bins --features wasmbox-shim/agent

step "WASI testsuite, preview 1 (72 tests)"
bash tests/wasi-testsuite/run.sh p1 "$CARGO_TARGET_DIR/debug/wasmbox"

# The WASI 0.3 baseline: `wasmtime` of the line wasmbox embeds, with what the suite needs (run,
# serve, WASI 0.3, wasi:http), built once into a directory of its own outside the clone.
wasmtime_version=48.0.8
tools="${WASMBOX_TOOLS_DIR:-$HOME/.cache/wasmbox-tools}"
if ! "$tools/bin/wasmtime" --version 2>/dev/null | grep -qE "^wasmtime $wasmtime_version( |\$)"; then
    step "wasmtime CLI $wasmtime_version (the WASI 0.3 baseline), built once into $tools"
    CARGO_TARGET_DIR="$tools/target" cargo install --quiet --locked --force \
        --root "$tools" wasmtime-cli --version "=$wasmtime_version" --no-default-features \
        --features run,serve,wasi-http,component-model,component-model-async,cranelift,parallel-compilation,pooling-allocator
    rm -rf "$tools/target"
fi

step "WASI testsuite, WASI 0.3 (wasmbox beside wasmtime $wasmtime_version)"
bash tests/wasi-testsuite/run.sh p3 "$CARGO_TARGET_DIR/debug/wasmbox" "$tools/bin/wasmtime"

step "tests"
cargo test --workspace --features wasmbox-shim/agent
