#!/usr/bin/env python3
"""CRI benchmark (run through bench/cri.sh): kubelet's calls, from one gRPC client.

Each pod is RunPodSandbox, CreateContainer and StartContainer of one container that prints a line
and exits, then (once it has exited) StopPodSandbox and RemovePodSandbox. wasmbox pods (handler
`wasmbox`, the hello wasm image) against runc pods (handler `runc`, busybox `echo`), PODS per round,
PARALLEL at a time, two rounds each, interleaved, in one containerd in a network namespace of its
own with a CNI bridge. Reported:
- start latency: RunPodSandbox's call to StartContainer's return (the container running), median
  and p95 over both rounds;
- pods per second: PODS over the wall time of a round, whole lifecycles, median of the rounds;
- pods per second with no container (each round is followed by PODS sandbox-only lifecycles):
  containerd's, CNI's and the runtime's sandbox work, the ceiling for whole pods;
- memory per running pod: RUNNING pods with a sleeping container, MemAvailable's drop divided by
  RUNNING, and the PSS of the runtime's shims (alone, and with the pods' own processes: a runc
  pod's pause and container) divided by RUNNING.
"""
import argparse
import concurrent.futures
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import containerd as cb  # noqa: E402  (bench/containerd.py: images)

import grpc  # noqa: E402

PAUSE = "localhost/bench/pause:1"


def stubs(proto_dir, out):
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}", f"--python_out={out}",
                    f"--grpc_python_out={out}", os.path.join(proto_dir, "v1.proto")], check=True)
    sys.path.insert(0, out)
    return importlib.import_module("v1_pb2"), importlib.import_module("v1_pb2_grpc")


def pause_archive(root, work):
    """The pods' pause container: tests/pause.c, static, in a single-layer image."""
    binary = os.path.join(work, "pause")
    subprocess.run(["cc", "-static", "-Os", "-o", binary, os.path.join(root, "tests/pause.c")], check=True)
    return cb.single_file_archive(os.path.join(work, "pause.tar"), PAUSE, binary, "pause", ["/pause"])


def cri_file(root, name, **fill):
    """A file of tests/cri/ (the CRI plugin's configuration and the CNI bridge the end-to-end
    tests use too), its @NAME@ placeholders filled in."""
    text = open(os.path.join(root, "tests/cri", name)).read()
    for key, value in fill.items():
        text = text.replace(f"@{key}@", value)
    if '@"' in text:
        sys.exit(f"tests/cri/{name}: a placeholder left unfilled")
    return text


class Cri:
    def __init__(self, bin_dir, root, pb, rpc):
        self.pb = pb
        self.netns = f"wbcribench-{os.getpid()}"
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        subprocess.run(["ip", "-n", self.netns, "link", "set", "lo", "up"], check=True)
        self.dir = tempfile.mkdtemp(prefix="wbcri", dir="/tmp")
        self.sock = os.path.join(self.dir, "c.sock")
        cni = os.path.join(self.dir, "cni")
        os.makedirs(cni)
        ipam = os.path.join(self.dir, "ipam")
        with open(os.path.join(cni, "10-bench.conflist"), "w") as f:
            f.write(cri_file(root, "bridge.conflist", NAME="wasmbox-bench", BRIDGE="wbbench0", IPAM_DIR=ipam,
                             SUBNET="10.98.0.0/16"))
        example = open(os.path.join(root, "examples/kubernetes/containerd-runtime.toml")).read()
        plugin = cri_file(root, "cri-plugin.toml", PAUSE=PAUSE, CNI_CONF_DIR=cni)
        with open(os.path.join(self.dir, "config.toml"), "w") as f:
            f.write(f"""version = 2
root = "{self.dir}/root"
state = "{self.dir}/state"
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"

{plugin}
{example}""")
        env = dict(os.environ)
        env["PATH"] = f"{bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        env["WASMBOX_CACHE_DIR"] = os.path.join(self.dir, "cache")
        self.log = open(os.path.join(self.dir, "containerd.log"), "w")
        self.proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{self.netns}", "containerd", "--config",
                                      os.path.join(self.dir, "config.toml")], stdout=self.log, stderr=self.log,
                                     env=env)
        self.channel = grpc.insecure_channel(f"unix://{self.sock}")
        self.rt = rpc.RuntimeServiceStub(self.channel)
        self.img = rpc.ImageServiceStub(self.channel)
        for _ in range(600):
            try:
                st = self.rt.Status(pb.StatusRequest(), timeout=1)
                ready = {c.type for c in st.status.conditions if c.status}
                if {"RuntimeReady", "NetworkReady"} <= ready:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
        sys.exit("containerd's CRI plugin did not become ready")

    def ctr(self, *args):
        subprocess.run(["ctr", "--address", self.sock, "--namespace", "k8s.io", *args], check=True,
                       stdout=subprocess.DEVNULL)

    def pod_config(self, name):
        pb = self.pb
        logs = os.path.join(self.dir, "logs", name)
        os.makedirs(os.path.join(logs, "c"), exist_ok=True)
        ns = pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD)
        return pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="bench"),
            hostname=name, log_directory=logs,
            linux=pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(namespace_options=ns)))

    def start_pod(self, handler, name, image, args):
        """Runs a pod with one container; returns (pod id, container id, seconds until running)."""
        pb = self.pb
        t = time.perf_counter()
        config = self.pod_config(name)
        pod = self.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=config, runtime_handler=handler)).pod_sandbox_id
        c = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="c"), image=pb.ImageSpec(image=image),
                               args=args, log_path="c/0.log")
        cid = self.rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, config=c,
                                                                sandbox_config=config)).container_id
        self.rt.StartContainer(pb.StartContainerRequest(container_id=cid))
        return pod, cid, time.perf_counter() - t

    def remove_pod(self, pod):
        self.rt.StopPodSandbox(self.pb.StopPodSandboxRequest(pod_sandbox_id=pod))
        self.rt.RemovePodSandbox(self.pb.RemovePodSandboxRequest(pod_sandbox_id=pod))

    def one(self, handler, name, image, args, want):
        """One pod's whole life; returns its start latency."""
        pod, cid, latency = self.start_pod(handler, name, image, args)
        while True:
            st = self.rt.ContainerStatus(self.pb.ContainerStatusRequest(container_id=cid)).status
            if st.state == self.pb.CONTAINER_EXITED:
                break
            time.sleep(0.002)
        log = open(os.path.join(self.dir, "logs", name, "c/0.log")).read()
        if st.exit_code != 0 or want not in log:
            sys.exit(f"{handler} pod {name}: exit {st.exit_code}, log {log!r}")
        self.remove_pod(pod)
        return latency

    def shims(self, name):
        return cb.shims(self.sock, name)

    def close(self):
        try:
            for p in self.rt.ListPodSandbox(self.pb.ListPodSandboxRequest()).items:
                try:
                    self.remove_pod(p.id)
                except grpc.RpcError:
                    pass
        except grpc.RpcError:
            pass
        self.channel.close()
        cb.stop(self.proc, self.sock, self.dir)
        subprocess.run(["ip", "netns", "delete", self.netns], stderr=subprocess.DEVNULL)


KINDS = {
    "wasmbox": (cb.HELLO, [], "Hello from wasmbox!"),
    "runc": (cb.BUSYBOX, ["echo", "Hello from busybox"], "Hello from busybox"),
}


def batch(cri, handler, pods, parallel, tag):
    image, args, want = KINDS[handler]
    t = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(parallel) as ex:
        lat = list(ex.map(lambda i: cri.one(handler, f"{tag}-{i}", image, args, want), range(pods)))
    return lat, pods / (time.perf_counter() - t)


def sandboxes(cri, handler, pods, parallel, tag):
    """Pods with no container (RunPodSandbox, StopPodSandbox, RemovePodSandbox): containerd's,
    CNI's and the runtime's sandbox work only, the most pods per second whole pods could reach."""
    def one(i):
        config = cri.pod_config(f"{tag}-{i}")
        pod = cri.rt.RunPodSandbox(cri.pb.RunPodSandboxRequest(config=config, runtime_handler=handler))
        cri.remove_pod(pod.pod_sandbox_id)
    t = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(parallel) as ex:
        list(ex.map(one, range(pods)))
    return pods / (time.perf_counter() - t)


def mem_available_kib():
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    return 0


def pss_kib(pid):
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


MEMORY = {"wasmbox": (cb.FILES, ["sleep", "3600000"]), "runc": (cb.BUSYBOX, ["sleep", "3600"])}


def memory(cri, handler, running):
    image, args = MEMORY[handler]
    before = mem_available_kib()
    pods = []
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        pods = list(ex.map(lambda i: cri.start_pod(handler, f"m-{handler}-{i}", image, args), range(running)))
    for _, cid, _ in pods:
        while cri.rt.ContainerStatus(cri.pb.ContainerStatusRequest(container_id=cid)).status.state \
                != cri.pb.CONTAINER_RUNNING:
            time.sleep(0.01)
    time.sleep(2)  # let page cache and lazily touched memory settle before reading
    drop = before - mem_available_kib()
    shim = {"wasmbox": "containerd-shim-wasmbox-v1", "runc": "containerd-shim-runc-v2"}[handler]
    shims = set(cri.shims(shim))
    # The pods' own processes: a runc pod's pause and container; a wasmbox pod's are its shim.
    own = set()
    for pod, cid, _ in pods:
        for info in (cri.rt.PodSandboxStatus(cri.pb.PodSandboxStatusRequest(pod_sandbox_id=pod, verbose=True)).info,
                     cri.rt.ContainerStatus(cri.pb.ContainerStatusRequest(container_id=cid, verbose=True)).info):
            pid = json.loads(info.get("info", "{}")).get("pid", 0)
            if pid and pid not in shims:
                own.add(pid)
    pss = sum(pss_kib(p) for p in shims)
    own_pss = sum(pss_kib(p) for p in own)
    for pod, _, _ in pods:
        cri.remove_pod(pod)
    return drop / running, pss / running, (pss + own_pss) / running


def p95(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--proto", required=True)
    ap.add_argument("--pods", type=int, default=50)
    ap.add_argument("--parallel", type=int, default=5)
    ap.add_argument("--running", type=int, default=10)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("cri.py needs root (containerd, runc, mounts, network namespaces)")
    work = tempfile.mkdtemp(prefix="wbcri-img")
    pb, rpc = stubs(a.proto, work)
    cri = Cri(a.bin_dir, a.root, pb, rpc)
    try:
        archives = cb.wasm_archives(os.path.join(a.bin_dir, "wasmbox"), os.path.join(a.root, "examples"), work)
        bb = os.path.join(work, "busybox.tar")
        cb.busybox_archive(bb)
        for archive in [*archives, bb, pause_archive(a.root, work)]:
            cri.ctr("images", "import", archive)
        for handler in KINDS:
            batch(cri, handler, 2, 1, f"warm-{handler}")
        lat = {h: [] for h in KINDS}
        rate = {h: [] for h in KINDS}
        empty = {h: [] for h in KINDS}
        for r in range(2):
            order = list(KINDS) if r % 2 == 0 else list(reversed(KINDS))
            for handler in order:
                l, pps = batch(cri, handler, a.pods, a.parallel, f"r{r}-{handler}")
                lat[handler] += l
                rate[handler].append(pps)
                empty[handler].append(sandboxes(cri, handler, a.pods, a.parallel, f"e{r}-{handler}"))
        w, n = lat["wasmbox"], lat["runc"]
        print(f"start latency (RunPodSandbox to container running), {len(w)} pods each, {a.parallel} at a time: "
              f"wasmbox median {statistics.median(w)*1000:.0f} ms p95 {p95(w)*1000:.0f} ms, "
              f"runc median {statistics.median(n)*1000:.0f} ms p95 {p95(n)*1000:.0f} ms, "
              f"ratio {statistics.median(w)/statistics.median(n):.2f} (goal <= 0.5)")
        rw, rn = statistics.median(rate["wasmbox"]), statistics.median(rate["runc"])
        print(f"pods per second (whole lifecycles): wasmbox {'/'.join(f'{x:.2f}' for x in rate['wasmbox'])}, "
              f"runc {'/'.join(f'{x:.2f}' for x in rate['runc'])}, ratio {rw/rn:.2f}x (goal >= 3x)")
        ew, en = statistics.median(empty["wasmbox"]), statistics.median(empty["runc"])
        print(f"pods per second with no container (sandbox only: containerd, CNI and the runtime's sandbox): "
              f"wasmbox {'/'.join(f'{x:.2f}' for x in empty['wasmbox'])}, "
              f"runc {'/'.join(f'{x:.2f}' for x in empty['runc'])}; "
              f"wasmbox's whole pods run at {rw/ew:.2f} of its sandbox-only rate, which is {ew/rn:.2f}x runc's whole pods")
        # One pod of each memory workload first: its compiled code is then in the cache, as on a
        # node that ran it before.
        for handler, (image, args) in MEMORY.items():
            pod, cid, _ = cri.start_pod(handler, f"warm-m-{handler}", image, args)
            while cri.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid)).status.state \
                    != pb.CONTAINER_RUNNING:
                time.sleep(0.01)
            time.sleep(1)  # the cache is written beside the running guest
            cri.remove_pod(pod)
        for handler in KINDS:
            drop, pss, total = memory(cri, handler, a.running)
            print(f"memory per running pod ({a.running} pods, {handler}): MemAvailable drop {drop/1024:.2f} MiB, "
                  f"shim PSS {pss/1024:.2f} MiB, shim and pod processes' PSS {total/1024:.2f} MiB")
    finally:
        cri.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
