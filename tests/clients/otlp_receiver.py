"""A local OTLP/HTTP trace receiver for the tests, and a server that records `traceparent`.

Usage: python3 otlp_receiver.py

Listens on two loopback ports and prints, first, `{"ports": [OTLP, DOWNSTREAM]}`. Then:
- each span POSTed to OTLP's /v1/traces (protobuf, decoded with the `opentelemetry-proto`
  package) is printed as one JSON line: {"span": name, "kind", "trace", "id", "parent",
  "attributes": {...}, "service": service.name}, ids in hex;
- each request to DOWNSTREAM is answered 200 `down` and printed as {"traceparent": value}.
Runs until killed.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

lock = threading.Lock()


def emit(obj):
    with lock:
        print(json.dumps(obj), flush=True)


def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


class Otlp(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        req = trace_service_pb2.ExportTraceServiceRequest()
        req.ParseFromString(body)
        for rs in req.resource_spans:
            res = {a.key: value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    emit({
                        "span": s.name,
                        "kind": s.kind,
                        "trace": s.trace_id.hex(),
                        "id": s.span_id.hex(),
                        "parent": s.parent_span_id.hex(),
                        "attributes": {a.key: value(a.value) for a in s.attributes},
                        "service": res.get("service.name"),
                        "resource": res,
                    })
        out = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


class Down(BaseHTTPRequestHandler):
    def do_GET(self):
        emit({"traceparent": self.headers.get("traceparent")})
        self.send_response(200)
        self.send_header("content-length", "4")
        self.end_headers()
        self.wfile.write(b"down")

    def log_message(self, *args):
        pass


otlp = ThreadingHTTPServer(("127.0.0.1", 0), Otlp)
down = ThreadingHTTPServer(("127.0.0.1", 0), Down)
threading.Thread(target=down.serve_forever, daemon=True).start()
emit({"ports": [otlp.server_address[1], down.server_address[1]]})
otlp.serve_forever()
