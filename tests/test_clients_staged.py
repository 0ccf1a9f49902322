"""The staged orchestrator, from the original guide's own examples.

Each example is the guide's code with the import changed to ``flowengine.clients``; the
guide's ``my_llm_clients`` are Python callables and a provider object here, and OpenRouter
models run offline or against a real OpenAI-compatible server on 127.0.0.1.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from flowengine import CallError, RunError, UsageError
from flowengine.clients import MultiLLMOrchestrator
from flowengine.clients._clients import cache_id
from flowengine.providers import ChatRequest, Completion
from tests.fakeserver import FakeServer, Reply

REVIEWED = Path(__file__).parent / "data" / "clients" / "reviewed.yaml"
#: Retries without the waits between them.
QUICK = {"defaults.retry.initial": "1ms", "defaults.retry.max": "1ms"}


class Clients:
    """The guide's llama, chatgpt and gemini clients, counting what they are asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def llama_client(self, messages: list[dict[str, str]]) -> str:  # sync: run in a thread
        return self._answer("llama", messages)

    async def chatgpt_client(self, messages: list[dict[str, str]]) -> str:
        return self._answer("chatgpt", messages)

    def _answer(self, name: str, messages: list[dict[str, str]]) -> str:
        text = messages[-1]["content"]
        self.asked.append((name, text))
        return f"{name} on {' '.join(text.split())[:40]}"


class GeminiClient:
    """A client object that speaks flowengine's provider protocol."""

    async def complete(self, request: ChatRequest) -> Completion:
        return Completion(content=f"gemini on {request.messages[-1]['content'][:40]}")


@pytest.fixture
def clients() -> Clients:
    return Clients()


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-test-staged")


def registered(clients: Clients, **options: Any) -> MultiLLMOrchestrator:
    orchestrator = MultiLLMOrchestrator(**options)
    orchestrator.register_model("llama", clients.llama_client, weight=1.0)
    orchestrator.register_model("chatgpt", clients.chatgpt_client, weight=3.0)
    orchestrator.register_model("gemini", GeminiClient(), weight=2.0)
    return orchestrator


async def test_basic_usage_with_python_clients(clients: Clients) -> None:
    # Initialize the orchestrator
    orchestrator = MultiLLMOrchestrator()

    # Register your LLM clients
    orchestrator.register_model("llama", clients.llama_client)
    orchestrator.register_model("chatgpt", clients.chatgpt_client)
    orchestrator.register_model("gemini", GeminiClient())

    # Process a prompt
    results = await orchestrator.process_responses("Your prompt here")

    # Access the results
    initial_responses = results["initial_responses"]
    meta_responses = results["meta_responses"]
    final_synthesis = results["final_synthesis"]

    assert [r["content"] for r in initial_responses] == [
        "llama on Your prompt here",
        "chatgpt on Your prompt here",
        "gemini on Your prompt here",
    ]
    assert [r["model"] for r in meta_responses] == ["llama", "chatgpt", "gemini"]
    assert all(r["success"] for r in meta_responses)
    # Equal weights: the first registered leads the synthesis.
    assert final_synthesis["model"] == "llama"
    assert final_synthesis["content"].startswith("llama on ")
    metrics = results["metrics"]
    assert set(metrics) == {"llama", "chatgpt", "gemini"}
    for model in metrics.values():
        assert {"latency_p50_s", "success_rate", "tokens", "quality"} <= set(model)
    # Prose clients cannot score answers: the quality scores are left out, the run goes on.
    assert results["ranking"] is None
    assert results.run.nodes["scores"].status == "failed"


async def test_basic_usage_offline() -> None:
    orchestrator = MultiLLMOrchestrator(offline=True)
    orchestrator.register_model("llama", "meta-llama/llama-3.3-70b-instruct", weight=1.0)
    orchestrator.register_model("chatgpt", "openai/gpt-4o-mini", weight=3.0)
    orchestrator.register_model("gemini", "google/gemini-2.5-flash", weight=2.0)

    results = await orchestrator.process_responses("Your prompt here")

    assert [r["model"] for r in results["initial_responses"]] == ["chatgpt", "gemini", "llama"]
    assert results["final_synthesis"]["model"] == "chatgpt"
    assert sorted(results["ranking"]) == ["chatgpt", "gemini", "llama"]  # scored, best first
    metrics = results["metrics"]
    assert all(metrics[m]["quality"] is not None for m in ("chatgpt", "gemini", "llama"))
    assert metrics["chatgpt"]["success_rate"] == 1.0
    assert metrics["chatgpt"]["tokens"] > 0


async def test_weights_order_the_models_and_the_pipeline(clients: Clients) -> None:
    orchestrator = MultiLLMOrchestrator()
    # Register models with weights (higher weight = higher priority)
    orchestrator.register_model("llama", clients.llama_client, weight=1.0)
    orchestrator.register_model("chatgpt", clients.chatgpt_client, weight=3.0)
    orchestrator.register_model("gemini", GeminiClient(), weight=2.0)

    assert orchestrator.get_prioritized_models() == ["chatgpt", "gemini", "llama"]
    assert orchestrator.get_prioritized_models(["llama", "gemini"]) == ["gemini", "llama"]

    # Update a model's weight
    orchestrator.set_model_weight("llama", 4.0)

    prioritized_models = orchestrator.get_prioritized_models()
    specific_models = orchestrator.get_prioritized_models(["llama", "gemini"])
    assert prioritized_models == ["llama", "chatgpt", "gemini"]
    assert specific_models == ["llama", "gemini"]

    results = await orchestrator.process_responses("Your prompt here")
    assert [r["model"] for r in results["initial_responses"]] == prioritized_models
    assert results["final_synthesis"]["model"] == "llama"


async def test_stages_and_models_select_the_pipeline(clients: Clients) -> None:
    orchestrator = registered(clients)

    # Run only initial and synthesis stages
    results = await orchestrator.process_responses(
        prompt="Your prompt here", stages=["initial", "synthesis"]
    )
    assert results["meta_responses"] is None
    assert results.run.nodes["meta"].reason.startswith("condition is false: 'meta' in stages")
    assert results["final_synthesis"]["model"] == "chatgpt"

    # Use only specific models
    results = await orchestrator.process_responses(
        prompt="Your prompt here", models=["llama", "chatgpt"]
    )
    assert [r["model"] for r in results["initial_responses"]] == ["chatgpt", "llama"]
    assert set(results["metrics"]) == {"chatgpt", "llama"}

    results = await orchestrator.process_responses("Your prompt here", stages=["initial"])
    assert (results["meta_responses"], results["final_synthesis"]) == (None, None)


async def test_unknown_stages_and_models_are_named(clients: Clients) -> None:
    orchestrator = registered(clients)
    with pytest.raises(UsageError, match="unknown stage 'synthesys'; did you mean 'synthesis'"):
        await orchestrator.process_responses("p", stages=["initial", "synthesys"])
    with pytest.raises(UsageError, match="unknown model 'lama'; did you mean 'llama'"):
        await orchestrator.process_responses("p", models=["lama"])
    with pytest.raises(UsageError, match="unknown model 'gpt'"):
        orchestrator.set_model_weight("gpt", 2.0)
    with pytest.raises(UsageError, match="not a model client"):
        orchestrator.register_model("broken", 42)


async def test_retries_exhausted_log_and_raise(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a command run earlier in the process set up for its own output: undone.
    monkeypatch.setattr(logging.getLogger("flowengine"), "propagate", True)
    attempts: list[str] = []

    def failing_client(messages: list[dict[str, str]]) -> str:
        attempts.append(messages[-1]["content"])
        raise ConnectionError("upstream unreachable")

    # Customize retry behavior
    orchestrator = MultiLLMOrchestrator(max_retries=5, overrides=QUICK)
    orchestrator.register_model("flaky", failing_client)

    with (
        caplog.at_level(logging.INFO, logger="flowengine.run"),
        pytest.raises(CallError) as caught,
    ):
        await orchestrator.process_responses("Your prompt here")

    assert attempts == ["Your prompt here"] * 5
    assert isinstance(caught.value, RunError)
    assert "model 'flaky' failed after 5 attempts" in str(caught.value)
    assert "ConnectionError: upstream unreachable" in str(caught.value)
    retried = {r.getMessage() for r in caplog.records if "retrying" in r.getMessage()}
    assert len(retried) == 4  # each failure before the last is logged, then retried
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert {r.name for r in critical} == {"flowengine.clients"}
    assert "model 'flaky' failed after 5 attempts" in critical[0].getMessage()


async def test_a_client_that_recovers_within_its_retries() -> None:
    failures = [ConnectionError("once"), TimeoutError("twice")]

    async def flaky_client(messages: list[dict[str, str]]) -> str:
        if failures:
            raise failures.pop(0)
        return "third time"

    orchestrator = MultiLLMOrchestrator(max_retries=3, overrides=QUICK)
    orchestrator.register_model("flaky", flaky_client)
    response = await orchestrator.get_model_response(
        model=flaky_client, prompt="Your prompt", stage="initial"
    )
    assert (response["content"], response["attempts"], response["stage"]) == (
        "third time",
        3,
        "initial",
    )


async def test_retries_exhausted_against_a_server(api_key: None) -> None:
    async with FakeServer() as srv:
        srv.always_for("openai/gpt-4o-mini", Reply.error(503, "overloaded"))
        orchestrator = MultiLLMOrchestrator(max_retries=3, base_url=srv.base_url, overrides=QUICK)
        orchestrator.register_model("chatgpt", "openai/gpt-4o-mini")
        orchestrator.register_model("glm", "z-ai/glm-4.5")
        with pytest.raises(CallError, match="model 'chatgpt' failed after 3 attempts") as caught:
            await orchestrator.process_responses("Your prompt here")
        asked = [r["model"] for r in srv.requests]
    assert asked.count("openai/gpt-4o-mini") == 3
    assert caught.value.status == 503


async def test_caching_is_on_by_default_and_can_be_turned_off(api_key: None) -> None:
    async with FakeServer() as srv:
        orchestrator = MultiLLMOrchestrator(base_url=srv.base_url)
        orchestrator.register_model("chatgpt", "openai/gpt-4o-mini")

        # Use cache in get_model_response
        response = await orchestrator.get_model_response(
            model="chatgpt", prompt="Your prompt", stage="initial", use_cache=True
        )
        again = await orchestrator.get_model_response(
            model="chatgpt", prompt="Your prompt", stage="initial", use_cache=True
        )
        assert (response["cached"], again["cached"], srv.count) == (False, True, 1)
        assert again["content"] == response["content"]

        bypassed = await orchestrator.get_model_response(
            model="chatgpt",
            prompt="Your prompt",
            stage="initial",
            use_cache=False,  # Set to False to bypass cache
        )
        assert (bypassed["cached"], srv.count) == (False, 2)

        # Disable caching
        orchestrator = MultiLLMOrchestrator(cache_enabled=False, base_url=srv.base_url)
        orchestrator.register_model("chatgpt", "openai/gpt-4o-mini")
        first = await orchestrator.process_responses("Your prompt", stages=["initial"])
        second = await orchestrator.process_responses("Your prompt", stages=["initial"])
        assert not first["initial_responses"][0]["cached"]
        assert not second["initial_responses"][0]["cached"]
        assert srv.count == 4


#: What the module-level client below was asked.
ASKED: list[str] = []


async def mistral_client(messages: list[dict[str, str]]) -> str:
    """A client as the guide's `my_llm_clients` has them: a function at the top of a file."""
    ASKED.append(messages[-1]["content"])
    return f"mistral on {messages[-1]['content']}"


async def test_a_function_client_is_cached_as_the_original_cached_it() -> None:
    ASKED.clear()
    asked_lambda: list[str] = []

    def orchestrator() -> MultiLLMOrchestrator:
        made = MultiLLMOrchestrator()
        made.register_model("mistral", mistral_client)
        made.register_model("quick", lambda m: asked_lambda.append("x") or "quick answer")
        return made

    first = await orchestrator().get_model_response("mistral", "Your prompt", "initial")
    # Another orchestrator, as in a later process: same function, same cache.
    again = await orchestrator().get_model_response("mistral", "Your prompt", "initial")
    assert (first["cached"], again["cached"], ASKED) == (False, True, ["Your prompt"])
    assert again["content"] == first["content"] == "mistral on Your prompt"
    bypassed = await orchestrator().get_model_response(
        "mistral", "Your prompt", "initial", use_cache=False
    )
    assert (bypassed["cached"], len(ASKED)) == (False, 2)
    # A lambda cannot be told from another one in a later process: never cached.
    for _ in range(2):
        answer = await orchestrator().get_model_response("quick", "Your prompt", "initial")
        assert not answer["cached"]
    assert asked_lambda == ["x", "x"]


def test_only_a_function_at_the_top_of_a_file_names_where_its_answers_come_from(
    clients: Clients,
) -> None:
    def nested(messages: Any) -> str:
        return ""

    assert cache_id(mistral_client) == f"python:{Path(__file__).resolve()}:mistral_client"
    typed: dict[str, Any] = {}
    exec("def typed_client(messages):\n    return ''\n", typed)  # as at a prompt: no file
    others = (nested, lambda m: "", clients.llama_client, GeminiClient(), typed["typed_client"])
    assert [cache_id(c) for c in others] == [None] * len(others)


async def test_get_model_response_takes_the_client_itself(clients: Clients) -> None:
    orchestrator = registered(clients)
    response = await orchestrator.get_model_response(
        model=clients.llama_client, prompt="Your prompt", stage="meta", use_cache=True
    )
    assert (response["model"], response["content"], response["stage"]) == (
        "llama",
        "llama on Your prompt",
        "meta",
    )
    assert clients.asked == [("llama", "Your prompt")]  # that model only, the prompt as written
    with pytest.raises(UsageError, match="not a registered model"):
        await orchestrator.get_model_response(GeminiClient(), "p", "initial")


async def test_a_subclass_adds_a_stage_with_another_workflow(clients: Clients) -> None:
    class CustomOrchestrator(MultiLLMOrchestrator):
        workflow = REVIEWED

        async def process_responses(
            self,
            prompt: str,
            stages: list[str] | None = None,
            models: list[str] | None = None,
        ) -> Any:
            results = await super().process_responses(prompt, stages, models)
            return {**results, "reviewed": results["review"] is not None}

    orchestrator = CustomOrchestrator()
    orchestrator.register_model("llama", clients.llama_client, weight=2.0)
    orchestrator.register_model("chatgpt", clients.chatgpt_client, weight=1.0)

    results = await orchestrator.process_responses("Your prompt here")
    assert results["reviewed"] is True
    assert results["review"]["model"] == "llama"
    assert results["review"]["content"].startswith("llama on Review: llama on Merge these answers")
    assert set(results["metrics"]) == {"llama", "chatgpt"}

    results = await orchestrator.process_responses("Your prompt here", stages=["initial"])
    assert (results["final_synthesis"], results["review"], results["reviewed"]) == (
        None,
        None,
        False,
    )
    # The constructor takes the workflow too.
    plain = MultiLLMOrchestrator(workflow=REVIEWED)
    plain.register_model("llama", clients.llama_client)
    assert (await plain.process_responses("p"))["review"]["model"] == "llama"
