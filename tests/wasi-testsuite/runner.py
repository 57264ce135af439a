"""Starts the official wasi-testsuite runner, on Python 3.11 as well as 3.12 and later.

Usage: python3 runner.py TEST_RUNNER_DIR [runner arguments...]

The runner asks `"wasm32-wasip1" in WasiVersion` of its string enums, which only Python 3.12
answers; on older versions membership by value is added to enums first. The runner's cleanup
between tests also removes the symbolic links tests leave (below). Nothing else changes.
"""

import enum
import runpy
import sys

if sys.version_info < (3, 12):
    _contains = enum.EnumMeta.__contains__

    def _by_value(cls, value):  # type: ignore[no-untyped-def]
        if isinstance(value, cls):
            return _contains(cls, value)
        return any(m.value == value for m in cls)

    enum.EnumMeta.__contains__ = _by_value  # type: ignore[method-assign]

sys.path.insert(0, sys.argv[1])

# Between tests the runner removes what tests leave in their directory (names ending `.cleanup`)
# but skips symbolic links, so a link one test leaves (`parent.cleanup`) shows up in the next
# test's directory listing, and whether `filesystem-read-directory` passes depends on the order
# the tests happen to be listed in. Links are removed too (the link, never what it points to).
from wasi_test_runner import test_suite_runner as _tsr  # noqa: E402

_cleanup = _tsr._cleanup_test_output


def _cleanup_links_too(host_dir):  # type: ignore[no-untyped-def]
    for f in host_dir.glob("**/*.cleanup"):
        if f.is_symlink():
            f.unlink()
    _cleanup(host_dir)


_tsr._cleanup_test_output = _cleanup_links_too
sys.argv = ["wasi_test_runner"] + sys.argv[2:]
runpy.run_module("wasi_test_runner", run_name="__main__", alter_sys=True)
