#!/usr/bin/env python3
"""Cold starts of big modules (run through bench/cold.sh): each run with an empty compiled-code
cache, against the wasmtime CLI compiling every time and writing nothing (`-C cache=n`).

- svg-flatten (C++, PyPI's `svg-flatten-wasi`, 9.6 MB): `wasmbox run FILE -- --help` against
  `wasmtime run FILE --help`, and `wasmtime compile`;
- the Python HTTP app (examples/http-py, a 21 MB component, which `run` would serve):
  `wasmbox compile` (the compile helper, the MAC and the fsync'd cache write included) against
  `wasmtime compile`.

Interleaved, median of RUNS. Standard library only.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def timed(cmd):
    t = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr.decode()}")
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wasmbox", required=True)
    ap.add_argument("--wasmtime", required=True)
    ap.add_argument("--svg-flatten", required=True)
    ap.add_argument("--http-py", required=True)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="wasmbox-bench-cold-", dir=os.environ.get("TMPDIR", "/var/tmp"))
    rows = {k: [] for k in ("wb run", "wt run", "wt compile svg", "wb compile py", "wt compile py")}
    try:
        for i in range(a.runs):
            cache = os.path.join(work, f"cache-{i}")
            rows["wb run"].append(timed([a.wasmbox, "run", "--cache-dir", cache, a.svg_flatten, "--", "--help"]))
            rows["wt run"].append(timed([a.wasmtime, "run", "-C", "cache=n", a.svg_flatten, "--help"]))
            out = os.path.join(work, "out.cwasm")
            rows["wt compile svg"].append(timed([a.wasmtime, "compile", "-C", "cache=n", "-o", out, a.svg_flatten]))
            cache = os.path.join(work, f"cache-py-{i}")
            rows["wb compile py"].append(timed([a.wasmbox, "compile", "--cache-dir", cache, a.http_py]))
            rows["wt compile py"].append(timed([a.wasmtime, "compile", "-C", "cache=n", "-o", out, a.http_py]))
            shutil.rmtree(cache, ignore_errors=True)
        m = {k: statistics.median(v) for k, v in rows.items()}
        mib = lambda p: os.path.getsize(p) / (1 << 20)  # noqa: E731
        print(f"machine: {os.cpu_count()} CPUs; {a.runs} runs, interleaved, an empty cache each")
        print(f"  svg-flatten ({mib(a.svg_flatten):.1f} MiB): wasmbox run {m['wb run']:.2f} s, "
              f"wasmtime run {m['wt run']:.2f} s: ratio {m['wb run'] / m['wt run']:.2f} (goal <= 1.0); "
              f"wasmtime compile {m['wt compile svg']:.2f} s")
        print(f"  Python app ({mib(a.http_py):.1f} MiB): wasmbox compile {m['wb compile py']:.2f} s, "
              f"wasmtime compile {m['wt compile py']:.2f} s: ratio "
              f"{m['wb compile py'] / m['wt compile py']:.2f} (goal <= 1.0)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
