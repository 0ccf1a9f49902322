"""The provider registry: built-ins and plugins go through the same function."""

from __future__ import annotations

import aiohttp
import pytest

from flowengine.providers import (
    ChatRequest,
    Completion,
    Offline,
    OpenAICompatible,
    ProviderContext,
    create_provider,
    provider_types,
    register_provider,
    registry,
)
from flowengine.spec import OfflineProvider, OpenAIProvider, ProviderBase


class Echo:
    def __init__(self, name: str, spec: ProviderBase) -> None:
        self.name, self.spec = name, spec

    async def complete(self, request: ChatRequest) -> Completion:
        return Completion(content=request.messages[-1]["content"])


class EchoSpec(ProviderBase):
    type: str = "echo"


@pytest.fixture
def clean_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))


def test_builtins_are_registered() -> None:
    assert {"openai", "offline"} <= set(provider_types())


async def test_create_builtins(session: aiohttp.ClientSession) -> None:
    ctx = ProviderContext(session, {})
    spec = OpenAIProvider(base_url="http://127.0.0.1:9/v1")
    assert isinstance(create_provider("x", spec, ctx), OpenAICompatible)
    assert isinstance(create_provider("y", OfflineProvider(type="offline"), ctx), Offline)


async def test_a_plugin_registers_the_same_way(
    clean_registry: None, session: aiohttp.ClientSession
) -> None:
    register_provider("echo", lambda name, spec, ctx: Echo(name, spec))
    provider = create_provider("mine", EchoSpec(), ProviderContext(session, {}))
    answer = await provider.complete(ChatRequest("m", [{"role": "user", "content": "hi"}]))
    assert (provider.name, answer.content) == ("mine", "hi")
    assert "echo" in provider_types()


async def test_unknown_type_suggests_a_close_match(session: aiohttp.ClientSession) -> None:
    with pytest.raises(LookupError, match="did you mean 'openai'"):
        create_provider("x", EchoSpec(type="openia"), ProviderContext(session, {}))


async def test_factory_rejects_the_wrong_spec(session: aiohttp.ClientSession) -> None:
    with pytest.raises(TypeError):
        OpenAICompatible.from_spec(
            "x", OfflineProvider(type="offline"), ProviderContext(session, {})
        )
