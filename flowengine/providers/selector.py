"""The model-selector client: POST ``{"prompt"}``, get ``{"selected_model", "confidence_scores"}``.

Mapping the service's model names to aliases is the select node's business, not this module's.
"""

from __future__ import annotations

import json
import math
from typing import Any

import aiohttp

from flowengine.errors import CallError
from flowengine.providers.base import utf8
from flowengine.providers.http import HttpReply, parse_json, request, snippet
from flowengine.spec import HttpSelector


async def call_selector(
    spec: HttpSelector, session: aiohttp.ClientSession, prompt: str
) -> tuple[str, dict[str, float]]:
    """Ask the selector service which model should answer ``prompt``.

    Returns the selected model's name exactly as the service spells it, and its confidence
    scores (empty when the service sends none). Any failure -- the service down or slow, a
    non-2xx status, a body that is not the expected shape -- raises :class:`CallError`, whose
    ``type`` is ``connection``, ``timeout``, ``http`` or ``malformed``.

    Example::

        model, scores = await call_selector(spec, session, "Explain quantum computing")
    """
    what = f"model selector at {spec.url}"
    reply = await request(
        session,
        "POST",
        spec.url,
        utf8(json.dumps({"prompt": prompt}, ensure_ascii=False)),
        headers=spec.headers,
        timeout=spec.timeout,
        what=what,
    )
    return _reply(reply, what)


def _reply(reply: HttpReply, what: str) -> tuple[str, dict[str, float]]:
    if not 200 <= reply.status <= 299:
        raise CallError(
            "http",
            f"{what} answered HTTP {reply.status}: {snippet(reply.text)!r}",
            status=reply.status,
            retryable=reply.status >= 500 or reply.status == 429,
        )
    return _parse(parse_json(reply, what), what)


def _parse(body: Any, what: str) -> tuple[str, dict[str, float]]:
    if not isinstance(body, dict):
        raise CallError("malformed", f"{what} returned JSON that is not an object")
    selected = body.get("selected_model")
    if not isinstance(selected, str) or not selected.strip():
        raise CallError(
            "malformed",
            f"{what} returned no 'selected_model' string: {snippet(str(body))!r}",
        )
    raw_scores = body.get("confidence_scores")
    if raw_scores is None:
        return selected.strip(), {}
    if not isinstance(raw_scores, dict):
        raise CallError("malformed", f"{what} returned 'confidence_scores' that is not an object")
    scores: dict[str, float] = {}
    for name, value in raw_scores.items():
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not math.isfinite(value):
            raise CallError(
                "malformed", f"{what} returned a non-numeric score for {snippet(str(name))!r}"
            )
        scores[str(name)] = float(value)
    return selected.strip(), scores
