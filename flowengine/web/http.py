"""JSON in and out: bounded request bodies, and errors in OpenAI's shape.

Every error the server answers, on every route, is ``{"error": {"message", "type", "param",
"code"}}``, as OpenAI's API writes them, so that one client handles the OpenAI endpoint and the
REST API alike. A 5xx carries ``x-should-retry: false``: the official SDKs retry a 5xx unless
told not to, and a failed workflow would fail again (and be paid for again).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

#: The largest request body read, in bytes: a chat request with a long conversation fits.
MAX_BODY = 4 * 1024 * 1024


class HttpError(Exception):
    """An error answer: raised by a handler, written by the app's error middleware."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        #: Fields besides ``error`` in the body (a failed run's ``flowengine``).
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        error = {"message": self.message, "type": self.type, "param": self.param}
        return {"error": {**error, "code": self.code}, **self.extra}

    def response(self) -> web.Response:
        headers = {"x-should-retry": "false"} if self.status >= 500 else {}
        if self.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return json_response(self.body(), status=self.status, headers=headers)


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=json.dumps(data),
        status=status,
        content_type="application/json",
        headers=headers,
    )


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request's body as a JSON object; HttpError 400 when it is not one, or too large."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise _too_large()
    try:
        raw = await request.read()  # the app's client_max_size bounds what is read
    except web.HTTPRequestEntityTooLarge:
        raise _too_large() from None
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, nested past the stack
        raise HttpError(
            400, f"the body is not valid JSON: {_reason(exc)}", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise HttpError(400, "the body must be a JSON object", code="invalid_json")
    return body


def _too_large() -> HttpError:
    return HttpError(
        400, f"the body is larger than {MAX_BODY // (1024 * 1024)} MiB", code="body_too_large"
    )


def _reason(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deep"
    return str(exc).splitlines()[0][:200]


def query_int(request: web.Request, name: str, default: int, most: int) -> int:
    """A whole-number query parameter between 1 and ``most``; HttpError 400 otherwise."""
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isdigit() or not 1 <= int(text) <= most:
        raise HttpError(400, f"{name} must be a whole number from 1 to {most}", param=name)
    return int(text)


def text_param(request: web.Request, name: str) -> str | None:
    """An optional text query parameter; empty counts as absent."""
    return request.query.get(name) or None
