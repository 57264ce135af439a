"""Compares one run of the WASI 0.3 suite through wasmbox with one through wasmtime.

Usage: python3 compare.py WASMBOX_JSON WASMTIME_JSON EXPECTATIONS_TOML SUITE_DIR

Prints both counts, for the `wasi:cli/command` tests and the `wasi:http/service` tests (WASI 0.3
HTTP services; each test's world is read from its JSON in SUITE_DIR) apart, and every test whose
outcome differs. Exits non-zero when wasmbox fails a test the expectations file does not name
(whatever wasmtime does), when a test the file names does not fail (the file is then stale), or
when either run passed nothing in a world (a broken run must not pass as a match).
"""

import json
import sys
import tomllib
from pathlib import Path


def outcomes(path):
    d = json.load(open(path))
    out = {}
    for suite in d["results"]:
        for t in suite["tests"]:
            out[t["name"]] = (t["outcome"], t["failures"])
    return out, d["results"][0]["runtime"]


def main():
    box, box_rt = outcomes(sys.argv[1])
    ref, ref_rt = outcomes(sys.argv[2])
    expected = {t["name"]: t.get("reason", "")
                for s in tomllib.load(open(sys.argv[3], "rb")).get("suite", [])
                for t in s.get("test", [])}
    suite_dir = Path(sys.argv[4])

    def world(name):
        j = suite_dir / f"{name}.json"
        return json.load(open(j)).get("world", "wasi:cli/command") if j.exists() else "wasi:cli/command"

    names = sorted(set(box) | set(ref))
    passed = lambda o, n: o.get(n, ("missing",))[0] == "pass"
    ok = True
    for n in names:
        b, r = passed(box, n), passed(ref, n)
        if n in expected:
            if b:
                print(f"  {n}: passes now; remove it from the expectations file")
                ok = False
            else:
                print(f"  {n}: known failure: {expected[n]}")
        elif not b:
            other = "passes" if r else "fails too"
            print(f"  {n}: FAILS under wasmbox (wasmtime {other}): {box.get(n, ('missing', []))[1]}")
            ok = False
        elif not r:
            print(f"  {n}: wasmbox passes, wasmtime fails")
    for n in expected:
        if n not in names:
            print(f"  {n}: named in the expectations file but not a test of this suite")
            ok = False
    print(f"wasi-testsuite WASI 0.3, {len(names)} tests:")
    for w in ["wasi:cli/command", "wasi:http/service"]:
        these = [n for n in names if world(n) == w]
        box_pass = sum(passed(box, n) for n in these)
        ref_pass = sum(passed(ref, n) for n in these)
        print(f"  {w}: wasmbox {box_rt['version']} {box_pass} of {len(these)} passed; "
              f"wasmtime {ref_rt['version']} {ref_pass} of {len(these)} passed")
        if not these or box_pass == 0 or ref_pass == 0:
            print(f"  a run passed no {w} test: the comparison means nothing")
            ok = False
    sys.exit(0 if ok else 1)


main()
