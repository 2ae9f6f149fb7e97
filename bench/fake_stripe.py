"""An instant fake Stripe for the checkout benchmark: `python -m bench.fake_stripe PORT`.

It answers the two calls a checkout makes (`POST /v1/customers`, `POST /v1/checkout/sessions`) with new ids,
at once, on keep-alive connections. It runs in its own process on asyncio, each answer one write: the
threaded `http.server` it replaces wrote headers and body separately (Nagle + delayed ACK: 40 ms a call)
and, even without that, spent 0.17 ms of CPU an answer under the bench process's GIL (this: 0.07 ms).
The benchmark reports its CPU, so a fake near a full core would show.
"""

import asyncio
import json
import socket
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager


def _answer(path: bytes) -> bytes:
    if path == b"/v1/customers":
        body: dict[str, str] | None = {"id": f"cus_bench{uuid.uuid4().hex[:12]}", "object": "customer"}
    elif path == b"/v1/checkout/sessions":
        session = f"cs_bench_{uuid.uuid4().hex}"
        body = {"id": session, "object": "checkout.session", "url": f"https://checkout.stripe.test/{session}"}
    else:
        body = None
    payload = json.dumps(body or {"error": {"type": "invalid_request_error", "message": "unknown path"}}).encode()
    status = b"200 OK" if body else b"404 Not Found"
    head = b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (status, len(payload))
    return head + payload


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:  # one request after another on the connection (stripe-python keeps it alive)
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, _, headers = head.partition(b"\r\n")
            path = request_line.split(b" ", 2)[1].split(b"?", 1)[0]
            for header in headers.split(b"\r\n"):
                name, _, value = header.partition(b":")
                if name.strip().lower() == b"content-length" and int(value):
                    await reader.readexactly(int(value))
            writer.write(_answer(path))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


@contextmanager
def fake_stripe() -> Iterator[tuple[str, int]]:
    """Run the fake in its own process: yields its base URL and pid; always stopped."""
    from bench.common import free_port, managed_process

    port = free_port()

    def ready() -> bool:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True

    command = [sys.executable, "-m", "bench.fake_stripe", str(port)]
    with managed_process(command, name="fake-stripe", ready=ready) as process:
        yield f"http://127.0.0.1:{port}", process.pid


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
