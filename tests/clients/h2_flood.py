#!/usr/bin/env python3
"""An HTTP/2 (h2c) client that floods a server with streams, for the serving limits tests.

CONNECTIONS connections (all opened first) each open STREAMS streams at once, every HEADERS frame carrying a path
PATH_BYTES long (HPACK sends a repeated value as a few bytes) and, with --header-bytes, one
header field that long. Once every frame is sent it prints `sent` on a line of its own, then
reads until every stream is answered or reset, or DEADLINE seconds pass, and prints one JSON
object: responses by status, resets by error code, streams left unanswered.
"""
import argparse
import json
import selectors
import socket
import sys
import time

import h2.config
import h2.connection
import h2.events


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("addr", help="HOST:PORT")
    ap.add_argument("--connections", type=int, default=1)
    ap.add_argument("--streams", type=int, default=1)
    ap.add_argument("--path", default="/")
    ap.add_argument("--path-bytes", type=int, default=0)
    ap.add_argument("--header-bytes", type=int, default=0)
    ap.add_argument("--deadline", type=float, default=120)
    a = ap.parse_args()
    host, port = a.addr.rsplit(":", 1)
    path = a.path
    if a.path_bytes > len(path) + 1:
        path += "?" + "a" * (a.path_bytes - len(path) - 1)
    headers = [(":method", "GET"), (":path", path), (":scheme", "http"), (":authority", a.addr)]
    if a.header_bytes:
        headers.append(("x-big", "b" * a.header_bytes))

    sel = selectors.DefaultSelector()
    open_streams = {}
    statuses, resets = {}, {}
    cut = 0
    # Every connection first, so that each is accepted before the first requests take the
    # server's slots (past them it accepts no more); then the streams.
    socks = [socket.create_connection((host, int(port))) for _ in range(a.connections)]
    for sock in socks:
        conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        conn.initiate_connection()
        ids = set()
        for _ in range(a.streams):
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, headers, end_stream=True)
            ids.add(sid)
        sock.sendall(conn.data_to_send())
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, conn)
        open_streams[sock] = ids
    print("sent", flush=True)

    end = time.monotonic() + a.deadline
    while any(open_streams.values()) and time.monotonic() < end:
        for key, _ in sel.select(timeout=0.5):
            sock, conn = key.fileobj, key.data
            try:
                data = sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            ids = open_streams[sock]
            if not data:
                sel.unregister(sock)
                cut += len(ids)
                ids.clear()
                continue
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    status = dict(ev.headers).get(":status", "?")
                    statuses[status] = statuses.get(status, 0) + 1
                elif isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, h2.events.StreamEnded):
                    ids.discard(ev.stream_id)
                elif isinstance(ev, h2.events.StreamReset):
                    code = int(ev.error_code)
                    resets[code] = resets.get(code, 0) + 1
                    ids.discard(ev.stream_id)
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    cut += len(ids)
                    ids.clear()
            out = conn.data_to_send()
            if out:
                try:
                    sock.setblocking(True)
                    sock.sendall(out)
                    sock.setblocking(False)
                except OSError:
                    cut += len(ids)
                    ids.clear()
    left = cut + sum(len(ids) for ids in open_streams.values())
    for sock in open_streams:
        sock.close()
    json.dump({"statuses": statuses, "resets": {str(k): v for k, v in resets.items()}, "left": left}, sys.stdout)
    print(flush=True)


if __name__ == "__main__":
    main()
