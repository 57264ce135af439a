#!/usr/bin/env bash
# Builds examples/http-py/http-py.wasm from app.py with componentize-py (PyPI), against the
# wasi:http WIT files in examples/wit, and its image, the OCI layout examples/images/http-py. The
# component embeds CPython and its standard library (about 22 MB) and differs in its bytes from
# build to build, so both are built here, not committed; tests/run.sh and bench/http.sh run this
# first.
#
# Environment:
#   PYTHON  python interpreter used to install and run componentize-py (default python3)
set -euo pipefail

COMPONENTIZE_PY_VERSION="0.25.1"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
OUT="$HERE/http-py.wasm"
LAYOUT="$HERE/../images/http-py"

if ! "$PYTHON" -m pip show componentize-py 2>/dev/null | grep -qx "Version: $COMPONENTIZE_PY_VERSION"; then
    echo "http-py: installing componentize-py==$COMPONENTIZE_PY_VERSION from PyPI" >&2
    "$PYTHON" -m pip install --quiet "componentize-py==$COMPONENTIZE_PY_VERSION"
fi
# Up to date: nothing to do.
if [[ -f "$OUT" && "$OUT" -nt "$HERE/app.py" && "$OUT" -nt "$HERE/../wit/deps/http.wit" &&
    -f "$LAYOUT/index.json" && "$LAYOUT/index.json" -nt "$OUT" ]]; then
    exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cp "$HERE/app.py" "$tmp/"
# The console script pip installed beside the interpreter.
tool="$("$PYTHON" -c 'import os, sys; print(os.path.join(os.path.dirname(sys.executable), "componentize-py"))')"
(cd "$tmp" && PYTHONDONTWRITEBYTECODE=1 "$tool" \
    -d "$HERE/../wit" -w wasi:http/proxy@0.2.12 componentize -p "$tmp" app -o "$tmp/out.wasm" >&2)
mv "$tmp/out.wasm" "$OUT"
"$PYTHON" "$HERE/../images/make-layout.py" "$OUT" "$LAYOUT" localhost/wasmbox/examples/http-py:latest
