"""An HTTP component in Python (the `wasi:http/proxy` world, built with componentize-py).

Routes:
  /            a greeting
  /echo        the request body, streamed back as it arrives
  /fetch?url=U a GET of U through `wasi:http/outgoing-handler`: its body, or 502 and the error
               (wasmbox denies every authority not granted with --allow-http)
"""

import asyncio
from urllib import parse

from componentize_py_types import Ok
from poll_loop import PollLoop, Sink, Stream, send
from wit_world import exports
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    Method_Get,
    OutgoingRequest,
    OutgoingResponse,
    ResponseOutparam,
    Scheme_Http,
    Scheme_Https,
)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        loop = PollLoop()
        asyncio.set_event_loop(loop)
        loop.run_until_complete(handle_async(request, response_out))


async def handle_async(request: IncomingRequest, response_out: ResponseOutparam) -> None:
    path, _, query = (request.path_with_query() or "/").partition("?")
    if path == "/":
        await respond(response_out, 200, b"hello from python\n")
    elif path == "/echo":
        response = OutgoingResponse(
            Fields.from_list([("content-type", b"application/octet-stream")])
        )
        sink = Sink(response.body())
        ResponseOutparam.set(response_out, Ok(response))
        stream = Stream(request.consume())
        while True:
            chunk = await stream.next()
            if chunk is None:
                break
            await sink.send(chunk)
        sink.close()
    elif path == "/fetch":
        url = parse.urlsplit(parse.parse_qs(query).get("url", [""])[0])
        outgoing = OutgoingRequest(Fields())
        outgoing.set_method(Method_Get())
        outgoing.set_scheme(Scheme_Https() if url.scheme == "https" else Scheme_Http())
        outgoing.set_authority(url.netloc)
        outgoing.set_path_with_query(url.path + ("?" + url.query if url.query else "") or "/")
        try:
            upstream = await send(outgoing)
        except Exception as e:
            print(f"fetch {url.geturl()} failed: {e!r}")
            await respond(response_out, 502, f"outgoing request failed: {e!r}\n".encode())
            return
        stream = Stream(upstream.consume())
        got = b""
        while True:
            chunk = await stream.next()
            if chunk is None:
                break
            got += chunk
        await respond(response_out, upstream.status(), got)
    else:
        await respond(response_out, 404, b"not found\n")


async def respond(response_out: ResponseOutparam, status: int, body: bytes) -> None:
    response = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
    response.set_status_code(status)
    sink = Sink(response.body())
    ResponseOutparam.set(response_out, Ok(response))
    await sink.send(body)
    sink.close()
