"""The HTTP boundary: one POST, read whole or as a stream of server-sent events; foreign
exceptions translated to :class:`CallError`.

Everything aiohttp, asyncio or the network can throw is turned into a ``CallError`` here (by
:func:`call_error_from`), so retry rules elsewhere look only at our own type. Also the status
taxonomy, ``Retry-After``, and the masking of API keys in anything a server sends back.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from flowengine.errors import CallError
from flowengine.providers.sse import EventTooLarge, SseDecoder

#: Statuses worth another try besides 5xx: timeout, conflict, too early, rate limited.
RETRY_STATUSES = frozenset({408, 409, 425, 429})
#: Statuses that the same request will always get again.
NEVER_RETRY_STATUSES = frozenset({400, 401, 402, 403, 404, 413, 422})
#: Error messages quote at most this much of a response body.
SNIPPET = 200
#: The content type of a server-sent event stream.
EVENT_STREAM = "text/event-stream"
#: The most a streamed reply may send in all (the answer is kept in memory), and the most any
#: other reply (an answer read whole, an error, a selector's choice) may send in one body.
MAX_STREAM = 64 << 20
MAX_BODY = 64 << 20


@dataclass(slots=True)
class HttpReply:
    """A response read in full: status, headers and body."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        """The body as text, for messages; only read when something went wrong."""
        return self.body.decode("utf-8", "replace")


def is_retryable_status(status: int) -> bool:
    """408, 409, 425, 429 and every 5xx; no other status."""
    return status in RETRY_STATUSES or 500 <= status <= 599


#: What looks like a credential in a body: a bearer token, or an ``sk-...`` style key.
_CREDENTIAL = re.compile(r"(?i)(\bbearer\s+)[^\s\"',;]+|\b(sk-)[A-Za-z0-9_\-]{6,}")


def snippet(text: str, limit: int = SNIPPET) -> str:
    """Short single-line excerpt of a body for an error message; HTML tags are dropped, and
    anything that looks like a credential is masked before the text is cut."""
    if "<" in text and ">" in text:
        text = re.sub(r"<[^>]*>", " ", text)
    text = _CREDENTIAL.sub(lambda m: (m.group(1) or m.group(2)) + "***", text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_retry_after(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP-date)."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return _clamp(float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    try:
        return _clamp(float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return _clamp((when - (now or datetime.now(UTC))).total_seconds())


def _clamp(seconds: float) -> float | None:
    """Not negative; NaN is no answer. How long is too long is the retry policy's decision."""
    if math.isnan(seconds):
        return None
    return max(seconds, 0.0)


def parse_json(reply: HttpReply, what: str) -> Any:
    """The body as JSON, or a retryable ``malformed`` error quoting the start of the body."""
    try:
        # UTF-8 first, as JSON over HTTP is: json.loads(bytes) would guess the encoding in
        # Python code on every reply. Only a body that is not UTF-8 gets json's own guess.
        return json.loads(reply.body.decode("utf-8-sig"))
    except ValueError:  # UnicodeDecodeError included
        pass
    try:
        return json.loads(reply.body)
    except ValueError:
        raise CallError(
            "malformed",
            f"{what} returned a body that is not JSON"
            f" (HTTP {reply.status}): {snippet(reply.text)!r}",
            status=reply.status,
            retryable=True,
        ) from None


def json_payload(body: bytes) -> aiohttp.payload.BytesPayload:
    """``body`` as what aiohttp sends, typed as JSON (so ``headers`` need not say so)."""
    return aiohttp.payload.BytesPayload(body, content_type="application/json")


async def request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    body: bytes | None = None,
    *,
    headers: Mapping[str, str],
    timeout: float,
    what: str,
) -> HttpReply:
    """Send ``body`` (JSON, if any) and read the whole reply; every failure is a
    :class:`CallError`.

    ``what`` names the remote side in messages ("provider 'openrouter'", "model selector").
    The request headers, which may hold an API key, never appear in a message or a cause,
    and the key is masked in the reply's body, should a server echo it.
    """
    try:
        async with session.request(
            method,
            url,
            data=None if body is None else json_payload(body),
            headers=headers or None,  # aiohttp does less for no headers than for {}
            timeout=_client_timeout(timeout),
        ) as response:
            body = await _read_bounded(response.content, MAX_BODY, what, response.content_length)
            return HttpReply(response.status, response.headers, _masked(body, headers))
    except CallError:
        raise
    except Exception as exc:
        clean, cause = _translated(exc, what=what, url=url, timeout=timeout, headers=headers)
    raise clean from cause


async def stream(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    *,
    headers: Mapping[str, str],
    timeout: float,
    what: str,
    on_data: Callable[[str], bool],
) -> HttpReply | None:
    """POST ``body`` (JSON) and read the reply as server-sent events: ``on_data(data)`` for each
    event, until it returns True or the stream ends. None when the reply was a stream.

    A reply that is not a stream (an error status, or a server that answered with one JSON
    body) is read whole and returned instead, for the caller to read as any other reply.
    ``timeout`` bounds the wait for the reply's headers, then for each event: a stream that
    sends nothing but comments for that long has stalled. What ``on_data`` raises propagates
    unchanged; every other failure is a :class:`CallError`, the key masked as in :func:`request`.
    """
    try:
        async with session.post(
            url,
            data=json_payload(body),
            headers=headers or None,
            timeout=_stream_timeout(timeout),
        ) as response:
            if not 200 <= response.status <= 299 or response.content_type != EVENT_STREAM:
                body = await _read_bounded(
                    response.content, MAX_BODY, what, response.content_length
                )
                return HttpReply(response.status, response.headers, _masked(body, headers))
            await _read_events(response.content, on_data, timeout, what, _api_key(headers))
            return None
    except CallError:
        raise
    except Exception as exc:
        clean, cause = _translated(exc, what=what, url=url, timeout=timeout, headers=headers)
    raise clean from cause


async def _read_events(
    content: aiohttp.StreamReader,
    on_data: Callable[[str], bool],
    timeout: float,
    what: str,
    key: str | None,
) -> None:
    """Decode events as bytes arrive; the stall deadline moves with each event, not with
    comments, which a server may send forever while the answer never comes."""
    decoder = SseDecoder()
    loop = asyncio.get_running_loop()
    received = 0
    try:
        async with asyncio.timeout(timeout) as stall:
            async for chunk in content.iter_any():
                received += len(chunk)
                if received > MAX_STREAM:
                    raise EventTooLarge(f"more than {MAX_STREAM:,} bytes in all")
                for data in decoder.feed(chunk):
                    stall.reschedule(loop.time() + timeout)
                    if on_data(_masked_text(data, key)):
                        return
            for data in decoder.close():
                if on_data(_masked_text(data, key)):
                    return
    except TimeoutError:
        raise CallError(
            "timeout", f"{what} sent no data for {timeout:g}s (the stream stalled)", retryable=True
        ) from None
    except EventTooLarge as exc:
        raise CallError("malformed", f"{what} sent a stream with {exc}; not read further") from None


async def _read_bounded(
    content: aiohttp.StreamReader, limit: int, what: str, announced: int | None = None
) -> bytes:
    """A whole body of at most ``limit`` bytes: one announced as larger is refused unread, and
    one that grows past the bound is refused as soon as it does."""
    if announced is not None:
        if announced > limit:
            raise CallError("malformed", f"{what} sent a body larger than {limit:,} bytes")
        return await content.read()  # aiohttp reads no more than the length announced
    chunks, size = [], 0
    async for chunk in content.iter_any():
        size += len(chunk)
        if size > limit:
            raise CallError("malformed", f"{what} sent a body larger than {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _translated(
    exc: Exception, *, what: str, url: str, timeout: float, headers: Mapping[str, str]
) -> tuple[CallError, BaseException | None]:
    """The CallError for ``exc``, and the cause that may be chained to it (None when it could
    reveal the key)."""
    clean = redacted(call_error_from(exc, what=what, url=url, timeout=timeout), headers)
    # ClientResponseError carries request_info, whose headers include Authorization; and
    # an exception that quoted the key keeps it in its own text.
    hidden = isinstance(exc, aiohttp.ClientResponseError) or _quotes_key(exc, headers)
    return clean, None if hidden else exc


@functools.lru_cache(maxsize=64)
def _client_timeout(total: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=total)  # immutable: one per distinct timeout


@functools.lru_cache(maxsize=64)
def _stream_timeout(timeout: float) -> aiohttp.ClientTimeout:
    # No total: a long answer streams for as long as it is written. The headers must come
    # within the timeout; after them, _read_events bounds the wait for each event.
    return aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)


def _api_key(headers: Mapping[str, str]) -> str | None:
    authorization = headers.get("Authorization") if headers else None
    key = authorization.removeprefix("Bearer ").strip() if authorization else ""
    return key if len(key) >= 4 else None


def _masked(body: bytes, headers: Mapping[str, str]) -> bytes:
    """The body with the API key masked, should a server echo it back: before any excerpt of
    it is cut, so that no prefix of the key survives either."""
    key = _api_key(headers)
    return body.replace(key.encode(), b"***") if key and key.encode() in body else body


def _masked_text(data: str, key: str | None) -> str:
    return data.replace(key, "***") if key and key in data else data


def _quotes_key(exc: BaseException, headers: Mapping[str, str]) -> bool:
    key = _api_key(headers)
    try:
        return key is not None and key in str(exc)
    except Exception:  # an exception whose str() fails: keep it out of the chain too
        return True


def redacted(error: CallError, headers: Mapping[str, str]) -> CallError:
    """``error`` with the API key masked, should an exception's text have quoted it."""
    key = _api_key(headers)
    if key is None or key not in error.message:
        return error
    return CallError(
        error.type,
        error.message.replace(key, "***"),
        status=error.status,
        retryable=error.retryable,
        retry_after=error.retry_after,
    )


def call_error_from(exc: BaseException, *, what: str, url: str, timeout: float) -> CallError:
    """Map one foreign exception to a :class:`CallError`; the only place that knows aiohttp."""
    name = type(exc).__name__
    if isinstance(exc, asyncio.TimeoutError):  # includes aiohttp.ServerTimeoutError
        return CallError("timeout", f"{what} did not answer within {timeout:g}s", retryable=True)
    if isinstance(exc, aiohttp.InvalidURL):
        return CallError("config", f"invalid URL for {what}: {snippet(str(url))}")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return CallError("malformed", f"{what} sent a truncated body ({name})", retryable=True)
    if isinstance(exc, aiohttp.ClientResponseError):
        return CallError(
            "malformed",
            f"{what} sent an invalid HTTP response ({name} {exc.status}: {snippet(exc.message)})",
            retryable=True,
        )
    if isinstance(exc, aiohttp.ClientError | OSError):
        detail = snippet(str(exc)) or "connection closed"
        return CallError("connection", f"cannot reach {what} ({name}: {detail})", retryable=True)
    return CallError("internal", f"calling {what} failed: {name}: {snippet(str(exc))}")
