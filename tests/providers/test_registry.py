"""The provider registry: built-ins and plugins go through the same door, and a provider can
be a factory, a Provider object, or a plain callable (sync or async)."""

from __future__ import annotations

import threading
from typing import Any

import aiohttp
import pytest
from pydantic import BaseModel, ConfigDict

from flowengine.errors import CallError, PluginError
from flowengine.providers import (
    ChatRequest,
    Completion,
    Offline,
    OpenAICompatible,
    ProviderContext,
    create_provider,
    provider_types,
    register_provider,
)
from flowengine.spec import OfflineProvider, OpenAIProvider, PluginProvider, ProviderBase

HELLO = ChatRequest("vendor/m", [{"role": "user", "content": "hi"}])


class Echo:
    def __init__(self, name: str, spec: ProviderBase) -> None:
        self.name, self.spec = name, spec

    async def complete(self, request: ChatRequest) -> Completion:
        return Completion(content=request.messages[-1]["content"])


def plugin_spec(type_name: str, **options: Any) -> PluginProvider:
    return PluginProvider.model_validate({"type": type_name, **options})


@pytest.fixture
def ctx(session: aiohttp.ClientSession) -> ProviderContext:
    return ProviderContext(session, {})


def test_builtins_come_first_among_the_types() -> None:
    assert provider_types()[:2] == ["openai", "offline"]


def test_create_builtins(ctx: ProviderContext) -> None:
    spec = OpenAIProvider(base_url="http://127.0.0.1:9/v1")
    assert isinstance(create_provider("x", spec, ctx), OpenAICompatible)
    assert isinstance(create_provider("y", OfflineProvider(type="offline"), ctx), Offline)


async def test_a_factory_registers_the_same_way(ctx: ProviderContext) -> None:
    register_provider("echo", lambda name, spec, ctx: Echo(name, spec))
    provider = create_provider("mine", plugin_spec("echo"), ctx)
    answer = await provider.complete(HELLO)
    assert (provider.name, answer.content) == ("mine", "hi")
    assert "echo" in provider_types()


async def test_a_plain_sync_callable_gets_the_messages_in_a_thread(ctx: ProviderContext) -> None:
    seen: list[Any] = []

    def client(messages: list[dict[str, str]]) -> str:
        seen.append((messages, threading.current_thread()))
        return "answer to " + messages[-1]["content"]

    register_provider("client", client)
    answer = await create_provider("c", plugin_spec("client"), ctx).complete(HELLO)
    assert answer.content == "answer to hi"
    assert answer.served_model == "vendor/m"
    [(messages, thread)] = seen
    assert messages == HELLO.messages
    assert thread is not threading.main_thread()


async def test_an_async_callable_may_ask_for_the_request(ctx: ProviderContext) -> None:
    async def client(request: ChatRequest) -> Completion:
        return Completion(content=f"{request.model_id}: {request.messages[-1]['content']}")

    register_provider("client", client)
    answer = await create_provider("c", plugin_spec("client"), ctx).complete(HELLO)
    assert answer.content == "vendor/m: hi"


async def test_a_provider_object_serves_every_provider_of_its_type(ctx: ProviderContext) -> None:
    shared = Echo("shared", ProviderBase())
    register_provider("echo", shared)
    first = create_provider("one", plugin_spec("echo"), ctx)
    second = create_provider("two", plugin_spec("echo"), ctx)
    assert (first.name, second.name) == ("one", "two")
    assert (await first.complete(HELLO)).content == "hi"


async def test_an_answer_that_is_not_text_fails_the_call(ctx: ProviderContext) -> None:
    register_provider("numbers", lambda messages: 42)
    provider = create_provider("n", plugin_spec("numbers"), ctx)
    with pytest.raises(CallError, match="provider 'n' returned int, not text or a Completion"):
        await provider.complete(HELLO)


@pytest.mark.parametrize(
    "thing", [42, "echo", lambda a, b: "two required arguments"], ids=["int", "str", "two"]
)
def test_what_is_no_provider_is_refused_when_registered(thing: Any) -> None:
    with pytest.raises(PluginError, match="is not a provider"):
        register_provider("bad", thing)
    assert "bad" not in provider_types()


class Prefix(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prefix: str = ">"


async def test_a_factory_gets_its_config_model(ctx: ProviderContext) -> None:
    made: list[Any] = []

    def factory(name: str, spec: Any, ctx: ProviderContext) -> Echo:
        made.append(spec)
        return Echo(name, spec)

    register_provider("echo", factory, config=Prefix)
    create_provider("mine", plugin_spec("echo", prefix="#", timeout="5s"), ctx)
    assert made == [Prefix(prefix="#")]  # flowengine's own keys (timeout) are not the plugin's


def test_without_a_config_model_a_factory_reads_its_keys_as_attributes(
    ctx: ProviderContext,
) -> None:
    register_provider("echo", lambda name, spec, ctx: Echo(name, spec))
    provider = create_provider("mine", plugin_spec("echo", prefix="#"), ctx)
    assert provider.spec.prefix == "#"  # type: ignore[attr-defined]


def test_unknown_type_suggests_a_close_match(ctx: ProviderContext) -> None:
    with pytest.raises(PluginError, match="did you mean 'openai'") as caught:
        create_provider("x", plugin_spec("openia"), ctx)
    assert caught.value.fix is not None and "openai, offline" in caught.value.fix


def test_a_factory_that_fails_is_a_plugin_error(ctx: ProviderContext) -> None:
    def factory(name: str, spec: Any, ctx: ProviderContext) -> Echo:
        raise RuntimeError("no GPU")

    register_provider("gpu", factory)
    with pytest.raises(PluginError, match="failed to make it: RuntimeError: no GPU"):
        create_provider("g", plugin_spec("gpu"), ctx)


def test_factory_rejects_the_wrong_spec(ctx: ProviderContext) -> None:
    with pytest.raises(TypeError):
        OpenAICompatible.from_spec("x", OfflineProvider(type="offline"), ctx)
