#!/usr/bin/env python3
"""A node with `wasmbox agent` (run through bench/agent.sh): the Python HTTP app (examples/http-py,
~21 MB component, in compat form as containerd 1.6 unpacks it) in a docker-registry inside the
node's network namespace, pulled by CRI `PullImage`, then a pod of it (RunPodSandbox,
CreateContainer, StartContainer: the container running). Each round has a node of its own (a
fresh containerd and compiled-code cache) with the agent watching it. Reported, medians:

- PullImage's time, and how long after it returned the agent had the app compiled (the node warm);
- the pod started the moment PullImage returned (as kubelet starts it), against the same pod on
  the node once warm (a second pod), and against a pod started once the agent said it was done.
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cri as cb  # noqa: E402  (bench/cri.py: the node and its CRI client)

NAME = "localhost/wasmbox/examples/http-py:latest"


def compat_archive(wasmbox, layout, work):
    """The app as `wasmbox save --compat` writes it (linux/amd64, the wasm a file of its layer)."""
    store = os.path.join(work, "store")
    subprocess.run([wasmbox, "--store", store, "load", "--no-compile", "-i", layout], check=True,
                   stdout=subprocess.DEVNULL)
    out = os.path.join(work, "http-py.tar")
    subprocess.run([wasmbox, "--store", store, "save", "--compat", "-o", out, NAME], check=True)
    return out


def in_netns(cri, *cmd, **kw):
    return subprocess.Popen(["nsenter", f"--net=/run/netns/{cri.netns}", *cmd], **kw)


def registry(cri, archive):
    """A docker-registry in the node's namespace, holding the app; its image reference."""
    port = 5000
    cfg = os.path.join(cri.dir, "registry.yml")
    with open(cfg, "w") as f:
        f.write(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {cri.dir}/registry\n"
                f"http:\n  addr: 127.0.0.1:{port}\n")
    cri.registry = in_netns(cri, "docker-registry", "serve", cfg, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    image = f"127.0.0.1:{port}/bench/http-py:1"
    for _ in range(400):
        p = in_netns(cri, "skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci-archive:{archive}",
                     f"docker://{image}", stderr=subprocess.DEVNULL)
        if p.wait() == 0:
            return image
        time.sleep(0.05)
    sys.exit("could not push the app to the registry")


def wait_line(agent, *what):
    while True:
        line = agent.stderr.readline()
        if not line:
            sys.exit(f"the agent ended before saying {what[0]!r}")
        if any(w in line for w in what):
            return line


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--proto", required=True)
    ap.add_argument("--layout", required=True, help="OCI layout of the Python app")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("agent.py needs root (containerd, mounts, network namespaces)")
    wasmbox = os.path.join(a.bin_dir, "wasmbox")
    work = tempfile.mkdtemp(prefix="wbagent-img")
    pb, rpc = cb.stubs(a.proto, work)
    archive = compat_archive(wasmbox, a.layout, work)
    pause = cb.pause_archive(a.root, work)
    pull, warmed, immediate, warm, after = [], [], [], [], []
    try:
        for r in range(a.runs):
            cri = cb.Cri(a.bin_dir, a.root, pb, rpc)
            cri.registry = None
            agent = None
            try:
                cri.ctr("images", "import", pause)
                image = registry(cri, archive)
                agent = subprocess.Popen([wasmbox, "agent", "--address", cri.sock, "--cache-dir",
                                          os.path.join(cri.dir, "cache")], stderr=subprocess.PIPE, text=True)
                wait_line(agent, "watching containerd")
                t = time.perf_counter()
                cri.img.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)))
                pulled = time.perf_counter()
                pull.append(pulled - t)
                pod, _, latency = cri.start_pod("wasmbox", f"now-{r}", image, [])
                immediate.append(latency)
                # The agent compiled it, or waited for the pod's compile and found it done.
                wait_line(agent, "compiled ", "in the cache already")
                warmed.append(time.perf_counter() - pulled)
                cri.remove_pod(pod)
                pod, _, latency = cri.start_pod("wasmbox", f"warm-{r}", image, [])
                warm.append(latency)
                cri.remove_pod(pod)
                pod, _, latency = cri.start_pod("wasmbox", f"after-{r}", image, [])
                after.append(latency)
                cri.remove_pod(pod)
            finally:
                if agent:
                    agent.kill()
                    agent.wait()
                if cri.registry:
                    cri.registry.kill()
                    cri.registry.wait()
                cri.close()
        med = statistics.median
        print(f"machine: {os.cpu_count()} CPUs; the Python app (compat form) from a docker-registry in the node's "
              f"namespace; {a.runs} rounds, a fresh node (containerd, cache, agent) each")
        print(f"  PullImage                                   median {med(pull):6.2f} s")
        print(f"  node warm after PullImage returned          median {med(warmed):6.2f} s   (the agent's compile)")
        print(f"  pod started as PullImage returns            median {med(immediate):6.2f} s   "
              f"ratio to warm {med(immediate) / med(warm):.1f} (goal <= 1.5)")
        print(f"  pod on the warm node                        median {med(warm):6.2f} s")
        print(f"  pod once the agent is done                  median {med(after):6.2f} s   "
              f"ratio to warm {med(after) / med(warm):.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
