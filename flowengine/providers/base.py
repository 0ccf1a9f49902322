"""The provider interface: one small protocol, and the request and completion it speaks."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

from flowengine.results import Usage
from flowengine.spec import ProviderBase


# Not frozen: one of each is made per call, and a frozen dataclass takes three times as long to
# build. Nothing changes them after they are made.
@dataclass(slots=True)
class ChatRequest:
    """One chat completion request, as the engine hands it to a provider."""

    model_id: str
    messages: list[dict[str, str]]
    params: dict[str, Any] = field(default_factory=dict)
    timeout: float = 60.0
    #: Set by the engine when the answer is to be shown as it is written: a provider that can
    #: stream calls it with each piece of text as it arrives (see :class:`Provider`).
    on_delta: Callable[[str], None] | None = None
    #: ``messages`` as JSON, once :meth:`encoded_messages` has encoded them.
    messages_json: str | None = field(default=None, init=False, repr=False, compare=False)

    def encoded_messages(self) -> str:
        """The messages as JSON, encoded once per call: for the request's body, its cache key
        and its run record alike (prompts are the largest part of all three)."""
        if self.messages_json is None:
            self.messages_json = encode_messages(self.messages)
        return self.messages_json


#: Compact JSON with non-ASCII text as it is (see :func:`utf8`). One encoder for every call:
#: ``json.dumps`` with options would build one per call.
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def encode_messages(messages: list[dict[str, str]]) -> str:
    """Chat messages as compact JSON, non-ASCII text as it is (see :func:`utf8`)."""
    return _COMPACT.encode(messages)


def utf8(text: str) -> bytes:
    """JSON text as UTF-8. A lone surrogate (which has no UTF-8 form, and can only be inside a
    JSON string here) becomes its JSON escape, ``\\udXXX``: the same string to any reader."""
    return text.encode("utf-8", "backslashreplace")


def json_body(head: Mapping[str, Any], messages_json: str) -> bytes:
    """A request body: ``head``'s members, then ``"messages"`` from its JSON encoded already.

    A ``messages`` key in ``head`` is left out: the messages given win, as they would in
    ``{**head, "messages": messages}``.
    """
    members = _COMPACT.encode({k: v for k, v in head.items() if k != "messages"})
    comma = "," if len(members) > 2 else ""
    return utf8(f'{members[:-1]}{comma}"messages":{messages_json}}}')


@dataclass(slots=True)
class Completion:
    """A successful answer. Failures are raised as :class:`flowengine.errors.CallError`."""

    content: str
    served_model: str | None = None
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    #: Tool calls the model asked for instead of (or with) text: OpenAI's message.tool_calls.
    tool_calls: list[dict[str, Any]] | None = None


@dataclass
class ProviderContext:
    """What providers share within an engine: one HTTP session and the environment."""

    session: aiohttp.ClientSession
    environ: Mapping[str, str] = field(repr=False)  # holds API keys: never in a repr


class Provider(Protocol):
    """A chat completions backend. ``complete`` makes one attempt; the engine retries.

    ``complete`` raises :class:`~flowengine.errors.CallError` for every failure, with
    ``retryable`` set when trying again may help.

    Streaming: when ``request.on_delta`` is set, a provider that can stream passes it each
    piece of the answer's text as it arrives, and still returns the whole :class:`Completion`
    (usage included) at the end. A failure after the first piece is raised like any other; the
    engine does not retry it, since the text was shown. A provider that cannot stream ignores
    ``on_delta``, and the engine delivers its answer as one piece.

    Caching: a provider with a ``cache_id`` attribute (a string naming where its answers come
    from, the same in every process) has its answers cached under it, with the model id,
    messages and params; one without (or with None) is never cached. The OpenAI-compatible
    provider's is its base URL.
    """

    name: str
    spec: ProviderBase

    async def complete(self, request: ChatRequest) -> Completion: ...
