"""The model-selector client against a real local server."""

from __future__ import annotations

import aiohttp
import pytest

from flowengine.errors import CallError
from flowengine.providers import call_selector
from flowengine.spec import HttpSelector
from tests.fakeserver import FakeServer, Reply


def spec(server: FakeServer, timeout: float = 1.0) -> HttpSelector:
    return HttpSelector(url=server.selector_url, timeout=timeout)


async def test_selected_model_and_scores(
    server: FakeServer, session: aiohttp.ClientSession
) -> None:
    server.selected_model = "glm-4.5"
    server.scores = {"glm-4.5": 0.8, "qwen3": 0.15, "kimi-k2": 0}
    model, scores = await call_selector(spec(server), session, "Explain quantum computing")
    assert model == "glm-4.5"
    assert scores == {"glm-4.5": 0.8, "qwen3": 0.15, "kimi-k2": 0.0}
    assert server.selector_requests == [{"prompt": "Explain quantum computing"}]


async def test_scores_are_optional(server: FakeServer, session: aiohttp.ClientSession) -> None:
    server.script_selector(Reply(body={"selected_model": "llama"}))
    assert await call_selector(spec(server), session, "q") == ("llama", {})


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (Reply(body={"confidence_scores": {"a": 1}}), "malformed"),
        (Reply(body={"selected_model": ""}), "malformed"),
        (Reply(body={"selected_model": 3}), "malformed"),
        (Reply(body={"selected_model": "a", "confidence_scores": [1]}), "malformed"),
        (Reply(body={"selected_model": "a", "confidence_scores": {"a": "high"}}), "malformed"),
        (Reply(body=["a"]), "malformed"),
        (Reply.raw("<html>Internal Server Error</html>"), "malformed"),
        (Reply.raw("Internal Server Error", status=500), "http"),
        (Reply.error(404), "http"),
        (Reply.dropped(), "connection"),
        (Reply(body={"selected_model": "a"}, delay=0.5), "timeout"),
    ],
)
async def test_failures_are_call_errors(
    server: FakeServer, session: aiohttp.ClientSession, reply: Reply, kind: str
) -> None:
    server.script_selector(reply)
    with pytest.raises(CallError) as info:
        await call_selector(spec(server, timeout=0.1), session, "q")
    assert info.value.type == kind
    assert "model selector at http://127.0.0.1" in info.value.message


async def test_selector_down(session: aiohttp.ClientSession) -> None:
    async with FakeServer() as srv:
        down = spec(srv)
    with pytest.raises(CallError) as info:
        await call_selector(down, session, "q")
    assert info.value.type == "connection"
