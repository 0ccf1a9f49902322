"""The provider interface: one small protocol, and the request and completion it speaks."""

from __future__ import annotations

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
    """

    name: str
    spec: ProviderBase

    async def complete(self, request: ChatRequest) -> Completion: ...
