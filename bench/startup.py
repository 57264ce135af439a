#!/usr/bin/env python3
"""Startup benchmark: `wasmbox run` against `wasmtime run` on the same wasm file.

Measures, for each tool, the wall-clock time of the whole process and the peak RSS of the child,
with the compiled-code cache empty (cold: a fresh cache directory for every run) and populated
(warm: one priming run, then every run reuses that tool's own cache directory). The two tools are
interleaved run by run, and which one goes first alternates, so machine noise hits both alike.

Standard library only. Usually started by bench/startup.sh, which builds wasmbox and installs
wasmtime first; it can also be run directly:

    python3 bench/startup.py --wasmbox PATH --wasmtime PATH [--wasm FILE] [--runs N]

RUNS (environment) is the default for --runs. Exit status: 0 when the benchmark ran (whether or
not the goals were met), 1 when a tool failed, printed the wrong output, or its cache could not
be shown to work.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

EXPECTED_OUTPUT = b"Hello from wasmbox!\n"
# ratio = median(wasmbox) / median(wasmtime) must be at most this.
GOALS = {"cold": 1.10, "warm": 1.00}


class BenchError(Exception):
    """The benchmark cannot give a meaningful answer."""


@dataclass
class Sample:
    wall_ms: float
    maxrss_kib: int


@dataclass
class Series:
    samples: list[Sample] = field(default_factory=list)

    def wall(self) -> list[float]:
        return [s.wall_ms for s in self.samples]

    def rss_mib(self) -> list[float]:
        return [s.maxrss_kib / 1024 for s in self.samples]


class Tool:
    """One command under test, with its own way of pointing at a cache directory."""

    name = ""

    def __init__(self, exe: Path, wasm: Path):
        self.exe = exe
        self.wasm = wasm

    def version(self) -> str:
        out = subprocess.run(
            [str(self.exe), "--version"], capture_output=True, text=True, check=False
        )
        return (out.stdout or out.stderr).strip() or f"(exit {out.returncode})"

    def argv(self, cache: Path) -> list[str]:
        """The command line for one run using cache directory `cache` (set up by `prepare`)."""
        raise NotImplementedError

    def prepare(self, cache: Path) -> None:
        """Readies `cache` (an existing empty directory) for use; not timed."""

    def artifacts(self, cache: Path) -> dict[str, int]:
        """Compiled-code files in `cache` (relative path -> mtime in ns)."""
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)


class Wasmbox(Tool):
    name = "wasmbox"

    def argv(self, cache: Path) -> list[str]:
        return [str(self.exe), "run", "--cache-dir", str(cache / "c"), str(self.wasm)]

    def artifacts(self, cache: Path) -> dict[str, int]:
        d = cache / "c"
        if not d.is_dir():
            return {}
        return {
            p.name: p.stat().st_mtime_ns for p in d.iterdir() if p.name.endswith(".cwasm")
        }

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        # The flag is what is measured; make sure the environment does not also point somewhere.
        env.pop("WASMBOX_CACHE_DIR", None)
        env.pop("WASMBOX_LOG", None)
        return env


class Wasmtime(Tool):
    name = "wasmtime"

    def config(self, cache: Path) -> Path:
        return cache / "cache.toml"

    def prepare(self, cache: Path) -> None:
        # wasmtime 48's cache configuration has no `enabled` key (it rejects unknown keys):
        # passing a cache configuration enables the cache.
        directory = str(cache / "c").replace("\\", "\\\\").replace('"', '\\"')
        self.config(cache).write_text(f'[cache]\ndirectory = "{directory}"\n')

    def argv(self, cache: Path) -> list[str]:
        return [str(self.exe), "run", "-C", f"cache-config={self.config(cache)}", str(self.wasm)]

    def artifacts(self, cache: Path) -> dict[str, int]:
        # Layout: <dir>/modules/<compiler>-<version>/<hash>, plus `.stats` files the cache
        # worker keeps next to them and `.wip-*` temporaries.
        d = cache / "c" / "modules"
        if not d.is_dir():
            return {}
        out = {}
        for p in d.rglob("*"):
            if p.is_file() and not p.name.endswith(".stats") and ".wip-" not in p.name:
                out[str(p.relative_to(d))] = p.stat().st_mtime_ns
        return out

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("WASMTIME_LOG", None)
        return env


def timed_run(tool: Tool, cache: Path) -> Sample:
    """Runs the tool once, output to /dev/null; wall clock of the whole process and its peak RSS."""
    argv = tool.argv(cache)
    env = tool.env()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    # wait4 reaps this child only and reports its own rusage (ru_maxrss in KiB on Linux).
    _, status, rusage = os.wait4(proc.pid, 0)
    t1 = time.perf_counter()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        # Run it again to show why.
        again = subprocess.run(argv, capture_output=True, env=env, check=False)
        raise BenchError(
            f"{tool.name} exited {proc.returncode}: {' '.join(argv)}\n"
            f"stderr of a rerun (exit {again.returncode}):\n"
            f"{again.stderr.decode(errors='replace')}"
        )
    return Sample(wall_ms=(t1 - t0) * 1000, maxrss_kib=rusage.ru_maxrss)


def check_output(tool: Tool, cache: Path) -> None:
    """A separate, untimed run whose stdout must be exactly the expected greeting."""
    out = subprocess.run(tool.argv(cache), capture_output=True, env=tool.env(), check=False)
    if out.returncode != 0 or out.stdout != EXPECTED_OUTPUT:
        raise BenchError(
            f"{tool.name}: expected exit 0 and stdout {EXPECTED_OUTPUT!r}, "
            f"got exit {out.returncode} and stdout {out.stdout!r}\n"
            f"stderr: {out.stderr.decode(errors='replace')}"
        )


def fresh_cache(root: Path, tool: Tool, tag: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix=f"{tool.name}-{tag}-", dir=root))
    tool.prepare(d)
    return d


def sanity(tools: list[Tool], root: Path, notes: list[str]) -> None:
    """Checks output, and that each tool writes its cache where told and reuses it."""
    for tool in tools:
        cache = fresh_cache(root, tool, "sanity")
        check_output(tool, cache)
        first = tool.artifacts(cache)
        if not first:
            raise BenchError(
                f"{tool.name} wrote no compiled code to {cache / 'c'}; "
                f"the cold/warm comparison would be meaningless"
            )
        check_output(tool, cache)
        second = tool.artifacts(cache)
        if second != first:
            raise BenchError(
                f"{tool.name} rewrote its cache on a second run (before: {first}, after: {second}); "
                f"its warm runs would not be warm"
            )
        notes.append(
            f"{tool.name}: output ok; cache written to {cache / 'c'} "
            f"({len(first)} artifact(s)) and reused unchanged on a second run"
        )
        shutil.rmtree(cache, ignore_errors=True)


def interleaved(tools: list[Tool], runs: int, cache_for) -> dict[str, Series]:
    """`runs` rounds; each round runs every tool once, the order alternating between rounds."""
    series = {t.name: Series() for t in tools}
    for i in range(runs):
        order = tools if i % 2 == 0 else list(reversed(tools))
        for tool in order:
            cache, done = cache_for(tool, i)
            try:
                series[tool.name].samples.append(timed_run(tool, cache))
            finally:
                done()
    return series


def cold(tools: list[Tool], runs: int, root: Path) -> dict[str, Series]:
    def cache_for(tool: Tool, i: int):
        d = fresh_cache(root, tool, f"cold{i}")

        def done():
            if not tool.artifacts(d):
                raise BenchError(f"{tool.name} wrote no compiled code on cold run {i}")
            shutil.rmtree(d, ignore_errors=True)

        return d, done

    return interleaved(tools, runs, cache_for)


def warm(tools: list[Tool], runs: int, root: Path) -> dict[str, Series]:
    caches = {}
    primed = {}
    for tool in tools:
        d = fresh_cache(root, tool, "warm")
        timed_run(tool, d)  # priming run, not recorded
        primed[tool.name] = tool.artifacts(d)
        if not primed[tool.name]:
            raise BenchError(f"{tool.name} wrote no compiled code on its priming run")
        caches[tool.name] = d

    series = interleaved(tools, runs, lambda tool, i: (caches[tool.name], lambda: None))
    for tool in tools:
        if tool.artifacts(caches[tool.name]) != primed[tool.name]:
            raise BenchError(f"{tool.name} recompiled during warm runs (its cache changed)")
        shutil.rmtree(caches[tool.name], ignore_errors=True)
    return series


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def nproc() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 0


def fs_type(path: Path) -> str:
    """Filesystem type of `path` from /proc/mounts (longest matching mount point)."""
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) < 3:
                continue
            mnt = parts[1].replace("\\040", " ")
            inside = str(path) == mnt or str(path).startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) >= len(best):
                best, kind = mnt, parts[2]
    except OSError:
        pass
    return kind


def fmt_range(xs: list[float]) -> str:
    return f"{min(xs):.1f}-{max(xs):.1f}"


def report(
    results: dict[str, dict[str, Series]],
    tools: list[Tool],
    runs: int,
    notes: list[str],
    root: Path,
) -> None:
    a, b = tools[0].name, tools[1].name
    print()
    print("machine:  ", f"{nproc()} CPUs (nproc), {cpu_model()}, {platform.system()} {platform.release()}")
    for t in tools:
        print(f"{t.name + ':':10} {t.version()} ({t.exe})")
    print(f"{'wasm:':10} {tools[0].wasm} ({tools[0].wasm.stat().st_size} bytes)")
    print(f"{'runs:':10} {runs} per tool per phase, interleaved, order alternating")
    print(f"{'caches:':10} under {root} ({fs_type(root)}; set TMPDIR to move them)")
    for n in notes:
        print(f"{'check:':10} {n}")
    print()
    head = (
        f"{'phase':6} {a + ' ms':>12} {b + ' ms':>12} {'ratio':>7} {'goal':>8} {'':5}"
        f"{a + ' MiB':>12} {b + ' MiB':>13}"
    )
    print("Medians (wall-clock ms of the whole process; peak RSS of the child in MiB)")
    print(head)
    print("-" * len(head))
    for phase in ("cold", "warm"):
        sa, sb = results[phase][a], results[phase][b]
        ma, mb = statistics.median(sa.wall()), statistics.median(sb.wall())
        ratio = ma / mb
        goal = GOALS[phase]
        verdict = "PASS" if ratio <= goal else "MISS"
        print(
            f"{phase:6} {ma:12.1f} {mb:12.1f} {ratio:7.3f} {'<= ' + format(goal, '.2f'):>8} "
            f"{verdict:5}{statistics.median(sa.rss_mib()):12.1f} {statistics.median(sb.rss_mib()):13.1f}"
        )
    print()
    print("Spread (min-max)")
    head2 = f"{'phase':6} {a + ' ms':>14} {b + ' ms':>14} {a + ' MiB':>14} {b + ' MiB':>14}"
    print(head2)
    print("-" * len(head2))
    for phase in ("cold", "warm"):
        sa, sb = results[phase][a], results[phase][b]
        print(
            f"{phase:6} {fmt_range(sa.wall()):>14} {fmt_range(sb.wall()):>14} "
            f"{fmt_range(sa.rss_mib()):>14} {fmt_range(sb.rss_mib()):>14}"
        )


def main() -> int:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wasmbox", type=Path, required=True, help="the wasmbox binary")
    ap.add_argument("--wasmtime", type=Path, required=True, help="the wasmtime CLI binary")
    ap.add_argument(
        "--wasm",
        type=Path,
        default=here.parent / "examples" / "hello" / "hello.wasm",
        help="the module both run (default: examples/hello/hello.wasm)",
    )
    ap.add_argument(
        "--runs",
        type=int,
        default=int(os.environ.get("RUNS", "20")),
        help="timed runs per tool per phase (default: $RUNS or 20)",
    )
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    wasm = args.wasm.resolve()
    tools: list[Tool] = [Wasmbox(args.wasmbox.resolve(), wasm), Wasmtime(args.wasmtime.resolve(), wasm)]

    root = Path(tempfile.mkdtemp(prefix="wasmbox-bench-startup-"))
    try:
        notes: list[str] = []
        sanity(tools, root, notes)
        print(f"cold: {args.runs} rounds ...", file=sys.stderr)
        results = {"cold": cold(tools, args.runs, root)}
        print(f"warm: {args.runs} rounds ...", file=sys.stderr)
        results["warm"] = warm(tools, args.runs, root)
        report(results, tools, args.runs, notes, root)
    except BenchError as e:
        print(f"startup benchmark: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
