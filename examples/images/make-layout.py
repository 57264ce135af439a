#!/usr/bin/env python3
"""Writes a wasm OCI artifact (CNCF wasm config, one application/wasm layer) as an OCI image
layout directory, deterministically: make-layout.py IN.wasm OUT_DIR REFERENCE"""
import hashlib
import json
import os
import shutil
import sys


def main():
    wasm_path, out, ref = sys.argv[1:4]
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(os.path.join(out, "blobs", "sha256"))

    def blob(data: bytes, media_type: str) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(out, "blobs", "sha256", digest), "wb") as f:
            f.write(data)
        return {"mediaType": media_type, "digest": "sha256:" + digest, "size": len(data)}

    def dumps(v) -> bytes:
        return json.dumps(v, sort_keys=True, separators=(",", ":")).encode()

    with open(wasm_path, "rb") as f:
        wasm = f.read()
    component = wasm[4:8] != b"\x01\x00\x00\x00"
    config = {"architecture": "wasm", "os": "wasip2" if component else "wasip1", "layerDigests": []}
    layer = blob(wasm, "application/wasm")
    config["layerDigests"] = [layer["digest"]]
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.wasm.config.v0+json",
        "config": blob(dumps(config), "application/vnd.wasm.config.v0+json"),
        "layers": [layer],
    }
    m = blob(dumps(manifest), "application/vnd.oci.image.manifest.v1+json")
    m["annotations"] = {"org.opencontainers.image.ref.name": ref}
    with open(os.path.join(out, "index.json"), "wb") as f:
        f.write(dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [m]}))
    with open(os.path.join(out, "oci-layout"), "wb") as f:
        f.write(dumps({"imageLayoutVersion": "1.0.0"}))


if __name__ == "__main__":
    main()
