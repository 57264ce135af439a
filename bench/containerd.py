#!/usr/bin/env python3
"""containerd benchmark (run through bench/containerd.sh):

(a) `ctr run --rm` of hello: wasm through io.containerd.wasmbox.v1 against busybox `echo` through
    io.containerd.runc.v2, interleaved, median of RUNS each;
(b) tasks per second: TASKS `ctr run --rm` per runtime, PARALLEL at a time;
(c) memory: IDLE sleeping wasm containers in one group (one shim), then IDLE with one shim each;
    total RSS of the shim processes divided by IDLE.
"""
import argparse
import concurrent.futures
import hashlib
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

WASMBOX_RT = "io.containerd.wasmbox.v1"
RUNC_RT = "io.containerd.runc.v2"
HELLO = "localhost/bench/hello:1"
FILES = "localhost/bench/files:1"
BUSYBOX = "localhost/bench/busybox:1"


class Containerd:
    def __init__(self, bin_dir):
        self.dir = tempfile.mkdtemp(prefix="wbbench", dir="/tmp")
        self.sock = os.path.join(self.dir, "c.sock")
        self.ns = f"wbbench-{os.getpid()}"
        with open(os.path.join(self.dir, "config.toml"), "w") as f:
            f.write(f"""version = 2
root = "{self.dir}/root"
state = "{self.dir}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
""")
        env = dict(os.environ)
        env["PATH"] = f"{bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        env["WASMBOX_CACHE_DIR"] = os.path.join(self.dir, "cache")
        self.log = open(os.path.join(self.dir, "containerd.log"), "w")
        self.proc = subprocess.Popen(["containerd", "--config", os.path.join(self.dir, "config.toml")],
                                     stdout=self.log, stderr=self.log, env=env)
        for _ in range(600):
            if self.ctr("version", check=False).returncode == 0:
                return
            time.sleep(0.05)
        sys.exit("containerd did not start")

    def ctr(self, *args, check=True, stdin=subprocess.DEVNULL):
        r = subprocess.run(["ctr", "--address", self.sock, "--namespace", self.ns, *args],
                           stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if check and r.returncode != 0:
            sys.exit(f"ctr {' '.join(args)} failed: {r.stderr.decode()}")
        return r

    def shims(self, name):
        return shims(self.sock, name)

    def cleanup_tasks(self):
        ids = self.ctr("task", "ls", "-q", check=False).stdout.decode().split()
        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            list(ex.map(lambda i: self.ctr("task", "kill", "-a", "-s", "SIGKILL", i, check=False), ids))
        time.sleep(0.5)
        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            list(ex.map(lambda i: self.ctr("task", "delete", "-f", i, check=False), ids))
        cs = self.ctr("containers", "ls", "-q", check=False).stdout.decode().split()
        with concurrent.futures.ThreadPoolExecutor(16) as ex:
            list(ex.map(lambda i: self.ctr("containers", "rm", i, check=False), cs))

    def close(self):
        self.cleanup_tasks()
        stop(self.proc, self.sock, self.dir)


def shims(sock, name):
    """Pids of the shim processes named `name` serving the containerd at `sock`."""
    pids = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            cmd = open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].decode(errors="replace").endswith(name) and sock.encode() in cmd:
            pids.append(int(p))
    return pids


def stop(proc, sock, workdir):
    """Stops a containerd of the benchmark's own: the daemon, its shims, its mounts, its files."""
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    for name in ("containerd-shim-wasmbox-v1", "containerd-shim-runc-v2"):
        for pid in shims(sock, name):
            os.kill(pid, signal.SIGKILL)
    mounts = [l.split()[4] for l in open("/proc/self/mountinfo") if l.split()[4].startswith(workdir)]
    for m in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", m], stderr=subprocess.DEVNULL)
    shutil.rmtree(workdir, ignore_errors=True)


def image_archive(path, name, files, links, config):
    """An OCI archive holding one single-layer image `name`: `files` are (path in the layer, file
    on the host), `links` (path, target) symbolic links; `config` gets the layer's diff id."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        for arcname, src in files:
            t.add(src, arcname=arcname)
        for arcname, target in links:
            i = tarfile.TarInfo(arcname)
            i.type = tarfile.SYMTYPE
            i.linkname = target
            t.addfile(i)
    blobs = {}

    def put(b, media):
        d = "sha256:" + hashlib.sha256(b).hexdigest()
        blobs[d] = b
        return {"mediaType": media, "digest": d, "size": len(b)}

    ld = put(layer.getvalue(), "application/vnd.oci.image.layer.v1.tar")
    config = dict(config, rootfs={"type": "layers", "diff_ids": [ld["digest"]]})
    cd = put(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
    md = put(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                         "config": cd, "layers": [ld]}).encode(), "application/vnd.oci.image.manifest.v1+json")
    md["annotations"] = {"io.containerd.image.name": name,
                         "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}
    with tarfile.open(path, "w") as t:
        def add(n, b):
            i = tarfile.TarInfo(n)
            i.size = len(b)
            t.addfile(i, io.BytesIO(b))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", json.dumps({"schemaVersion": 2, "manifests": [md]}).encode())
        for d, b in blobs.items():
            add("blobs/sha256/" + d.split(":")[1], b)
    return path


def busybox_archive(path):
    """An OCI archive with a single-layer busybox image (static, from busybox-static)."""
    return image_archive(path, BUSYBOX, [("bin/busybox", "/bin/busybox")],
                         [(f"bin/{a}", "busybox") for a in ("echo", "sleep", "sh")],
                         {"os": "linux", "architecture": "amd64",
                          "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]}})


def single_file_archive(path, name, src, arcname, entrypoint):
    """An OCI archive whose one layer holds the native program `src` at `/arcname`."""
    return image_archive(path, name, [(arcname, src)], [],
                         {"os": "linux", "architecture": "amd64", "config": {"Entrypoint": entrypoint}})


def wasm_archives(wasmbox, examples, workdir):
    store = os.path.join(workdir, "store")
    out = []
    for name, wasm in ((HELLO, "hello/hello.wasm"), (FILES, "files/files.wasm")):
        archive = os.path.join(workdir, name.split("/")[-1].replace(":", "-") + ".tar")
        for args in (["build", "--format", "compat", os.path.join(examples, wasm), "-t", name],
                     ["save", "-o", archive, name]):
            subprocess.run([wasmbox, "--store", store, *args], check=True, stdout=subprocess.DEVNULL)
        out.append(archive)
    return out


def run_rm(c, runtime, image, cid, args, want):
    t = time.perf_counter()
    r = c.ctr("run", "--rm", "--runtime", runtime, image, cid, *args, check=False)
    dt = time.perf_counter() - t
    if r.returncode != 0 or want not in r.stdout:
        sys.exit(f"{runtime} {cid}: exit {r.returncode}, stdout {r.stdout!r}, stderr {r.stderr.decode()}")
    return dt


WASM_ARGS = ([], b"Hello from wasmbox!")
NATIVE_ARGS = (["echo", "Hello from busybox"], b"Hello from busybox")


def bench_run(c, runs):
    wasm, native = [], []
    for i in range(2):
        run_rm(c, WASMBOX_RT, HELLO, f"warm-w{i}", *WASM_ARGS)
        run_rm(c, RUNC_RT, BUSYBOX, f"warm-n{i}", *NATIVE_ARGS)
    for i in range(runs):
        order = [("w", wasm), ("n", native)]
        if i % 2:
            order.reverse()
        for kind, acc in order:
            if kind == "w":
                acc.append(run_rm(c, WASMBOX_RT, HELLO, f"a-w{i}", *WASM_ARGS))
            else:
                acc.append(run_rm(c, RUNC_RT, BUSYBOX, f"a-n{i}", *NATIVE_ARGS))
    return statistics.median(wasm), statistics.median(native)


def bench_throughput(c, tasks, parallel, runtime, tag):
    image, args = (HELLO, WASM_ARGS) if runtime == WASMBOX_RT else (BUSYBOX, NATIVE_ARGS)
    t = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(parallel) as ex:
        list(ex.map(lambda i: run_rm(c, runtime, image, f"b-{tag}{i}", *args), range(tasks)))
    return tasks / (time.perf_counter() - t)


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def bench_memory(c, idle, grouped):
    tag = "g" if grouped else "s"
    flags = ["--annotation", "io.containerd.runc.v2.group=bench-idle"] if grouped else []

    def start(i):
        c.ctr("run", "-d", "--null-io", "--runtime", WASMBOX_RT, *flags, FILES, f"m-{tag}{i}",
              "/app.wasm", "sleep", "3600000")

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        list(ex.map(start, range(idle)))
    running = [l for l in c.ctr("task", "ls").stdout.decode().splitlines() if l.endswith("RUNNING")]
    if len(running) != idle:
        sys.exit(f"expected {idle} running containers, found {len(running)}")
    time.sleep(1)
    shims = c.shims("containerd-shim-wasmbox-v1")
    total = sum(rss_kib(p) for p in shims)
    c.cleanup_tasks()
    return len(shims), total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--examples", required=True)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--parallel", type=int, default=10)
    ap.add_argument("--idle", type=int, default=100)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("containerd.py needs root (containerd, runc and mounts)")
    work = tempfile.mkdtemp(prefix="wbbench-img")
    c = Containerd(a.bin_dir)
    try:
        for archive in wasm_archives(os.path.join(a.bin_dir, "wasmbox"), a.examples, work):
            c.ctr("images", "import", archive)
        bb = os.path.join(work, "busybox.tar")
        busybox_archive(bb)
        c.ctr("images", "import", bb)

        w, n = bench_run(c, a.runs)
        print(f"(a) ctr run --rm, median of {a.runs}: wasmbox hello {w*1000:.1f} ms, "
              f"runc busybox echo {n*1000:.1f} ms, ratio {w/n:.3f} (goal <= 0.5)")

        tw = bench_throughput(c, a.tasks, a.parallel, WASMBOX_RT, "w")
        tn = bench_throughput(c, a.tasks, a.parallel, RUNC_RT, "n")
        tw2 = bench_throughput(c, a.tasks, a.parallel, WASMBOX_RT, "w2")
        tn2 = bench_throughput(c, a.tasks, a.parallel, RUNC_RT, "n2")
        wm, nm = statistics.median([tw, tw2]), statistics.median([tn, tn2])
        print(f"(b) {a.tasks} tasks, {a.parallel} at a time (two rounds each, interleaved): "
              f"wasmbox {tw:.1f}/{tw2:.1f} tasks/s, runc {tn:.1f}/{tn2:.1f} tasks/s, "
              f"ratio {wm/nm:.2f}x (goal >= 3x)")

        shims, kib = bench_memory(c, a.idle, grouped=True)
        print(f"(c) {a.idle} idle wasm containers in one group: {shims} shim process(es), "
              f"total RSS {kib/1024:.1f} MiB, {kib/1024/a.idle:.2f} MiB per container (goal <= 2 MiB)")
        shims, kib = bench_memory(c, a.idle, grouped=False)
        print(f"(c) {a.idle} idle wasm containers, one shim each: {shims} shim processes, "
              f"total RSS {kib/1024:.1f} MiB, {kib/1024/a.idle:.2f} MiB per container")
    finally:
        c.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
