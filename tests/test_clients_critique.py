"""The critique client and its UI helper, from the original document's own examples.

Each example is the document's code with the import changed to ``flowengine.clients``; it
runs offline, or against a real OpenAI-compatible server and selector on 127.0.0.1.
"""

from __future__ import annotations

import socket

import pytest

from flowengine import ConfigError, compare
from flowengine.clients import MultiModelOrchestrator, SecureAPIKeyManager, UIResponseManager
from tests.fakeserver import FakeServer, Reply

SCORES = {"glm-4.5": 0.753, "gpt-oss": 0.2, "qwen3": 0.821, "kimi-k2": 0.1}
#: OpenRouter's rate limit (20 a second) would space the calls wider than the server's latency.
UNLIMITED = {"providers.openrouter.rate_limit": {"requests": 100, "per": "1s", "burst": 100}}


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-test-critique")
    return "sk-test-critique"


def closed_port() -> int:
    """A port nothing listens on: the selector is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def assert_documented_shape(result: dict[str, object]) -> None:
    assert list(result) == ["primary_response", "critiques", "metadata"]
    primary = result["primary_response"]
    assert isinstance(primary, dict)
    assert list(primary) == ["model", "content", "confidence", "success"]
    critiques = result["critiques"]
    assert isinstance(critiques, list)
    for critique in critiques:
        assert list(critique) == ["model", "content", "confidence"]
    metadata = result["metadata"]
    assert isinstance(metadata, dict)
    assert list(metadata) == ["total_time", "concurrent_calls", "model_selector_confidence"]


async def test_basic_usage_offline() -> None:
    orchestrator = MultiModelOrchestrator(
        model_selector_url="http://localhost:8000/predict",
        max_concurrent_critiques=3,  # Adjust based on rate limits
        offline=True,
    )
    result = await orchestrator.orchestrate_with_critiques("Explain quantum computing")

    primary = result["primary_response"]
    critiques = result["critiques"]
    assert_documented_shape(result)
    # Offline, the selector is not asked: the highest-weight model answers.
    assert (primary["model"], primary["confidence"], primary["success"]) == ("gpt-oss", None, True)
    assert primary["content"].startswith("[offline answer from openai/gpt-oss-120b]")
    assert [c["model"] for c in critiques] == ["glm-4.5", "qwen3", "kimi-k2", "deepseek", "llama"]
    assert result["metadata"]["model_selector_confidence"] is None
    assert 1 <= result["metadata"]["concurrent_calls"] <= 3


async def test_basic_usage_against_a_server_and_its_selector(api_key: str) -> None:
    async with FakeServer(latency=0.02, selected_model="glm-4.5") as srv:
        srv.scores = SCORES
        orchestrator = MultiModelOrchestrator(
            model_selector_url=srv.selector_url,
            max_concurrent_critiques=3,
            base_url=srv.base_url,
            overrides=UNLIMITED,
        )
        result = await orchestrator.orchestrate_with_critiques("Explain quantum computing")

        primary = result["primary_response"]
        critiques = result["critiques"]
        line = f"Best model: {primary['model']} ({primary['confidence']:.3f})"

    assert line == "Best model: glm-4.5 (0.753)"
    assert_documented_shape(result)
    assert primary["success"] is True
    assert primary["content"].startswith("answer from z-ai/glm-4.5: ")
    assert {c["model"]: c["confidence"] for c in critiques} == {
        "gpt-oss": 0.2,
        "qwen3": 0.821,
        "kimi-k2": 0.1,
        "deepseek": None,
        "llama": None,
    }
    assert result["metadata"]["model_selector_confidence"] == 0.753
    assert srv.selector_requests == [{"prompt": "Explain quantum computing"}]
    assert srv.count == 6 and srv.max_in_flight == 3
    assert result["metadata"]["concurrent_calls"] == 3
    assert api_key not in repr(result.run.model_dump())


async def test_max_concurrent_critiques_caps_the_critiques(api_key: str) -> None:
    async with FakeServer(latency=0.02) as srv:
        orchestrator = MultiModelOrchestrator(
            model_selector_url=srv.selector_url,
            max_concurrent_critiques=1,
            base_url=srv.base_url,
            overrides=UNLIMITED,
        )
        result = await orchestrator.orchestrate_with_critiques("q")
    assert len(result["critiques"]) == 5
    assert srv.max_in_flight == 1
    assert result["metadata"]["concurrent_calls"] == 1


async def test_the_selector_down_falls_back_to_the_highest_weight(api_key: str) -> None:
    async with FakeServer() as srv:
        orchestrator = MultiModelOrchestrator(
            model_selector_url=f"http://127.0.0.1:{closed_port()}/predict",
            base_url=srv.base_url,
        )
        result = await orchestrator.orchestrate_with_critiques("Explain quantum computing")
    assert result["primary_response"]["model"] == "gpt-oss"
    assert result["primary_response"]["success"] is True
    assert result["metadata"]["model_selector_confidence"] is None
    assert len(result["critiques"]) == 5
    select = result.run.nodes["select"].output
    assert select.source == "fallback"
    assert "selector 'ml' failed" in (select.reason or "")


async def test_a_failed_critique_is_left_out_and_kept_in_the_run(api_key: str) -> None:
    async with FakeServer() as srv:
        srv.always_for("moonshotai/kimi-k2", Reply.error(400, "bad request"))
        orchestrator = MultiModelOrchestrator(
            model_selector_url=srv.selector_url, base_url=srv.base_url
        )
        result = await orchestrator.orchestrate_with_critiques("q")
    assert [c["model"] for c in result["critiques"]] == ["glm-4.5", "qwen3", "deepseek", "llama"]
    assert result.run.status == "partial"


async def test_call_model_selector_api(api_key: str) -> None:
    async with FakeServer(selected_model="qwen3") as srv:
        srv.scores = SCORES
        orchestrator = MultiModelOrchestrator(
            model_selector_url=srv.selector_url, base_url=srv.base_url
        )
        selected_model, confidence_scores = await orchestrator._call_model_selector_api("q")
        assert srv.count == 0  # the selector alone: no model call
    assert selected_model == "qwen3"
    assert confidence_scores == SCORES


async def test_without_the_key_it_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    orchestrator = MultiModelOrchestrator(model_selector_url="http://localhost:8000/predict")
    with pytest.raises(ConfigError, match="OPENROUTER_API_KEY is not set") as caught:
        await orchestrator.orchestrate_with_critiques("q")
    assert "offline" in str(caught.value)


def test_secure_api_key_manager_never_shows_the_key(api_key: str) -> None:
    api_manager = SecureAPIKeyManager()
    assert api_manager.get_api_key() == api_key
    assert api_key not in repr(api_manager)
    missing = SecureAPIKeyManager(environ={})
    assert not missing.has_key
    with pytest.raises(ConfigError, match="export OPENROUTER_API_KEY"):
        missing.get_api_key()


# -- UI integration --------------------------------------------------------------------------


async def test_ui_integration(api_key: str) -> None:
    async with FakeServer(selected_model="glm-4.5") as srv:
        srv.scores = SCORES
        orchestrator = MultiModelOrchestrator(
            model_selector_url=srv.selector_url, base_url=srv.base_url
        )
        result = await orchestrator.orchestrate_with_critiques("Explain quantum computing")

    ui_manager = UIResponseManager()

    # Format for frontend display
    ui_data = ui_manager.prepare_ui_data(result)

    # Get comparison with recommendations
    comparison = ui_manager.get_response_comparison(result)

    cards = ui_data["cards"]
    assert [(c["node"], c["model"]) for c in cards][:2] == [
        ("primary", "glm-4.5"),
        ("critiques", "gpt-oss"),
    ]
    assert len(cards) == 6
    assert cards[0]["content"] == result["primary_response"]["content"]
    assert cards[0]["confidence"] == 0.753
    # The same comparison as `flowengine compare` and the web UI.
    assert comparison == compare(result.run)
    assert comparison["recommended"]["model"] == "qwen3"
    assert "highest selector confidence (0.821)" in comparison["recommended"]["reason"]
    assert ui_data["recommended"] == comparison["recommended"]


async def test_statistics_track_success_rates_and_timing(api_key: str) -> None:
    ui_manager = UIResponseManager()
    async with FakeServer() as srv:
        orchestrator = MultiModelOrchestrator(
            model_selector_url=srv.selector_url, base_url=srv.base_url
        )
        first = await orchestrator.orchestrate_with_critiques("first")
        srv.always_for("moonshotai/kimi-k2", Reply.error(400))
        second = await orchestrator.orchestrate_with_critiques("second")
    ui_manager.prepare_ui_data(first)
    ui_manager.get_response_comparison(first)  # the same run: counted once
    ui_manager.prepare_ui_data(second)

    stats = ui_manager.get_statistics()
    assert (stats["runs"], stats["succeeded"], stats["success_rate"]) == (2, 1, 0.5)
    total = first["metadata"]["total_time"] + second["metadata"]["total_time"]
    assert stats["total_time"] == pytest.approx(total)
    assert stats["average_time"] == pytest.approx(total / 2, abs=1e-6)
    assert stats["models"]["kimi-k2"]["calls"] == 2
    assert stats["models"]["kimi-k2"]["success_rate"] == 0.5
    assert stats["models"]["gpt-oss"]["success_rate"] == 1.0
    assert stats["models"]["gpt-oss"]["calls"] == 2  # the selector's choice: the primary

    bounded = UIResponseManager(keep=1)  # a long-lived service keeps the newest runs only
    bounded.prepare_ui_data(first)
    bounded.prepare_ui_data(second)
    assert (bounded.get_statistics()["runs"], bounded.get_statistics()["succeeded"]) == (1, 0)


def test_a_dict_without_its_run_is_refused() -> None:
    with pytest.raises(TypeError, match="carries its run"):
        UIResponseManager().prepare_ui_data({"primary_response": {}})  # type: ignore[arg-type]
