#!/usr/bin/env python3
"""OCI runtime benchmark (run through bench/oci.sh): wasmbox as podman's and Docker's runtime,
against runc, in the same run.

(a) `podman run --rm` of hello (wasm, through wasmbox) against busybox `echo` (through runc),
    interleaved, median of RUNS each;
(b) the same with `docker run --rm` (dockerd 20.10 started for the run, wasmbox added as a
    runtime);
(c) memory per idle container: IDLE `podman run -d` of a sleeping guest through wasmbox against
    IDLE of busybox `sleep` through runc; the PSS of each container's processes (the container's
    process and its children) plus its conmon, averaged.

Images are made by `import` of a root filesystem tarball (the wasm at /app.wasm, or busybox), so
both engines see a linux/amd64 image and no registry is needed.
"""
import argparse
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]


def rootfs_tar(files):
    """A tarball of `files` ({path: (bytes, mode)}, symlinks as ("->", target))."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for path, (data, mode) in files.items():
            info = tarfile.TarInfo(path)
            if data == "->":
                info.type = tarfile.SYMTYPE
                info.linkname = mode
            else:
                info.size = len(data)
                info.mode = mode
            t.addfile(info, None if data == "->" else io.BytesIO(data))
    return buf.getvalue()


def run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def must(cmd, **kw):
    r = run(cmd, **kw)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r.stdout


def timed(cmd):
    t = time.monotonic()
    r = run(cmd)
    took = time.monotonic() - t
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return took


def pss_kib(pid):
    """PSS of process `pid` and its descendants, in KiB."""
    total = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return total


def interleaved(runs, a, b):
    ta, tb = [], []
    for _ in range(runs):
        ta.append(timed(a))
        tb.append(timed(b))
    return statistics.median(ta), statistics.median(tb)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wasmbox", required=True)
    ap.add_argument("--hello", required=True, help="hello.wasm")
    ap.add_argument("--files", required=True, help="files.wasm (its `sleep MS` idles)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--idle", type=int, default=20)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="wboci", dir="/tmp")
    busybox = open("/bin/busybox", "rb").read()
    tars = {
        "hello": rootfs_tar({"app.wasm": (open(a.hello, "rb").read(), 0o755)}),
        "files": rootfs_tar({"app.wasm": (open(a.files, "rb").read(), 0o755)}),
        "busybox": rootfs_tar({"bin/busybox": (busybox, 0o755), "bin/sh": ("->", "busybox")}),
    }
    paths = {}
    for name, data in tars.items():
        paths[name] = os.path.join(work, f"{name}.tar")
        with open(paths[name], "wb") as f:
            f.write(data)

    podman = ["podman", "--root", f"{work}/pm/root", "--runroot", f"{work}/pm/run",
              "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
    for name in ["hello", "files"]:
        must(podman + ["import", "-q", "--change", 'ENTRYPOINT ["/app.wasm"]', paths[name],
                       f"localhost/bench/{name}"])
    must(podman + ["import", "-q", paths["busybox"], "localhost/bench/busybox"])
    pm_run = podman + ["run", "--rm", "--network", "none"] + ULIMITS
    wasm = pm_run[:1] + ["--runtime", a.wasmbox] + pm_run[1:] + ["localhost/bench/hello"]
    native = pm_run[:1] + ["--runtime", "/usr/bin/runc"] + pm_run[1:] + [
        "localhost/bench/busybox", "/bin/busybox", "echo", "hello"]
    # Warm: the first run compiles the module into the cache.
    timed(wasm)
    timed(native)
    pw, pr = interleaved(a.runs, wasm, native)
    print(f"(a) podman run --rm: wasmbox {pw * 1000:.0f} ms, runc {pr * 1000:.0f} ms, "
          f"ratio {pw / pr:.2f} (median of {a.runs}, interleaved)", flush=True)

    # (b) docker
    d = os.path.join(work, "docker")
    host = f"unix://{d}/docker.sock"
    os.makedirs(d)
    log = open(os.path.join(d, "dockerd.log"), "w")
    dockerd = subprocess.Popen(["/usr/sbin/dockerd", "--data-root", f"{d}/data", "--exec-root",
                                f"{d}/exec", "--pidfile", f"{d}/pid", "-H", host,
                                "--iptables=false", "--bridge=none", "--storage-driver", "vfs",
                                "--add-runtime", f"wasmbox={a.wasmbox}"], stdout=log, stderr=log)
    docker = ["/usr/bin/docker", "-H", host]
    try:
        for _ in range(900):
            if run(docker + ["version"]).returncode == 0:
                break
            time.sleep(0.1)
        else:
            sys.exit("dockerd did not start")
        must(docker + ["import", "--change", 'ENTRYPOINT ["/app.wasm"]', paths["hello"],
                       "localhost/bench/hello"])
        must(docker + ["import", paths["busybox"], "localhost/bench/busybox"])
        dk = docker + ["run", "--rm", "--network", "none"]
        wasm = dk + ["--runtime", "wasmbox", "localhost/bench/hello"]
        native = dk + ["--runtime", "runc", "localhost/bench/busybox", "/bin/busybox", "echo", "hi"]
        timed(wasm)
        timed(native)
        dw, dr = interleaved(a.runs, wasm, native)
        print(f"(b) docker run --rm: wasmbox {dw * 1000:.0f} ms, runc {dr * 1000:.0f} ms, "
              f"ratio {dw / dr:.2f} (median of {a.runs}, interleaved)", flush=True)
    finally:
        for cid in run(docker + ["ps", "-aq"]).stdout.split():
            run(docker + ["rm", "-f", cid])
        dockerd.terminate()
        dockerd.wait()

    # (c) memory per idle container
    def idle(runtime, image, args):
        ids = []
        for _ in range(a.idle):
            ids.append(must(podman + ["run", "-d", "--network", "none", "--runtime", runtime]
                            + ULIMITS + [image] + args).strip())
        total = 0
        for cid in ids:
            pid = int(must(podman + ["inspect", "-f", "{{.State.Pid}}", cid]))
            conmon = int(must(podman + ["inspect", "-f", "{{.State.ConmonPid}}", cid]))
            total += pss_kib(pid) + pss_kib(conmon)
        for cid in ids:
            run(podman + ["rm", "-f", "-t", "0", cid])
        return total / len(ids)

    mw = idle(a.wasmbox, "localhost/bench/files", ["sleep", "600000"])
    mr = idle("/usr/bin/runc", "localhost/bench/busybox", ["/bin/busybox", "sleep", "600"])
    print(f"(c) PSS per idle container (its processes and conmon, {a.idle} each): "
          f"wasmbox {mw / 1024:.1f} MiB, runc {mr / 1024:.1f} MiB, ratio {mw / mr:.2f}", flush=True)
    goal = pw <= 0.8 * pr and dw <= 0.8 * dr
    print(f"goal (run --rm <= 0.8x runc's, podman and docker): {'met' if goal else 'not met'}")
    run(podman + ["rm", "-f", "-a"])
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
