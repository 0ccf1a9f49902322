"""The status taxonomy, Retry-After parsing, JSON bodies and body excerpts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from flowengine.errors import CallError
from flowengine.providers import http
from flowengine.providers.http import (
    HttpReply,
    is_retryable_status,
    parse_json,
    parse_retry_after,
    snippet,
)


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 502, 503, 504, 599])
def test_retryable_statuses(status: int) -> None:
    assert is_retryable_status(status)


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 410, 413, 418, 422, 200, 301])
def test_statuses_never_retried(status: int) -> None:
    assert not is_retryable_status(status)


def test_retry_after_seconds() -> None:
    assert parse_retry_after({"Retry-After": "7"}) == 7.0
    assert parse_retry_after({"Retry-After": " 1.5 "}) == 1.5


def test_retry_after_http_date() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"Retry-After": header}, now=now) == 30.0


def test_retry_after_in_the_past_is_zero() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    header = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"Retry-After": header}, now=now) == 0.0
    assert parse_retry_after({"Retry-After": "-5"}) == 0.0


def test_retry_after_is_kept_as_asked_and_garbage_ignored() -> None:
    # How long is too long is the retry policy's decision (RETRY_AFTER_CAP), not the parser's.
    assert parse_retry_after({"Retry-After": "86400"}) == 86400.0
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({"Retry-After": "nan"}) is None
    assert parse_retry_after({}) is None


def test_retry_after_ms_wins() -> None:
    assert parse_retry_after({"retry-after-ms": "250", "Retry-After": "9"}) == 0.25


def test_snippet_is_short_single_line_and_drops_html() -> None:
    assert snippet("<html><body><h1>502 Bad Gateway</h1></body></html>") == "502 Bad Gateway"
    long = snippet("x" * 1000)
    assert len(long) == 200 and long.endswith("…")
    assert snippet("a\n  b\tc") == "a b c"


def test_snippet_masks_what_looks_like_a_credential_before_cutting() -> None:
    text = "invalid header: Authorization: Bearer sk-or-v1-RELTEST-7f3c9d2e1 " + "x" * 300
    shown = snippet(text)
    assert "RELTEST" not in shown and "7f3c" not in shown
    assert "Bearer ***" in shown
    assert "sk-***" in snippet("your key sk-abcdef123456 is invalid")


@pytest.mark.parametrize(
    "body",
    [
        b'{"answer": "caf\xc3\xa9"}',
        b'\xef\xbb\xbf{"answer": "caf\xc3\xa9"}',  # UTF-8 with a byte-order mark
        '{"answer": "café"}'.encode("utf-16"),
        '{"answer": "café"}'.encode("utf-32-le"),
    ],
)
def test_json_bodies_in_any_encoding_json_allows(body: bytes) -> None:
    assert parse_json(HttpReply(200, {}, body), "the server") == {"answer": "café"}


@pytest.mark.parametrize("body", [b'{"answer": \xff}', b"\xff\xfe{", b"{truncated", b""])
def test_a_body_that_is_not_json_is_a_malformed_reply(body: bytes) -> None:
    with pytest.raises(CallError) as raised:
        parse_json(HttpReply(502, {}, body), "the server")
    assert (raised.value.type, raised.value.retryable, raised.value.status) == (
        "malformed",
        True,
        502,
    )
    assert "the server returned a body that is not JSON (HTTP 502)" in raised.value.message


async def _serve(handler: Any) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/"


@pytest.mark.parametrize("announced", [True, False], ids=["content-length", "chunked"])
async def test_a_reply_larger_than_the_bound_is_refused_not_read_whole(
    monkeypatch: pytest.MonkeyPatch, announced: bool
) -> None:
    monkeypatch.setattr(http, "MAX_BODY", 1000)

    async def reply(request: web.Request) -> web.StreamResponse:
        size = int((await request.json())["size"])
        if announced:
            return web.Response(body=b"x" * size)
        chunked = web.StreamResponse()
        await chunked.prepare(request)
        for _ in range(size // 100):
            await chunked.write(b"x" * 100)
        await chunked.write_eof()
        return chunked

    runner, url = await _serve(reply)
    try:
        async with aiohttp.ClientSession() as session:
            fits = await http.request(
                session, "POST", url, b'{"size": 1000}', headers={}, timeout=5, what="the server"
            )
            with pytest.raises(CallError, match="the server sent a body larger than 1,000 bytes"):
                await http.request(
                    session,
                    "POST",
                    url,
                    b'{"size": 5000}',
                    headers={},
                    timeout=5,
                    what="the server",
                )
    finally:
        await runner.cleanup()
    assert fits.body == b"x" * 1000
