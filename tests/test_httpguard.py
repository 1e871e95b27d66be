"""The HTTP guards both servers share: body limit (413 / 400) and the loopback check."""

from __future__ import annotations

import asyncio
import json

import pytest

from alignkit.httpguard import BodyLimit, is_loopback, send_json


async def _respond(send, status, message):
    await send_json(send, status, json.dumps({"message": message}).encode())


def _call(headers: list[tuple[bytes, bytes]], chunks: list[bytes], limit: int = 10):
    """Run BodyLimit around an echo app; returns (status, body the app saw or the error JSON)."""
    seen: dict = {}

    async def app(scope, receive, send):
        msg = await receive()
        seen["body"] = msg["body"]
        await send_json(send, 200, b"{}")

    incoming = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[dict] = []

    async def receive():
        return incoming.pop(0)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    asyncio.run(BodyLimit(app, limit, _respond)(scope, receive, send))
    return sent[0]["status"], seen.get("body", sent[1]["body"])


@pytest.mark.parametrize(
    "headers, chunks, status",
    [
        ([(b"content-length", b"5")], [b"hello"], 200),
        ([(b"content-length", b"11")], [b"hello world"], 413),  # declared too large
        ([], [b"hello", b" world"], 413),  # streamed (chunked) past the limit
        ([(b"content-length", b"5x")], [b"hello"], 400),  # malformed: a bad request, not "too large"
        ([(b"content-length", b"-1")], [b"hello"], 400),
    ],
)
def test_body_limit(headers, chunks, status):
    got, body = _call(headers, chunks)
    assert got == status
    if status == 200:
        assert body == b"".join(chunks)  # the app gets the whole body, replayed


@pytest.mark.parametrize("host, expected", [("127.0.0.1", True), ("::1", True), ("localhost", True),
                                            ("127.8.9.1", True), ("0.0.0.0", False), ("10.0.0.1", False),
                                            ("example.com", False)])
def test_is_loopback(host, expected):
    assert is_loopback(host) is expected


def test_both_servers_use_the_shared_guards():
    from alignkit.annotate import app as annotate_app
    from alignkit.generate import server

    assert server.BodyLimit is BodyLimit and annotate_app.BodyLimit is BodyLimit
    assert server.is_loopback is is_loopback
