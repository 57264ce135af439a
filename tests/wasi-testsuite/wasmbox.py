"""wasi-testsuite runtime adapter for wasmbox: runs each test through `wasmbox run`, and each
test of the `wasi:http/service` world through `wasmbox serve --addr 127.0.0.1:0` (its readiness
line, the first on stderr, names the address the runner sends requests to).

The runner (`python -m wasi_test_runner -r tests/wasi-testsuite/wasmbox.py ...`) calls
`compute_argv` once per test. `WASMBOX` names the binary (default: `wasmbox` on PATH). A test's
environment becomes `-e` flags (the guest sees exactly these), its directory is granted read-write
as `/`, tests of the `http` proposal may send requests to loopback (the runner's servers, named
to the guest as `HTTP_SERVER_*`), and tests that use sockets get connections to and listening on 127.0.0.1 and ::1, any
port, TCP and UDP, and name lookups. Inside a network namespace that holds only loopback (run.sh
makes one and says so with WASMBOX_TESTSUITE_NETNS=1) they get every address instead, as
`wasmtime -Sinherit-network` does: some tests bind the wildcard address, or expect the kernel's
answer for an address the host does not have.
"""

import os
import shlex
import subprocess
from typing import Dict, List, Optional, Tuple

WASMBOX = shlex.split(os.getenv("WASMBOX", "wasmbox"))


def get_name() -> str:
    return "wasmbox"


def get_version() -> str:
    out = subprocess.run(WASMBOX[0:1] + ["--version"], encoding="UTF-8",
                         capture_output=True, check=True)
    return out.stdout.split()[1]


def get_wasi_versions() -> List[str]:
    return ["wasm32-wasip1", "wasm32-wasip3"]


def get_wasi_worlds() -> List[str]:
    return ["wasi:cli/command", "wasi:http/service"]


LOOPBACK = ["127.0.0.1:*", "[::1]:*", "udp:127.0.0.1:*", "udp:[::1]:*"]
EVERY_ADDRESS = ["0.0.0.0/0:*", "[::/0]:*", "udp:0.0.0.0/0:*", "udp:[::/0]:*"]


def compute_argv(test_path: str,
                 args_env_root: Tuple[List[str], Dict[str, str], Optional[str]],
                 proposals: List[str],
                 wasi_world: str,
                 wasi_version: str) -> List[str]:
    args, env, root = args_env_root
    if wasi_world == "wasi:http/service":
        argv = WASMBOX + ["serve", "--addr", "127.0.0.1:0"]
    else:
        argv = WASMBOX + ["run"]
    for k, v in env.items():
        argv += ["-e", f"{k}={v}"]
    if root:
        argv += ["-v", f"{os.path.abspath(root)}:/"]
    if "http" in proposals:
        argv += ["--allow-http", "127.0.0.1:*"]
    if "sockets" in proposals:
        own_netns = os.getenv("WASMBOX_TESTSUITE_NETNS") == "1"
        for a in EVERY_ADDRESS if own_netns else LOOPBACK:
            argv += ["--allow-connect", a, "--listen", a]
        argv += ["--allow-dns"]
    argv += [test_path, "--"] if args and args[0].startswith("-") else [test_path]
    return argv + args
