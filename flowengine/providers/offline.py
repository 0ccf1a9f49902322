"""A deterministic provider with no network, for trying workflows and for tests.

The answer depends only on (model id, messages, seed, response_format). Failures, when
``failure_rate`` asks for them, are drawn from the same hash plus how many times this exact
request was made, so a run is reproducible and a retry gets a fresh draw.

Each text answer ends with its ref, ``(ref 1a2b3c4d)``, and says which offline answer its
prompt quoted, if any: ``(ref 1a2b3c4d, after 9f8e7d6c)``. A structured answer's booleans are
true only when its prompt quotes such an answer written after another (a revision), else false:
an offline critic rejects a first draft and accepts its revision, so a refine loop ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from collections import Counter

from flowengine.errors import CallError
from flowengine.providers.base import ChatRequest, Completion, ProviderContext
from flowengine.providers.offline_json import fake_json
from flowengine.results import Usage
from flowengine.spec import OfflineProvider, ProviderBase

_OPENINGS = (
    "Here is a short, deterministic reply so the workflow can run without a network.",
    "This text stands in for a real model's answer while the pipeline is tried offline.",
    "No model was called; this placeholder keeps the rest of the workflow running.",
    "A stand-in answer: the same question and model always produce these same words.",
)
_ECHO = 80
#: An offline answer's ref, and the ref of the answer it was written after, if any.
_REF = re.compile(r"\(ref ([0-9a-f]{8})(?:, after [0-9a-f]{8})?\)")
_REVISION = re.compile(r"\(ref [0-9a-f]{8}, after [0-9a-f]{8}\)")


def _digest(*parts: object) -> bytes:
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).digest()


def _fraction(digest: bytes) -> float:
    """A number in [0, 1) from the first 8 bytes of a digest."""
    return int.from_bytes(digest[:8], "big") / 2**64


def offline_text(model_id: str, messages: list[dict[str, str]], seed: int = 0) -> str:
    """The offline answer for one request: says what it is and echoes the question."""
    digest = _digest(model_id, messages, seed)
    opening = _OPENINGS[digest[0] % len(_OPENINGS)]
    last_user = next(
        (m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), ""
    )
    echo = " ".join(str(last_user).split())
    if len(echo) > _ECHO:
        echo = echo[: _ECHO - 1] + "…"
    ref = digest.hex()[:8]
    quoted = _REF.findall(_text_of(messages))
    after = f", after {quoted[-1]}" if quoted else ""
    return f'[offline answer from {model_id}] {opening} You asked: "{echo}" (ref {ref}{after})'


def _text_of(messages: list[dict[str, str]]) -> str:
    return "\n".join(str(m.get("content", "")) for m in messages)


def offline_content(request: ChatRequest, seed: int = 0) -> str:
    """The offline answer: text, or JSON when ``response_format`` asks for it.

    For a json_schema format, a value that matches the schema (:mod:`.offline_json`), drawn
    from the same hash as the text: it varies with the model and the messages, so judges'
    scores differ between models. For json_object, an object holding the text.
    """
    asked = request.params.get("response_format")
    kind = asked.get("type") if isinstance(asked, dict) else None
    if kind == "json_schema":
        schema = (asked.get("json_schema") or {}).get("schema") if isinstance(asked, dict) else None
        rng = random.Random(_digest(request.model_id, request.messages, seed))
        revised = _REVISION.search(_text_of(request.messages)) is not None
        return json.dumps(fake_json(schema or {}, rng, booleans=revised), ensure_ascii=False)
    text = offline_text(request.model_id, request.messages, seed)
    if kind == "json_object":
        return json.dumps({"answer": text}, ensure_ascii=False)
    return text


#: How many pieces an offline answer streams in.
PIECES = 4


def pieces(text: str, count: int = PIECES) -> list[str]:
    """``text`` in at most ``count`` pieces that end at spaces, the same every time."""
    size = -(-len(text) // count)
    found, start = [], 0
    while start < len(text):
        end = text.find(" ", start + size)
        end = len(text) if end < 0 else end + 1
        found.append(text[start:end])
        start = end
    return found


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


class Offline:
    """The built-in ``type: offline`` provider.

    Example::

        provider = Offline("offline", OfflineProvider(type="offline", latency=0.05))
        completion = await provider.complete(ChatRequest("any/model", messages))
    """

    def __init__(self, name: str, spec: OfflineProvider) -> None:
        self.name = name
        self.spec: ProviderBase = spec
        self._spec = spec
        self._asked: Counter[bytes] = Counter()

    @classmethod
    def from_spec(cls, name: str, spec: ProviderBase, ctx: ProviderContext) -> Offline:
        """The registry's factory for ``type: offline``; needs nothing from the context."""
        if not isinstance(spec, OfflineProvider):
            raise TypeError(
                f"provider {name!r}: expected an offline spec, got {type(spec).__name__}"
            )
        return cls(name, spec)

    def __repr__(self) -> str:
        return f"Offline(name={self.name!r})"

    async def complete(self, request: ChatRequest) -> Completion:
        """Answer after ``latency`` seconds, or fail for a ``failure_rate`` share of attempts.

        Streamed (``request.on_delta``), the answer comes in :data:`PIECES` pieces.
        """
        spec = self._spec
        key = _digest(request.model_id, request.messages, spec.seed)
        nth = self._asked[key]
        self._asked[key] += 1
        if spec.latency > request.timeout:
            await asyncio.sleep(request.timeout)
            raise CallError(
                "timeout",
                f"offline provider did not answer within {request.timeout:g}s",
                retryable=True,
            )
        # Even with no latency, yield once so concurrent calls overlap as real ones would.
        await asyncio.sleep(spec.latency)
        if spec.failure_rate and _fraction(_digest(key.hex(), nth)) < spec.failure_rate:
            raise CallError(
                "offline", "simulated failure (failure_rate)", status=503, retryable=True
            )
        content = offline_content(request, spec.seed)
        if request.on_delta is not None:
            for piece in pieces(content):
                request.on_delta(piece)
                await asyncio.sleep(0)  # as a real stream, one piece per turn of the loop
        prompt_tokens = _tokens("".join(m.get("content", "") for m in request.messages))
        completion_tokens = _tokens(content)
        return Completion(
            content=content,
            served_model=request.model_id,
            finish_reason="stop",
            usage=Usage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
                cost=0.0,
            ),
        )
