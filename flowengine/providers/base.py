"""The provider interface: one small protocol, and the request and completion it speaks."""

from __future__ import annotations

from collections.abc import Mapping
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


@dataclass(slots=True)
class Completion:
    """A successful answer. Failures are raised as :class:`flowengine.errors.CallError`."""

    content: str
    served_model: str | None = None
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)


@dataclass
class ProviderContext:
    """What providers share within an engine: one HTTP session and the environment."""

    session: aiohttp.ClientSession
    environ: Mapping[str, str] = field(repr=False)  # holds API keys: never in a repr


class Provider(Protocol):
    """A chat completions backend. ``complete`` makes one attempt; the engine retries.

    ``complete`` may be an ``async def`` or a plain function that returns the coroutine of
    its request (as the built-in HTTP provider does, to save a frame per call).
    """

    name: str
    spec: ProviderBase

    async def complete(self, request: ChatRequest) -> Completion: ...
