#!/usr/bin/env bash
# Builds examples/http-js/http-js.wasm from app.js with componentize-js (npm), whose
# StarlingMonkey engine implements wasi:http 0.2.10: the WIT files of examples/wit are copied and
# relabelled to that version for the build. The component embeds SpiderMonkey (about 13 MB) and
# is built here, not committed; tests/run.sh runs this first.
#
# Environment:
#   WASMBOX_TOOLS_DIR  where componentize-js is installed (default ~/.cache/wasmbox-tools)
set -euo pipefail

COMPONENTIZE_JS_VERSION="0.23.0"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOOLS="${WASMBOX_TOOLS_DIR:-$HOME/.cache/wasmbox-tools}/componentize-js-$COMPONENTIZE_JS_VERSION"
OUT="$HERE/http-js.wasm"

# Up to date: nothing to do.
if [[ -f "$OUT" && "$OUT" -nt "$HERE/app.js" && "$OUT" -nt "$HERE/build.sh" ]]; then
    exit 0
fi
command -v node >/dev/null || { echo "http-js: node (Debian's nodejs) is needed" >&2; exit 1; }
if [ ! -f "$TOOLS/node_modules/@bytecodealliance/componentize-js/package.json" ]; then
    echo "http-js: installing @bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION from npm" >&2
    mkdir -p "$TOOLS"
    npm install --silent --no-audit --no-fund --prefix "$TOOLS" \
        "@bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION"
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cp -r "$HERE/../wit" "$tmp/wit"
sed -i -e 's/@0\.2\.12/@0.2.10/g' -e 's/version = 0\.2\.1[12])/version = 0.2.10)/g' \
    "$tmp"/wit/*.wit "$tmp"/wit/deps/*.wit
cp "$HERE/app.js" "$tmp/"
# Run from the tools directory, so that node finds componentize-js; the paths it is given are
# relative to $tmp, its working directory (its WIT reader sees only that directory).
cat >"$TOOLS/build-http-js.mjs" <<'JS'
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';
const { component } = await componentize({
  sourcePath: 'app.js',
  witPath: 'wit',
  worldName: 'wasi:http/proxy@0.2.10',
});
await writeFile('out.wasm', component);
JS
(cd "$tmp" && node "$TOOLS/build-http-js.mjs" >&2)
mv "$tmp/out.wasm" "$OUT"
