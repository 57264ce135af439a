#!/usr/bin/env python3
"""Image benchmarks: wasmbox pull vs skopeo copy, and time to first output of an image vs a file.
Run through bench/images.sh."""
import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def leb(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def big_component(src, dst, mib):
    """The hello component plus a custom section of incompressible bytes, to reach ~mib MiB."""
    wasm = open(src, "rb").read()
    name = b"wasmbox-bench-padding"
    payload = os.urandom(mib << 20)
    body = leb(len(name)) + name + payload
    open(dst, "wb").write(wasm + b"\x00" + leb(len(body)) + body)


def timed(cmd, env=None):
    t = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr.decode()}")
    return dt


def first_output(cmd):
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    first = p.stdout.read(1)
    dt = time.perf_counter() - t
    p.stdout.read()
    if p.wait() != 0 or not first:
        sys.exit(f"failed: {' '.join(cmd)}")
    return dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wasmbox", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--fto-runs", type=int, default=20)
    ap.add_argument("--mib", type=int, default=20)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="wasmbox-bench-images-")
    reg = None
    try:
        port = free_port()
        addr = f"127.0.0.1:{port}"
        cfg = os.path.join(work, "registry.yml")
        open(cfg, "w").write(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {work}/registry\nhttp:\n  addr: {addr}\n")
        reg = subprocess.Popen(["docker-registry", "serve", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        big = os.path.join(work, "big.wasm")
        big_component(os.path.join(a.root, "examples/hello-component/hello-component.wasm"), big, a.mib)
        layout = os.path.join(work, "layout")
        subprocess.run([sys.executable, os.path.join(a.root, "examples/images/make-layout.py"), big, layout, "bench/big:1"], check=True)
        image = f"{addr}/bench/big:1"
        subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}", f"docker://{image}"], check=True)
        size = os.path.getsize(big)

        wb, sk = [], []
        for i in range(a.runs):
            store = os.path.join(work, f"store-{i}")
            oci = os.path.join(work, f"oci-{i}")
            pair = [
                (wb, [a.wasmbox, "--store", store, "pull", "--no-compile", image]),
                (sk, ["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{image}", f"oci:{oci}"]),
            ]
            if i % 2:
                pair.reverse()
            for out, cmd in pair:
                out.append(timed(cmd))
            shutil.rmtree(store)
            shutil.rmtree(oci)

        # Time to first output: the same module as a file and as an image in the store.
        hello = os.path.join(a.root, "examples/hello/hello.wasm")
        store = os.path.join(work, "fto-store")
        cache = os.path.join(work, "fto-cache")
        env = dict(os.environ, WASMBOX_CACHE_DIR=cache)
        subprocess.run([a.wasmbox, "--store", store, "load", "-i", os.path.join(a.root, "examples/images/hello")], check=True, stdout=subprocess.DEVNULL)
        ref = "localhost/wasmbox/examples/hello:latest"
        os.environ["WASMBOX_CACHE_DIR"] = cache
        img_cmd = [a.wasmbox, "--store", store, "run", ref]
        file_cmd = [a.wasmbox, "run", hello]
        first_output(img_cmd), first_output(file_cmd)  # warm both
        fi, ff = [], []
        for i in range(a.fto_runs):
            pair = [(fi, img_cmd), (ff, file_cmd)]
            if i % 2:
                pair.reverse()
            for out, cmd in pair:
                out.append(first_output(cmd))

        ms = lambda xs: statistics.median(xs) * 1000
        print(f"machine:  {os.cpu_count()} CPUs; registry: docker-registry on {addr}; image: {size / (1 << 20):.1f} MiB component")
        print(f"pull ({a.runs} runs, interleaved, fresh destination each run)")
        print(f"  wasmbox pull        median {ms(wb):8.1f} ms   (min {min(wb) * 1000:.1f}, max {max(wb) * 1000:.1f})")
        print(f"  skopeo copy to oci: median {ms(sk):8.1f} ms   (min {min(sk) * 1000:.1f}, max {max(sk) * 1000:.1f})")
        r = ms(wb) / ms(sk)
        print(f"  ratio wasmbox/skopeo {r:.3f}  goal <= 1.0  {'PASS' if r <= 1.0 else 'MISS'}")
        print(f"time to first output ({a.fto_runs} runs, interleaved, compiled-code cache warm)")
        print(f"  wasmbox run IMAGE      median {ms(fi):6.1f} ms")
        print(f"  wasmbox run FILE.wasm  median {ms(ff):6.1f} ms")
        r = ms(fi) / ms(ff)
        print(f"  ratio image/file {r:.3f}  goal <= 1.2  {'PASS' if r <= 1.2 else 'MISS'}")
    finally:
        if reg:
            reg.kill()
            reg.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
