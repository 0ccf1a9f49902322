"""The original staged orchestrator, over the shipped ``staged`` workflow.

Registered models become the workflow's ``models:`` (ids and weights, as ``--set models=...``
would set them); a Python client becomes a provider of its own through the plugin registry.
The workflow runs the stages; this module maps arguments in and the run's output out, and
raises, as the original did, when a model still fails after its retries.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from flowengine import CallError, RunError, RunResult, UsageError, Workflow, register_provider
from flowengine.clients._clients import as_provider
from flowengine.clients._workflows import ClientResult, load, run
from flowengine.compare import calls_in
from flowengine.errors import did_you_mean
from flowengine.results import CallResult, to_jsonable

logger = logging.getLogger("flowengine.clients")

#: The node of the initial stage: every model answers the prompt as written.
INITIAL = "initial"


class MultiLLMOrchestrator:
    """Every registered model answers; the answers are analysed (meta) and synthesised.

    The shipped ``staged`` workflow runs the stages. A model is an OpenRouter model id, or a
    Python client: a callable given the chat messages (sync or async) that returns the text,
    or an object with an async ``complete(request)``. Weights order the models (higher
    first); the highest-weight model scores the answers and writes the synthesis. A call is
    retried until ``max_retries`` attempts have failed; then the error is logged as critical
    and raised. Answers are cached unless ``cache_enabled=False``. ``offline``, ``base_url``
    and ``overrides`` are as for :class:`~flowengine.clients.MultiModelOrchestrator`.

    Another pipeline is another workflow: a subclass names it (``workflow = "mine.yaml"``),
    or the constructor's ``workflow=`` does. It takes the inputs ``prompt`` and ``stages``
    and has an ``initial`` node; a stage it adds is a node with ``when: "'name' in stages"``.

    Example::

        orchestrator = MultiLLMOrchestrator(max_retries=5)
        orchestrator.register_model("chatgpt", "openai/gpt-4o-mini", weight=3.0)
        orchestrator.register_model("llama", llama_client)
        results = await orchestrator.process_responses("Your prompt here")
        results["final_synthesis"]["content"], results["metrics"]["llama"]["success_rate"]
    """

    #: The workflow a subclass runs instead: a shipped workflow's name, or a file.
    workflow: str | Path = "staged"

    def __init__(
        self,
        max_retries: int = 3,
        cache_enabled: bool = True,
        *,
        offline: bool = False,
        base_url: str | None = None,
        workflow: str | Path | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.max_retries = max_retries
        self.cache_enabled = cache_enabled
        self.offline = offline
        self._base_url = base_url
        self._source = workflow or self.workflow
        self._overrides = dict(overrides or {})
        self._models: dict[str, dict[str, Any]] = {}
        self._providers: dict[str, dict[str, Any]] = {}
        self._clients: dict[str, Any] = {}
        self._loaded: Workflow | None = None

    def register_model(self, name: str, client: Any, weight: float = 1.0) -> None:
        """Add a model (or replace the one of that name): an OpenRouter model id, or a client."""
        if isinstance(client, str):
            self._models[name] = {"id": client, "weight": weight}
            self._providers.pop(name, None)
        else:
            type_name = f"client-{id(client):x}"
            register_provider(type_name, as_provider(client))
            self._providers[name] = {"type": type_name}
            self._models[name] = {"id": name, "weight": weight, "provider": _provider(name)}
        self._clients[name] = client
        self._loaded = None

    def set_model_weight(self, name: str, weight: float) -> None:
        self._known([name])
        self._models[name]["weight"] = weight
        self._loaded = None

    def get_prioritized_models(self, subset: Iterable[str] | None = None) -> list[str]:
        """The models by weight, highest first (ties in the order registered)."""
        chosen = None if subset is None else self._known(subset)
        return self.pipeline.spec.model_sorted(chosen)

    async def process_responses(
        self,
        prompt: str,
        stages: Iterable[str] | None = None,
        models: Iterable[str] | None = None,
    ) -> ClientResult:
        """Run the stages; ``{initial_responses, meta_responses, final_synthesis, ranking,
        metadata, metrics}``: a list of call results per fanout stage, the synthesis's call
        result, and per model its calls, success_rate, latency_p50_s and latency_p95_s,
        tokens, cost and quality (0 to 1, from the scores of its answers).

        ``stages`` (default all) names those to run after the initial one, which always
        runs; ``models`` (default all) restricts the run to those models.
        """
        inputs: dict[str, Any] = {"prompt": prompt}
        if stages is not None:
            inputs["stages"] = self._stages(stages)
        result = await self._run(inputs, self.cache_enabled, models)
        output = result.output if isinstance(result.output, dict) else {}
        return ClientResult({**output, "metrics": to_jsonable(result.metrics.models)}, result)

    async def get_model_response(
        self, model: Any, prompt: str, stage: str, use_cache: bool = True
    ) -> dict[str, Any]:
        """One model's answer to ``prompt`` as written: its call result, and ``stage``.

        ``model`` is a registered name or the client registered; ``stage`` labels the call.
        """
        alias = self._alias_of(model)
        result = await self._run(
            {"prompt": prompt}, self.cache_enabled and use_cache, [alias], only=[INITIAL]
        )
        (call,) = to_jsonable(result.nodes[INITIAL].output)
        return {**call, "stage": stage}

    @property
    def pipeline(self) -> Workflow:
        """The workflow with the registered models, loaded again after each change."""
        if self._loaded is None:
            given: dict[str, Any] = {"defaults.retry.attempts": self.max_retries}
            if self._models:
                given["models"] = {name: dict(spec) for name, spec in self._models.items()}
            for name, spec in self._providers.items():
                given[f"providers.{_provider(name)}"] = spec
            self._loaded = load(self._source, {**given, **self._overrides}, base_url=self._base_url)
        return self._loaded

    async def _run(
        self,
        inputs: dict[str, Any],
        cache: bool,
        models: Iterable[str] | None,
        only: list[str] | None = None,
    ) -> RunResult:
        chosen = None if models is None else self._known(models)
        result = await run(
            self.pipeline, inputs, offline=self.offline, cache=cache, only=only, models=chosen
        )
        failed = [call for call in self._binding_calls(result) if not call.success]
        if failed or result.status == "failed":
            raise _failure(result, failed)
        return result

    def _binding_calls(self, result: RunResult) -> list[CallResult]:
        """The calls of the nodes whose failure counts: not those the workflow lets fail
        (``on_error: continue``, as the quality scores of a client that cannot score)."""
        nodes = self.pipeline.spec.nodes
        return [
            call
            for node_id, node in result.nodes.items()
            if node_id not in nodes or nodes[node_id].on_error == "fail"
            for call in calls_in(node.output)
        ]

    def _known(self, names: Iterable[str]) -> list[str]:
        known = self.pipeline.spec.models
        found = list(names)
        for name in found:
            if name not in known:
                fix = did_you_mean(name, known) or f"registered models: {', '.join(known)}"
                raise UsageError(f"unknown model '{name}'", fix)
        return found

    def _stages(self, stages: Iterable[str]) -> list[str]:
        declared = self.pipeline.spec.inputs.get("stages")
        known = declared.default if declared is not None else None
        found = list(stages)
        for stage in found:
            if isinstance(known, list) and stage not in known:
                fix = did_you_mean(stage, known) or f"stages: {', '.join(known)}"
                raise UsageError(f"unknown stage '{stage}'", fix)
        return found

    def _alias_of(self, model: Any) -> str:
        if isinstance(model, str):
            return self._known([model])[0]
        for name, client in self._clients.items():
            if client is model or client == model:  # a bound method is made anew each time
                return name
        raise UsageError(
            f"{type(model).__name__} object is not a registered model",
            "register it first: orchestrator.register_model(name, client)",
        )


def _provider(name: str) -> str:
    """The provider of a model's Python client: a name without the dots an alias may have."""
    return f"{name.replace('.', '-')}-client"


def _failure(result: RunResult, failed: list[Any]) -> RunError:
    """The error to raise for a run whose model failed after its retries, logged as critical."""
    where = f"run {result.run_id} (flowengine runs show {result.run_id})"
    if failed:
        call = failed[0]
        error = call.error
        message = (
            f"model '{call.model}' failed after {call.attempts} attempts: "
            f"{error.message if error else 'no answer'}; {where}"
        )
        logger.critical(message)
        if error is None:
            return CallError("failed", message)
        return CallError(error.type, message, status=error.status)
    message = f"{result.workflow} failed: {result.error.message if result.error else ''}; {where}"
    logger.critical(message)
    return RunError(message)
