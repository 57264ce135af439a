#!/usr/bin/env python3
"""Native code on a guest thread, simulated: stops one `wasmbox-guest` thread of PID with ptrace
and makes it issue system calls, as code that escaped a guest would.

    inject.py PID --mark FILE [--port PORT]

Prints one JSON object: each call's result (a negative errno on failure).
- "execve": the guest thread runs `/bin/sh -c 'echo > FILE'`.
- "socket", "connect" (with --port): it opens a TCP socket and connects to 127.0.0.1:PORT.
- "handler_execve": it installs a SIGUSR2 handler on a fresh executable page and signals the
  process's main thread, whose handler then runs the same `execve` and stores the result.
x86_64 only. Needs the right to trace PID (root, here)."""

import argparse
import ctypes
import errno
import json
import os
import struct
import sys
import time

PTRACE_GETREGS, PTRACE_SETREGS = 12, 13
PTRACE_SINGLESTEP, PTRACE_DETACH = 9, 17
PTRACE_SEIZE, PTRACE_INTERRUPT = 0x4206, 0x4207
WALL = 0x40000000

SYS = {"mmap": 9, "rt_sigaction": 13, "socket": 41, "connect": 42, "close": 3,
       "execve": 59, "tgkill": 234}
SIGUSR2, SA_RESTORER, SA_RESTART = 12, 0x04000000, 0x10000000
SENTINEL = 0x5A5A5A5A5A5A5A5A

REGS = ["r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
        "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base",
        "gs_base", "ds", "es", "fs", "gs"]


class Regs(ctypes.Structure):
    _fields_ = [(n, ctypes.c_ulonglong) for n in REGS]


libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]


def ptrace(req, tid, addr=None, data=None):
    if libc.ptrace(req, tid, addr, data) == -1:
        e = ctypes.get_errno()
        raise OSError(e, f"ptrace({req}, {tid}): {os.strerror(e)}")


def signed(v):
    return v - (1 << 64) if v >= 1 << 63 else v


class Target:
    def __init__(self, pid):
        self.pid = pid
        self.mem = open(f"/proc/{pid}/mem", "r+b", buffering=0)

    def read(self, addr, n):
        self.mem.seek(addr)
        return self.mem.read(n)

    def write(self, addr, data):
        self.mem.seek(addr)
        self.mem.write(data)

    def guest_thread(self):
        for tid in sorted(os.listdir(f"/proc/{self.pid}/task"), key=int):
            with open(f"/proc/{self.pid}/task/{tid}/comm") as f:
                if f.read().strip() == "wasmbox-guest":
                    return int(tid)
        sys.exit(f"no wasmbox-guest thread in process {self.pid}")

    def syscall_instruction(self):
        """The address of a `syscall` instruction in one of the process's code mappings."""
        maps = open(f"/proc/{self.pid}/maps").read().splitlines()
        code = [l.split() for l in maps if l.split()[1].startswith("r-x") and len(l.split()) > 5]
        code.sort(key=lambda f: "libc" not in f[5])
        for f in code:
            lo, hi = (int(x, 16) for x in f[0].split("-"))
            try:
                data = self.read(lo, min(hi - lo, 1 << 24))
            except OSError:
                continue
            at = data.find(b"\x0f\x05")
            if at >= 0:
                return lo + at
        sys.exit("no syscall instruction found")


class Stopped:
    """One thread, stopped and ready to run system calls for us; restored on exit."""

    def __init__(self, target, tid):
        self.t, self.tid = target, tid
        self.at = target.syscall_instruction()

    def __enter__(self):
        ptrace(PTRACE_SEIZE, self.tid)
        ptrace(PTRACE_INTERRUPT, self.tid)
        os.waitpid(self.tid, WALL)
        self.saved = Regs()
        ptrace(PTRACE_GETREGS, self.tid, None, ctypes.byref(self.saved))
        return self

    def __exit__(self, *exc):
        ptrace(PTRACE_SETREGS, self.tid, None, ctypes.byref(self.saved))
        ptrace(PTRACE_DETACH, self.tid)

    def call(self, name, *args):
        r = Regs.from_buffer_copy(self.saved)
        r.rax, r.orig_rax, r.rip = SYS[name], (1 << 64) - 1, self.at
        for reg, a in zip(["rdi", "rsi", "rdx", "r10", "r8", "r9"], args):
            setattr(r, reg, a & ((1 << 64) - 1))
        ptrace(PTRACE_SETREGS, self.tid, None, ctypes.byref(r))
        ptrace(PTRACE_SINGLESTEP, self.tid)
        os.waitpid(self.tid, WALL)
        ptrace(PTRACE_GETREGS, self.tid, None, ctypes.byref(r))
        return signed(r.rax)


def layout(page, mark):
    """The page: the handler's code, the restorer, the strings and argv, the result word."""
    path, dash_c = page + 0x200, page + 0x210
    script, argv, result = page + 0x220, page + 0x400, page + 0x500
    cmd = f"echo injected > {mark}".encode() + b"\0"
    handler = (b"\x48\xbf" + struct.pack("<Q", path)      # movabs rdi, path
               + b"\x48\xbe" + struct.pack("<Q", argv)     # movabs rsi, argv
               + b"\x31\xd2"                               # xor edx, edx
               + b"\xb8" + struct.pack("<I", SYS["execve"])  # mov eax, execve
               + b"\x0f\x05"                               # syscall
               + b"\x48\xa3" + struct.pack("<Q", result)   # movabs [result], rax
               + b"\xc3")                                  # ret
    restorer = b"\xb8\x0f\x00\x00\x00\x0f\x05"             # mov eax, rt_sigreturn; syscall
    parts = {page: handler, page + 0x100: restorer, path: b"/bin/sh\0", dash_c: b"-c\0",
             script: cmd, argv: struct.pack("<QQQQ", path, dash_c, script, 0),
             result: struct.pack("<Q", SENTINEL)}
    act = struct.pack("<QQQQ", page, SA_RESTORER | SA_RESTART, page + 0x100, 0)
    parts[page + 0x600] = act
    return parts, path, argv, result, page + 0x600


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pid", type=int)
    ap.add_argument("--mark", required=True)
    ap.add_argument("--port", type=int)
    a = ap.parse_args()
    t = Target(a.pid)
    out = {}
    with Stopped(t, t.guest_thread()) as th:
        page = th.call("mmap", 0, 8192, 7, 0x22, -1, 0)  # RWX, MAP_PRIVATE | MAP_ANONYMOUS
        if page < 0:
            sys.exit(f"mmap in the guest thread: {os.strerror(-page)}")
        parts, path, argv, result, act = layout(page, a.mark)
        for addr, data in parts.items():
            t.write(addr, data)
        out["execve"] = th.call("execve", path, argv, 0)
        if a.port is not None:
            fd = th.call("socket", 2, 1, 0)  # AF_INET, SOCK_STREAM
            out["socket"] = fd
            if fd >= 0:
                sa = page + 0x700
                # sockaddr_in: the family in host order, the port in network order.
                t.write(sa, struct.pack("<H", 2) + struct.pack(">H", a.port)
                        + bytes([127, 0, 0, 1]) + bytes(8))
                out["connect"] = th.call("connect", fd, sa, 16)
                th.call("close", fd)
        out["rt_sigaction"] = th.call("rt_sigaction", SIGUSR2, act, 0, 8)
        if out["rt_sigaction"] == 0:
            out["tgkill"] = th.call("tgkill", a.pid, a.pid, SIGUSR2)
    if out.get("tgkill") == 0:
        # The main thread runs the handler when the signal reaches it: wait for its result.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                v = struct.unpack("<Q", t.read(result, 8))[0]
            except OSError:
                out["handler_execve"] = "the process is gone"
                break
            if v != SENTINEL:
                out["handler_execve"] = signed(v)
                break
            time.sleep(0.01)
        else:
            out["handler_execve"] = "no result"
    out["errors"] = {k: errno.errorcode.get(-v, v) for k, v in out.items()
                     if isinstance(v, int) and v < 0}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
