#!/usr/bin/env python3
"""HTTP serving benchmark: `wasmbox serve` against `wasmtime serve` on the same components.

For each component and each connection count, `wrk` loads each server for DURATION seconds; the
servers are interleaved run by run, in an order drawn afresh each round, so drift on the
machine hits all alike. For the component named by `--variants-of`, more servers run in the
same rounds: a second plain wasmbox (`again`), whose ratio to the first is the noise floor of
every ratio printed; wasmbox with metrics on and every request traced to a local OTLP sink
(`obs`; the sink is a process of its own: the native server's `--sink` mode, which reads each
export and keeps nothing), wasmbox over HTTPS with keep-alive (`https`, a certificate made with
openssl), and a native hyper server answering the same bytes (`native`, `--native`), the
physical limit; a variant's ratio to plain wasmbox is the median of the ratios of runs made in
the same round, plain being the mean of its two servers' runs. For a WASI 0.3 service,
`wasmtime serve` also runs with one instance per request (`wasmtime-fresh`,
`--max-instance-reuse-count 1`, its default for 0.2), which is how wasmbox serves every
request. Each server runs as its own process on loopback, started afresh for every round (two
processes of one server, alike in all but their addresses, can measure 10 % apart for as long
as they live; new processes each round turn that into spread the medians absorb instead of a
bias they keep), warmed up with one unrecorded wrk run at the most connections, and kept for
that round's runs. Reported per point: the median over the rounds of requests per second and of
the 99th percentile latency, for both, and their ratios; and wasmbox's resident memory idle
(before its first round's first run) and under load (the most seen while wrk ran). For `again`,
`obs` and `https` also the CPU time per request, against plain's: the server process's, all its
threads (the exporter's included), and for `obs` the sink's, from `/proc` before and after each
run; a cost that does not hang on how the scheduler shares two cores among wrk and the servers.

Standard library only. Usually started by bench/http.sh, which builds what it needs first:

    python3 bench/serve.py --wasmbox PATH --wasmtime PATH --component NAME=FILE... [--p3 NAME]
        [--variants-of NAME --native PATH] [--rounds N] [--duration S] [--connections 1,16,64]

`--p3 NAME` marks a WASI 0.3 service (`wasmtime serve` is then given its 0.3 flags).
`serve.py --sink PORT` is the OTLP sink alone.

Exit status: 0 when the benchmark ran (goals met or not), 1 when a server failed to start or
answered wrongly.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import socket
import ssl
import statistics
import tempfile
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class BenchError(Exception):
    """The benchmark cannot give a meaningful answer."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    name: str
    argv: list[str]
    port: int
    scheme: str = "http"
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **self.env},
        )
        url = self.url()
        unverified = ssl._create_unverified_context()
        deadline = time.monotonic() + 300
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode} before serving")
            try:
                with urllib.request.urlopen(url, timeout=5, context=unverified) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} did not answer on {url}")
            time.sleep(0.05)

    def rss_kib(self) -> int:
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def parse_wrk(out: str) -> tuple[float, float, int]:
    """Requests per second, p99 latency in ms, and non-2xx/3xx plus socket errors."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    if not rps or not p99:
        raise BenchError(f"cannot read wrk's output:\n{out}")
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    return float(rps.group(1)), float(p99.group(1)) * UNITS[p99.group(2)], errors


def cpu_seconds(pid: int) -> float:
    """The user and system CPU time process `pid` has used, all its threads together."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Run:
    rps: float
    p99: float
    errors: int
    peak_rss: int
    cpu_us: float
    """CPU microseconds per request of the server and of the processes working for it."""


def run_wrk(server: Server, conns: int, duration: int, helpers: tuple[int, ...] = ()) -> Run:
    """One wrk run; also the most RSS the server had while it ran, and the CPU time it and its
    `helpers` (pids: the OTLP sink for a traced server) used per request."""
    assert server.proc is not None
    pids = (server.proc.pid, *helpers)
    cpu0 = sum(cpu_seconds(p) for p in pids)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                peak[0] = max(peak[0], server.rss_kib())
            except OSError:
                pass
            done.wait(0.2)

    t = threading.Thread(target=sample)
    t.start()
    try:
        out = subprocess.run(
            [
                "wrk",
                f"-t{min(conns, 2)}",
                f"-c{conns}",
                f"-d{duration}s",
                "--latency",
                server.url(),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        done.set()
        t.join()
    cpu = sum(cpu_seconds(p) for p in pids) - cpu0
    rps, p99, errors = parse_wrk(out)
    total = re.search(r"(\d+) requests in", out)
    requests = int(total.group(1)) if total else 0
    return Run(rps, p99, errors, peak[0], cpu * 1e6 / max(requests, 1))


@dataclass
class Point:
    rps: dict[str, list[float]] = field(default_factory=dict)
    p99: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    cpu_us: dict[str, list[float]] = field(default_factory=dict)
    peak_rss: int = 0


class Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that takes every export and keeps nothing."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def start_sink(native: str | None) -> tuple[subprocess.Popen, int]:
    """The OTLP sink in a process of its own, serving: the native server's `--sink` mode (as
    cheap as a collector can be), else this script's `Sink`."""
    port = free_port()
    argv = ([native, "--sink", f"127.0.0.1:{port}"] if native
            else [sys.executable, os.path.abspath(__file__), "--sink", str(port)])
    proc = subprocess.Popen(argv)
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, port
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise BenchError("the OTLP sink did not start")
            time.sleep(0.05)


def paired(pt: Point, base: str, other: str, of: str = "rps") -> float:
    """`other`'s req/s (or CPU per request) over `base`'s: the median of the ratios of the runs
    of one round."""
    figures = getattr(pt, of)
    return statistics.median(o / b for b, o in zip(figures[base], figures[other]))


def plain(pt: Point, of: str = "rps") -> list[float]:
    """Plain wasmbox's req/s (or CPU per request) in each round: the mean of its two servers'
    where `again` ran (each variant is then measured against two samples of plain, not one),
    else the one's."""
    figures = getattr(pt, of)
    if "again" not in figures:
        return figures["wasmbox"]
    return [(a + b) / 2 for a, b in zip(figures["wasmbox"], figures["again"])]


def against_plain(pt: Point, variant: str, of: str = "rps") -> float:
    """`variant`'s req/s (or CPU per request) over plain wasmbox's (`native`'s req/s: plain's
    over its), paired by round."""
    pairs = zip(plain(pt, of), getattr(pt, of)[variant])
    if variant == "native":
        return statistics.median(b / v for b, v in pairs)
    return statistics.median(v / b for b, v in pairs)


def certificate(directory: str) -> tuple[str, str]:
    """A self-signed P-256 certificate for 127.0.0.1, and its key."""
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-nodes", "-days", "2", "-newkey", "ec",
         "-pkeyopt", "ec_paramgen_curve:prime256v1", "-keyout", key, "-out", cert,
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


def variants(args: argparse.Namespace, path: str, sink: int, tls: tuple[str, str]) -> dict[str, Server]:
    """The extra servers run beside wasmbox and wasmtime for `--variants-of`."""
    p = [free_port() for _ in range(4)]
    out = {
        "again": Server(
            "again",
            [args.wasmbox, "serve", "--addr", f"127.0.0.1:{p[3]}", path],
            p[3],
        ),
        "obs": Server(
            "obs",
            [args.wasmbox, "serve", "--addr", f"127.0.0.1:{p[0]}",
             "--metrics-addr", "127.0.0.1:0", path],
            p[0],
            env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sink}",
                 "OTEL_TRACES_SAMPLER": "always_on"},
        ),
        "https": Server(
            "https",
            [args.wasmbox, "serve", "--addr", f"127.0.0.1:{p[1]}",
             "--tls-cert", tls[0], "--tls-key", tls[1], path],
            p[1],
            scheme="https",
        ),
    }
    if args.native:
        out["native"] = Server("native", [args.native, f"127.0.0.1:{p[2]}"], p[2])
    return out


def lineup(args: argparse.Namespace, name: str, path: str, sink: int,
           tls: tuple[str, str]) -> dict[str, Server]:
    """The servers of one round for component `name`, each on a port of its own."""
    p1, p2, p3_fresh = free_port(), free_port(), free_port()
    p3_flags = ["-Wcomponent-model-async", "-Sp3,http"] if name in args.p3 else []
    servers = {
        "wasmbox": Server(
            "wasmbox",
            [args.wasmbox, "serve", "--addr", f"127.0.0.1:{p1}", path],
            p1,
        ),
        "wasmtime": Server(
            "wasmtime",
            [args.wasmtime, "serve", "--addr", f"127.0.0.1:{p2}", "-Scli", *p3_flags, path],
            p2,
        ),
    }
    if name in args.p3:
        servers["wasmtime-fresh"] = Server(
            "wasmtime-fresh",
            [args.wasmtime, "serve", "--addr", f"127.0.0.1:{p3_fresh}", "-Scli",
             *p3_flags, "--max-instance-reuse-count", "1", path],
            p3_fresh,
        )
    if name == args.variants_of:
        servers.update(variants(args, path, sink, tls))
    return servers


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--sink":
        ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Sink).serve_forever()
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wasmbox", required=True)
    ap.add_argument("--wasmtime", required=True)
    ap.add_argument("--component", action="append", required=True, metavar="NAME=FILE")
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("ROUNDS", "3")))
    ap.add_argument("--duration", type=int, default=int(os.environ.get("DURATION", "10")))
    ap.add_argument("--connections", default=os.environ.get("CONNECTIONS", "1,16,64"))
    ap.add_argument("--p3", action="append", default=[], metavar="NAME")
    ap.add_argument("--variants-of", metavar="NAME")
    ap.add_argument("--native", metavar="PATH")
    args = ap.parse_args()
    conns = [int(c) for c in args.connections.split(",")]
    version = lambda exe: subprocess.run(  # noqa: E731
        [exe, "--version"], capture_output=True, text=True
    ).stdout.strip()
    print(f"machine: {os.cpu_count()} CPUs, {os.uname().release}")
    print(f"wasmbox: {version(args.wasmbox)}; wasmtime: {version(args.wasmtime)}")
    print(f"{args.rounds} rounds of {args.duration}s per point, interleaved; medians shown\n")
    results: dict[tuple[str, int], Point] = {}
    idle: dict[str, int] = {}
    workdir = tempfile.mkdtemp()
    sink = None
    try:
        sink, sink_port = start_sink(args.native)
        tls = certificate(workdir)
        for comp in args.component:
            name, path = comp.split("=", 1)
            for r in range(args.rounds):
                servers = lineup(args, name, path, sink_port, tls)
                try:
                    # A fresh order each round, for starting and for running: a server's
                    # place (which one it follows) otherwise stays with it, and so does
                    # whatever that place does to its figures.
                    shuffle = random.Random(r)
                    for s in shuffle.sample(list(servers.values()), len(servers)):
                        s.start()
                    for s in servers.values():
                        run_wrk(s, max(conns), 2)
                    idle.setdefault(name, servers["wasmbox"].rss_kib())
                    for c in conns:
                        point = results.setdefault((name, c), Point())
                        names = list(servers)
                        order = shuffle.sample(names, len(names))
                        for tool in order:
                            helpers = (sink.pid,) if tool == "obs" else ()
                            run = run_wrk(servers[tool], c, args.duration, helpers)
                            point.rps.setdefault(tool, []).append(run.rps)
                            point.p99.setdefault(tool, []).append(run.p99)
                            point.cpu_us.setdefault(tool, []).append(run.cpu_us)
                            point.errors[tool] = point.errors.get(tool, 0) + run.errors
                            if tool == "wasmbox":
                                point.peak_rss = max(point.peak_rss, run.peak_rss)
                        print(
                            f"round {r + 1} {name} c={c}: "
                            + "; ".join(
                                f"{t} {point.rps[t][-1]:.0f} req/s p99 {point.p99[t][-1]:.2f} ms"
                                for t in names
                            ),
                            flush=True,
                        )
                finally:
                    for s in servers.values():
                        s.stop()
    except BenchError as e:
        print(f"http.py: {e}", file=sys.stderr)
        return 1
    finally:
        if sink is not None:
            sink.kill()
            sink.wait()

    print()
    print(
        f"{'component':<10} {'conns':>5} | {'wasmbox req/s':>13} {'wasmtime req/s':>14} {'ratio':>6} | "
        f"{'wasmbox p99':>11} {'wasmtime p99':>12} {'ratio':>6} | {'wasmbox RSS':>11} | errors"
    )
    met = True
    for (name, c), pt in results.items():
        rb, rt = statistics.median(pt.rps["wasmbox"]), statistics.median(pt.rps["wasmtime"])
        lb, lt = statistics.median(pt.p99["wasmbox"]), statistics.median(pt.p99["wasmtime"])
        ok = rb >= rt and lb <= lt
        met &= ok
        print(
            f"{name:<10} {c:>5} | {rb:>13.0f} {rt:>14.0f} {rb / rt:>6.2f} | "
            f"{lb:>9.2f}ms {lt:>10.2f}ms {lb / lt:>6.2f} | {pt.peak_rss / 1024:>8.1f}MiB | "
            f"{pt.errors['wasmbox']}/{pt.errors['wasmtime']}{'' if ok else '  (goal not met)'}"
        )
    print()
    for name, kib in idle.items():
        print(f"wasmbox RSS idle, serving {name}: {kib / 1024:.1f} MiB")
    print(
        "goal (wasmbox req/s >= wasmtime's and p99 <= wasmtime's at every point): "
        + ("met" if met else "not met")
    )
    fresh = [(name, c, pt) for (name, c), pt in results.items() if "wasmtime-fresh" in pt.rps]
    if fresh:
        print()
        print("WASI 0.3 against wasmtime serve with one instance per request, as wasmbox serves:")
        for name, c, pt in fresh:
            ratio = paired(pt, "wasmtime-fresh", "wasmbox")
            print(f"  {name} c={c}: wasmtime-fresh "
                  f"{statistics.median(pt.rps['wasmtime-fresh']):.0f} req/s, ratio {ratio:.2f}")
    if args.variants_of:
        print()
        goals = {"again": (None, "a second wasmbox, the same as the first: how far apart two alike "
                             "servers measure (1.00 would be no noise)"),
                 "obs": (0.95, "metrics on and every request traced, against both off: cost <= 5%"),
                 "https": (0.80, "HTTPS against plain HTTP, keep-alive: >= 0.8x"),
                 "native": (None, "wasmbox against a native hyper hello (the distance the sandbox costs)")}
        for variant, (goal, what) in goals.items():
            ratios = []
            for c in conns:
                pt = results.get((args.variants_of, c))
                if pt is None or variant not in pt.rps:
                    continue
                other = statistics.median(pt.rps[variant])
                ratio = (paired(pt, "wasmbox", "again") if variant == "again"
                         else against_plain(pt, variant))
                ratios.append((c, ratio, other))
            if not ratios:
                continue
            print(f"{what}:")
            for c, ratio, other in ratios:
                verdict = "" if goal is None else ("" if ratio >= goal else "  (goal not met)")
                cpu = ""
                if variant in ("again", "obs", "https"):
                    pt = results[(args.variants_of, c)]
                    of_plain = (paired(pt, "wasmbox", "again", "cpu_us") if variant == "again"
                                else against_plain(pt, variant, "cpu_us"))
                    cpu = (f"; CPU per request {statistics.median(pt.cpu_us[variant]):.0f} us, "
                           f"{of_plain:.2f}x plain's")
                print(f"  c={c}: {variant} {other:.0f} req/s, ratio {ratio:.2f}{cpu}{verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
