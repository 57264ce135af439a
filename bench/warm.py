#!/usr/bin/env python3
"""Warm first starts: the Python HTTP app (examples/http-py, ~21 MB component) pushed to a
docker-registry on loopback, then, each run with a fresh store and a fresh compiled-code cache:

- `wasmbox pull` (which compiles the image's wasm into the cache), then `wasmbox serve IMAGE` to its
  first 200;
- `wasmbox pull --no-compile`, then `wasmbox serve IMAGE` to its first 200 (the first start
  compiles, as before compiling ahead);
- a warm start: `wasmbox serve IMAGE` again on the first store and cache, to its first 200.

Also `skopeo copy` plus `wasmtime compile` of the same image, against `wasmbox pull`.

Run through bench/warm.sh. Standard library only.
"""
import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr.decode()}")
    return time.perf_counter() - t


def first_200(cmd: list[str], env: dict[str, str], port: int) -> float:
    """Seconds from starting `cmd` (a server on `port`) to its first 200 to `GET /`."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        while True:
            if p.poll() is not None:
                sys.exit(f"failed: {' '.join(cmd)} exited with {p.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
                    if r.status == 200:
                        return time.perf_counter() - t
            except OSError:
                pass
            if time.perf_counter() - t > 300:
                sys.exit(f"failed: {' '.join(cmd)} never answered")
            time.sleep(0.01)
    finally:
        p.kill()
        p.wait()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--wasmbox", required=True)
    ap.add_argument("--wasmtime", required=True)
    ap.add_argument("--layout", required=True, help="OCI layout of the Python app")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="wasmbox-bench-warm-", dir=os.environ.get("TMPDIR", "/var/tmp"))
    reg = None
    try:
        addr = f"127.0.0.1:{free_port()}"
        cfg = os.path.join(work, "registry.yml")
        with open(cfg, "w") as f:
            f.write(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {work}/registry\n"
                    f"http:\n  addr: {addr}\n")
        reg = subprocess.Popen(["docker-registry", "serve", cfg],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", int(addr.split(":")[1])), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        image = f"{addr}/bench/http-py:1"
        subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
                        f"oci:{a.layout}", f"docker://{image}"], check=True)

        pull, ahead, cold, warm, peer = [], [], [], [], []
        for i in range(a.runs):
            run = os.path.join(work, f"run-{i}")
            os.makedirs(run)
            env = dict(os.environ, WASMBOX_CACHE_DIR=os.path.join(run, "cache"))
            store = os.path.join(run, "store")
            serve = [a.wasmbox, "--store", store, "serve"]
            # Compiled ahead at pull.
            pull.append(timed([a.wasmbox, "--store", store, "pull", image], env))
            port = free_port()
            ahead.append(first_200(serve + ["--addr", f"127.0.0.1:{port}", image], env, port))
            port = free_port()
            warm.append(first_200(serve + ["--addr", f"127.0.0.1:{port}", image], env, port))
            # Compiled at the first start.
            env2 = dict(os.environ, WASMBOX_CACHE_DIR=os.path.join(run, "cache2"))
            store2 = os.path.join(run, "store2")
            timed([a.wasmbox, "--store", store2, "pull", "--no-compile", image], env2)
            port = free_port()
            cold.append(first_200([a.wasmbox, "--store", store2, "serve", "--addr",
                                   f"127.0.0.1:{port}", image], env2, port))
            # The peer: skopeo copy, then wasmtime compile of the layer.
            oci = os.path.join(run, "oci")
            t = timed(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                       f"docker://{image}", f"oci:{oci}"], env)
            blobs = os.path.join(oci, "blobs", "sha256")
            wasm = max((os.path.join(blobs, b) for b in os.listdir(blobs)), key=os.path.getsize)
            t += timed([a.wasmtime, "compile", "-o", os.path.join(run, "app.cwasm"), wasm], env)
            peer.append(t)
            shutil.rmtree(run)

        med = statistics.median
        blobs = os.path.join(a.layout, "blobs", "sha256")
        mib = max(os.path.getsize(os.path.join(blobs, b)) for b in os.listdir(blobs)) / (1 << 20)
        print(f"machine: {os.cpu_count()} CPUs; registry: docker-registry on {addr}; image: the "
              f"Python app ({mib:.1f} MiB); {a.runs} runs, fresh store and cache each")
        print(f"  wasmbox pull (compiling)                 median {med(pull):6.2f} s")
        print(f"  skopeo copy + wasmtime compile           median {med(peer):6.2f} s   "
              f"ratio {med(pull) / med(peer):.2f} (goal <= 1.0)")
        print(f"  first 200 after pull                     median {med(ahead):6.2f} s")
        print(f"  first 200, warm start                    median {med(warm):6.2f} s   "
              f"ratio after pull / warm {med(ahead) / med(warm):.2f} (goal <= 1.3)")
        print(f"  first 200 after pull --no-compile        median {med(cold):6.2f} s   "
              f"(the first start compiles)")
    finally:
        if reg:
            reg.kill()
            reg.wait()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
