#!/usr/bin/env bash
# Rebuilds every example WebAssembly binary from source.
#
#   examples/build.sh          rebuild and update the committed .wasm files
#                              (and the generated net-probe bindings)
#   examples/build.sh --check  rebuild into a temporary directory and fail,
#                              naming each file, if anything committed differs
#
# Toolchain (installed on demand, versions pinned so output is reproducible):
#   - zig (PyPI package `ziglang`) as the C compiler for wasm32-wasi (preview 1)
#   - wit-bindgen-cli (crates.io) for the net-probe C bindings, installed into
#     $WASMBOX_TOOLS_DIR (default ~/.cache/wasmbox-tools)
#   - the `componentize` helper in examples/tools, which wraps a preview 1
#     module into a WASI 0.2 component with wasmtime's command adapter
#
# Environment:
#   CARGO_TARGET_DIR   cargo target dir (default ~/.cache/wasmbox-target)
#   WASMBOX_TOOLS_DIR  where wit-bindgen is installed (default ~/.cache/wasmbox-tools)
#   PYTHON             python interpreter used to run zig (default python3)
#   WASMBOX_SKIP_BINDGEN=1  use the committed net-probe bindings instead of
#                      running wit-bindgen (no wit-bindgen install needed)
set -euo pipefail

ZIGLANG_VERSION="0.17.1"
WIT_BINDGEN_VERSION="0.47.0"
STACK_SIZE=131072

CFLAGS=(--target=wasm32-wasi -O2 -s -Wall -Wextra -Werror "-Wl,-z,stack-size=${STACK_SIZE}")

EXAMPLES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT_DIR="$(dirname "$EXAMPLES_DIR")"
PYTHON="${PYTHON:-python3}"
TOOLS_DIR="${WASMBOX_TOOLS_DIR:-$HOME/.cache/wasmbox-tools}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/wasmbox-target}"

check=0
case "${1:-}" in
    "") ;;
    --check) check=1 ;;
    -h | --help)
        sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "usage: $0 [--check]" >&2
        exit 2
        ;;
esac

log() { echo "build.sh: $*" >&2; }

# --- toolchain -------------------------------------------------------------

ensure_zig() {
    local have
    have="$("$PYTHON" -m ziglang version 2>/dev/null || true)"
    if [[ "$have" != "$ZIGLANG_VERSION" ]]; then
        log "installing ziglang==${ZIGLANG_VERSION} from PyPI (found: ${have:-none})"
        "$PYTHON" -m pip install --quiet "ziglang==${ZIGLANG_VERSION}"
    fi
}

WIT_BINDGEN="$TOOLS_DIR/bin/wit-bindgen"
ensure_wit_bindgen() {
    local have=""
    if [[ -x "$WIT_BINDGEN" ]]; then
        have="$("$WIT_BINDGEN" --version | awk '{print $2}')"
    fi
    if [[ "$have" != "$WIT_BINDGEN_VERSION" ]]; then
        log "installing wit-bindgen-cli ${WIT_BINDGEN_VERSION} into $TOOLS_DIR"
        cargo install wit-bindgen-cli --version "=${WIT_BINDGEN_VERSION}" --locked \
            --no-default-features --features c --root "$TOOLS_DIR" --force --quiet
    fi
}

COMPONENTIZE="$CARGO_TARGET_DIR/release/componentize"
build_componentize() {
    log "building componentize (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    (cd "$ROOT_DIR" && cargo build --quiet -p wasmbox-example-tools --release)
}

cc_wasm() {
    "$PYTHON" -m ziglang cc "${CFLAGS[@]}" "$@"
}

# --- build -----------------------------------------------------------------

skip_bindgen="${WASMBOX_SKIP_BINDGEN:-0}"

ensure_zig
if [[ "$skip_bindgen" != 1 ]]; then
    ensure_wit_bindgen
fi
build_componentize

OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

# Paths (relative to examples/) of every generated file, built into $OUT.
OUTPUTS=(
    hello/hello.wasm
    files/files.wasm
    echo-server/echo.wasm
    hello-component/hello-component.wasm
    files/files-component.wasm
    net-probe/bindings/net_probe.c
    net-probe/bindings/net_probe.h
    net-probe/bindings/net_probe_component_type.o
    net-probe/net-probe.wasm
    http-hello/bindings/http_hello.c
    http-hello/bindings/http_hello.h
    http-hello/bindings/http_hello_component_type.o
    http-hello/http-hello.wasm
)
for f in "${OUTPUTS[@]}"; do mkdir -p "$OUT/$(dirname "$f")"; done

cd "$EXAMPLES_DIR"

log "hello"
cc_wasm -o "$OUT/hello/hello.wasm" hello/hello.c

log "files"
cc_wasm -o "$OUT/files/files.wasm" files/files.c

log "echo-server"
cc_wasm -o "$OUT/echo-server/echo.wasm" echo-server/echo.c

log "hello-component"
"$COMPONENTIZE" "$OUT/hello/hello.wasm" "$OUT/hello-component/hello-component.wasm"

log "files-component"
"$COMPONENTIZE" "$OUT/files/files.wasm" "$OUT/files/files-component.wasm"

log "net-probe"
if [[ "$skip_bindgen" == 1 ]]; then
    cp net-probe/bindings/net_probe.c net-probe/bindings/net_probe.h \
        net-probe/bindings/net_probe_component_type.o "$OUT/net-probe/bindings/"
else
    "$WIT_BINDGEN" c --out-dir "$OUT/net-probe/bindings" net-probe/wit >/dev/null 2>&1 ||
        "$WIT_BINDGEN" c --out-dir "$OUT/net-probe/bindings" net-probe/wit
fi
cc_wasm -I "$OUT/net-probe/bindings" -o "$OUT/net-probe/net-probe.core.wasm" \
    net-probe/net_probe_main.c \
    "$OUT/net-probe/bindings/net_probe.c" \
    "$OUT/net-probe/bindings/net_probe_component_type.o"
"$COMPONENTIZE" "$OUT/net-probe/net-probe.core.wasm" "$OUT/net-probe/net-probe.wasm"

log "http-hello"
if [[ "$skip_bindgen" == 1 ]]; then
    cp http-hello/bindings/http_hello.c http-hello/bindings/http_hello.h \
        http-hello/bindings/http_hello_component_type.o "$OUT/http-hello/bindings/"
else
    # The WASI 0.2.12 WIT gates wasi:clocks/timezone behind a feature the CLI world names.
    "$WIT_BINDGEN" c --features clocks-timezone --world http-hello \
        --out-dir "$OUT/http-hello/bindings" wit >/dev/null
fi
cc_wasm -mexec-model=reactor -I "$OUT/http-hello/bindings" \
    -o "$OUT/http-hello/http-hello.core.wasm" \
    http-hello/http_hello.c \
    "$OUT/http-hello/bindings/http_hello.c" \
    "$OUT/http-hello/bindings/http_hello_component_type.o"
"$COMPONENTIZE" --proxy "$OUT/http-hello/http-hello.core.wasm" "$OUT/http-hello/http-hello.wasm"

log "images/hello (OCI layout of hello.wasm as a wasm artifact)"
"$PYTHON" images/make-layout.py "$OUT/hello/hello.wasm" "$OUT/images/hello" \
    localhost/wasmbox/examples/hello:latest

log "images/http-hello (OCI layout of http-hello.wasm as a wasm artifact)"
"$PYTHON" images/make-layout.py "$OUT/http-hello/http-hello.wasm" "$OUT/images/http-hello" \
    localhost/wasmbox/examples/http-hello:latest

# The OCI layouts under images/ that the build writes.
LAYOUTS=(hello http-hello)

# --- install or compare ----------------------------------------------------

if [[ "$check" == 1 ]]; then
    failed=0
    for f in "${OUTPUTS[@]}"; do
        if [[ ! -f "$f" ]]; then
            echo "build.sh: missing: examples/$f" >&2
            failed=1
        elif ! cmp -s "$OUT/$f" "$f"; then
            echo "build.sh: differs from a fresh build: examples/$f" >&2
            failed=1
        fi
    done
    for l in "${LAYOUTS[@]}"; do
        if ! diff -r "$OUT/images/$l" "images/$l" >/dev/null 2>&1; then
            echo "build.sh: differs from a fresh build: examples/images/$l/" >&2
            failed=1
        fi
    done
    if [[ "$failed" != 0 ]]; then
        echo "build.sh: run examples/build.sh to regenerate" >&2
        exit 1
    fi
    log "all ${#OUTPUTS[@]} generated files and the layouts in examples/images match"
else
    for l in "${LAYOUTS[@]}"; do
        rm -rf "images/$l"
        cp -r "$OUT/images/$l" "images/$l"
    done
    for f in "${OUTPUTS[@]}"; do
        mkdir -p "$(dirname "$f")"
        install -m 0644 "$OUT/$f" "$f"
    done
    for f in "${OUTPUTS[@]}"; do
        if [[ "$f" == *.wasm ]]; then
            printf '%8d  %s  examples/%s\n' "$(wc -c <"$f")" "$(sha256sum "$f" | cut -c1-16)" "$f"
        fi
    done
fi
