"""Guards both HTTP servers share (the annotation app and the OpenAI-compatible ``serve``).

* :func:`is_loopback`: whether a bind address is reachable only from this machine;
* :class:`BodyLimit`: ASGI middleware that refuses a request body above a byte limit with 413,
  whether the size is declared (``Content-Length``) or streamed (chunked), and a malformed
  ``Content-Length`` (not a decimal number) with 400. The body is read here, up to the limit, and
  replayed to the app: a limit enforced inside the framework's own parsing would surface as a
  generic 400 after the whole body was buffered.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable

# respond(send, status, message): write a complete error response in the server's own format
Respond = Callable[[Callable, int, str], Awaitable[None]]


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BodyLimit:
    """ASGI middleware: 413 for a body above ``limit`` bytes, 400 for a malformed Content-Length."""

    def __init__(self, app, limit: int, respond: Respond):
        self.app, self.limit, self.respond = app, limit, respond

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                return await self.respond(send, 400, f"malformed Content-Length header {declared[:32]!r}")
            if int(declared) > self.limit:
                return await self.respond(send, 413, f"request body exceeds {self.limit} bytes")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                return await self.respond(send, 413, f"request body exceeds {self.limit} bytes")
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def send_json(send, status: int, payload: bytes) -> None:
    """Send a complete JSON response through a raw ASGI ``send``."""
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
