"""The HTTP boundary: one POST, foreign exceptions translated to :class:`CallError`.

Everything aiohttp, asyncio or the network can throw is turned into a ``CallError`` here, so
retry rules elsewhere look only at our own type. Also the status taxonomy and ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
import re
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp

from flowengine.errors import CallError

T = TypeVar("T")

#: Statuses worth another try besides 5xx: timeout, conflict, too early, rate limited.
RETRY_STATUSES = frozenset({408, 409, 425, 429})
#: Statuses that the same request will always get again.
NEVER_RETRY_STATUSES = frozenset({400, 401, 402, 403, 404, 413, 422})
#: A server asking for more than this is clamped; the retry policy decides what to do with it.
RETRY_AFTER_CAP = 300.0
#: Error messages quote at most this much of a response body.
SNIPPET = 200


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


def snippet(text: str, limit: int = SNIPPET) -> str:
    """Short single-line excerpt of a body for an error message; HTML tags are dropped."""
    if "<" in text and ">" in text:
        text = re.sub(r"<[^>]*>", " ", text)
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
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


def parse_json(reply: HttpReply, what: str) -> Any:
    """The body as JSON, or a retryable ``malformed`` error quoting the start of the body."""
    try:
        # UTF-8, as JSON over HTTP is: json.loads(bytes) would first guess the encoding in
        # Python code, on every reply.
        return json.loads(reply.body.decode())
    except ValueError:
        pass
    try:
        return json.loads(reply.body)  # a byte-order mark, or UTF-16/32: json's own guess
    except ValueError:
        raise CallError(
            "malformed",
            f"{what} returned a body that is not JSON"
            f" (HTTP {reply.status}): {snippet(reply.text)!r}",
            status=reply.status,
            retryable=True,
        ) from None


def post_parsed(
    session: aiohttp.ClientSession,
    url: str,
    payload: Mapping[str, Any],
    *,
    headers: Mapping[str, str],
    timeout: float,
    what: str,
    parse: Callable[[HttpReply], T],
) -> Coroutine[Any, Any, T]:
    """POST ``payload``, read the whole reply and return ``parse(reply)``, in one coroutine;
    every failure, ``parse``'s included, is a :class:`CallError`.

    ``what`` names the remote side in messages ("openrouter", "model selector"). The
    request headers, which may hold an API key, never appear in a message or a cause.

    A plain function returning the coroutine, so that a caller can return it in turn: every
    suspension of a call resumes each coroutine frame between the event loop and the socket,
    and each frame a call does not need is work saved on every one.
    """
    return _request(session, "POST", url, payload, headers, timeout, what, parse)


def get_json(
    session: aiohttp.ClientSession,
    url: str,
    *,
    headers: Mapping[str, str],
    timeout: float,
    what: str,
) -> Coroutine[Any, Any, HttpReply]:
    """GET ``url`` and read the whole reply; every failure is a :class:`CallError`."""
    return _request(session, "GET", url, None, headers, timeout, what, _as_is)


def _as_is(reply: HttpReply) -> HttpReply:
    return reply


@functools.lru_cache(maxsize=64)
def _client_timeout(total: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=total)


async def _request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    payload: Mapping[str, Any] | None,
    headers: Mapping[str, str],
    timeout: float,
    what: str,
    parse: Callable[[HttpReply], T],
) -> T:
    try:
        async with session.request(
            method,
            url,
            json=payload,
            headers=headers or None,  # aiohttp does less work for no headers than for {}
            timeout=_client_timeout(timeout),
        ) as response:
            raw = await response.read()
            reply = HttpReply(response.status, response.headers, raw)
        return parse(reply)
    except CallError as raised:
        clean = redacted(raised, headers)
        if clean is raised:
            raise
        cause = None  # it quoted the key, so its cause may well do too
    except Exception as exc:
        translated = translate(exc, what=what, url=url, timeout=timeout)
        clean = redacted(translated, headers)
        # ClientResponseError carries request_info, whose headers include Authorization; and
        # an exception whose text had the key masked keeps it in its own text.
        masked = clean is not translated
        cause = None if masked or isinstance(exc, aiohttp.ClientResponseError) else exc
    # Raised outside the handlers, so that an unmasked error is not kept as __context__.
    raise clean from cause


def redacted(error: CallError, headers: Mapping[str, str]) -> CallError:
    """``error`` with the API key masked, should a server have echoed it back."""
    authorization = headers.get("Authorization") if headers else None
    if not authorization:
        return error
    key = authorization.removeprefix("Bearer ").strip()
    if len(key) < 4 or key not in error.message:
        return error
    return CallError(
        error.type,
        error.message.replace(key, "***"),
        status=error.status,
        retryable=error.retryable,
        retry_after=error.retry_after,
    )


def translate(exc: BaseException, *, what: str, url: str, timeout: float) -> CallError:
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
