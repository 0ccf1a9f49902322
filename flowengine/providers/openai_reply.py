"""Reading a chat completions reply: the answer, its usage, and every error shape servers send.

Besides the documented shape, this reads what OpenRouter really sends: error objects inside an
HTTP 200, upstream details under ``error.metadata.raw``, ``finish_reason: "error"`` and
``usage.cost``. Whole replies here; streamed ones in :mod:`.openai_stream`, with the same parts.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from flowengine.errors import CallError
from flowengine.providers.base import Completion
from flowengine.providers.http import (
    HttpReply,
    is_retryable_status,
    parse_json,
    parse_retry_after,
    snippet,
)
from flowengine.results import Usage
from flowengine.text import without_lone_surrogates

# String error codes that mean the request or the key is wrong: trying again cannot help.
_FATAL_CODE = re.compile(
    r"auth|unauthori[sz]ed|forbidden|permission|invalid|bad_request|not_found|"
    r"insufficient|quota|context_length|moderation|payment",
    re.IGNORECASE,
)


def parse_reply(reply: HttpReply, *, what: str) -> Completion:
    """Turn one chat completions reply into a :class:`Completion` or raise :class:`CallError`."""
    if not 200 <= reply.status <= 299:
        raise http_error(reply, what)
    body = parse_json(reply, what)
    if not isinstance(body, dict):
        raise CallError("malformed", f"{what} returned JSON that is not an object", retryable=True)
    if body.get("error") is not None and not body.get("choices"):
        raise api_error(body["error"], what, reply.status)
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise CallError(
            "malformed",
            f"{what} returned no choices: {snippet(reply.text)!r}",
            status=reply.status,
            retryable=True,
        )
    return _completion(body, choices[0], what)


def _completion(body: dict[str, Any], choice: dict[str, Any], what: str) -> Completion:
    finish = choice.get("finish_reason")
    finish = finish if isinstance(finish, str) else None
    message = choice.get("message")
    content = _content(message)
    tool_calls = _tool_calls(message)
    if finish == "error":
        raise choice_error(choice, what)
    if not content and not tool_calls:
        raise empty_answer(finish, what)
    served = body.get("model")
    return Completion(
        content=content or "",
        served_model=served if isinstance(served, str) else None,
        finish_reason=finish,
        usage=parse_usage(body.get("usage")),
        tool_calls=tool_calls,
    )


def _tool_calls(message: Any) -> list[dict[str, Any]] | None:
    """The tool calls a reply asks for: an answer in itself, though it has no text."""
    calls = message.get("tool_calls") if isinstance(message, dict) else None
    if not isinstance(calls, list):
        return None
    kept = [call for call in calls if isinstance(call, dict)]
    return kept or None


def _content(message: Any) -> str | None:
    """The message text; a list of content parts is joined."""
    if not isinstance(message, dict):
        return None
    content = message.get("content")
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        content = "".join(p for p in parts if isinstance(p, str))
    if not isinstance(content, str) or not content.strip():
        return None
    # JSON may escape a lone surrogate ("\ud800"), which no UTF-8 file, record or reply can
    # hold: it becomes U+FFFD, as an undecodable byte would.
    return without_lone_surrogates(content)


def empty_answer(finish: str | None, what: str) -> CallError:
    if finish == "length":
        return CallError(
            "length",
            f"{what} hit the token limit before writing any answer; raise max_tokens",
        )
    if finish == "content_filter":
        return CallError("content_filter", f"{what} withheld the answer (content filter)")
    return CallError("empty", f"{what} returned no content", retryable=True)


def choice_error(choice: dict[str, Any], what: str) -> CallError:
    error = choice.get("error")
    detail = _error_text(error) if isinstance(error, dict) else None
    code = _code(error.get("code")) if isinstance(error, dict) else None
    message = f"{what} failed while generating (finish_reason 'error')"
    return CallError(
        "api", f"{message}: {detail}" if detail else message, status=code, retryable=True
    )


def http_error(reply: HttpReply, what: str) -> CallError:
    status = reply.status
    detail = _body_detail(reply.text)
    kind = {401: "auth", 429: "rate_limit"}.get(status, "http")
    message = f"{what} answered HTTP {status}" + (f": {detail}" if detail else "")
    if status == 401:
        message += "; check the API key"
    return CallError(
        kind,
        message,
        status=status,
        retryable=is_retryable_status(status),
        retry_after=parse_retry_after(reply.headers),
    )


def _body_detail(text: str) -> str:
    """The error object's message when the body has one, else an excerpt of the body."""
    try:
        body = json.loads(text)
    except ValueError:
        return snippet(text)
    if isinstance(body, dict) and isinstance(body.get("error"), dict | str):
        error = body["error"]
        return _error_text(error) if isinstance(error, dict) else snippet(error)
    return snippet(text)


def api_error(error: Any, what: str, status: int) -> CallError:
    """An error object inside a 2xx body, as OpenRouter sends when an upstream fails."""
    if not isinstance(error, dict):
        return CallError("api", f"{what} reported an error: {snippet(str(error))}", retryable=True)
    code = _code(error.get("code"))
    if isinstance(code, int):
        retryable = is_retryable_status(code)
    else:
        retryable = code is None or not _FATAL_CODE.search(code)
    return CallError(
        "api",
        f"{what} reported an error: {_error_text(error)}",
        status=code,
        retryable=retryable,
    )


def _code(code: Any) -> int | str | None:
    if isinstance(code, bool):
        return None
    if isinstance(code, int):
        return code
    if isinstance(code, str) and code.strip():
        return int(code) if code.strip().isdigit() else code.strip()
    return None


def _error_text(error: Mapping[str, Any]) -> str:
    """``message`` plus the upstream's own words from ``metadata.raw`` and its name."""
    message = error.get("message")
    text = message if isinstance(message, str) and message else "unknown error"
    metadata = error.get("metadata")
    if isinstance(metadata, dict):
        raw = metadata.get("raw")
        if raw is not None and not isinstance(raw, str):
            raw = str(raw)
        source = metadata.get("provider_name")
        if raw:
            text += f" (upstream{f' {source}' if isinstance(source, str) else ''}: {raw})"
    return snippet(text)


def parse_usage(usage: Any) -> Usage:
    """Token counts and ``cost`` when present; anything malformed is left out."""
    if not isinstance(usage, dict):
        return Usage()
    prompt, completion = _count(usage, "prompt_tokens"), _count(usage, "completion_tokens")
    total = _count(usage, "total_tokens")
    if total is None and prompt is not None and completion is not None:
        total = prompt + completion
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=total,
        cost=_number(usage, "cost"),
    )


def _number(usage: dict[str, Any], key: str) -> float | None:
    value = usage.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    # json.loads accepts Infinity and NaN; neither is a count or a price.
    return float(value) if math.isfinite(value) else None


def _count(usage: dict[str, Any], key: str) -> int | None:
    value = usage.get(key)
    if type(value) is int:  # the usual case: it needs no conversion
        return value
    number = _number(usage, key)
    return None if number is None else int(number)
