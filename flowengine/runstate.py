"""One run's state: its inputs, its calls and their counters, and the call path every node uses."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from flowengine.errors import CallError
from flowengine.events import Event, EventKind, Listener
from flowengine.providers import ChatRequest, Provider
from flowengine.resilience import AuthGate, ProviderLimits, call_with_retries
from flowengine.results import CallResult, ErrorInfo
from flowengine.spec import ModelSpec, NodeSpec, ProviderBase, Retry

if TYPE_CHECKING:
    from flowengine.engine import Engine
    from flowengine.workflow import Workflow


class NodeFailure(Exception):
    """A node did not succeed; ``output`` keeps what it produced (failed calls included)."""

    def __init__(self, error: ErrorInfo, output: Any = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.output = output


class Run:
    """The state of one run, shared by its nodes."""

    def __init__(
        self,
        engine: Engine,
        workflow: Workflow,
        run_id: str,
        inputs: dict[str, Any],
        listeners: list[Listener],
        allowed: list[str],
    ) -> None:
        self.engine = engine
        self.workflow = workflow
        self.spec = workflow.spec
        self.run_id = run_id
        self.inputs = inputs
        self.listeners = listeners
        self.allowed = allowed  # model aliases this run may use, by weight
        self.gate = AuthGate()
        self.calls: list[CallResult] = []
        self.partial: dict[str, list[CallResult]] = {}
        self.scores: dict[str, float] = {}
        self.selector_confidence: float | None = None
        self.in_flight = 0
        self.peak = 0
        self._providers: dict[str, tuple[Provider, ProviderLimits]] = {}
        self.models = workflow.plan.models

    def emit(self, kind: EventKind, **fields: Any) -> None:
        if not self.listeners:
            return
        event = Event(kind, self.run_id, self.spec.name, **fields)
        for listener in self.listeners:
            listener(event)

    def by_weight(self, aliases: Iterable[str]) -> list[str]:
        return self.spec.model_sorted(list(dict.fromkeys(aliases)))

    def resolve_alias(self, name: str) -> str | None:
        """An alias for a name that is an alias or a provider model id (exact, then any case)."""
        if name in self.spec.models:
            return name
        lowered = name.strip().lower()
        for alias, model in self.spec.models.items():
            if model.id == name or alias.lower() == lowered or model.id.lower() == lowered:
                return alias
        return None

    def _provider(self, name: str, spec: ProviderBase) -> tuple[Provider, ProviderLimits]:
        # The engine keys its providers by the serialised spec; once per run is enough.
        found = self._providers.get(name)
        if found is None:
            found = self._providers[name] = self.engine.provider(name, spec)
        return found

    async def call(
        self,
        node_id: str,
        node: NodeSpec,
        alias: str,
        messages: list[dict[str, str]],
        params: dict[str, Any],
    ) -> CallResult:
        """One model call with limits and retries; failures come back as ``success: false``."""
        model: ModelSpec = self.spec.models[alias]
        provider_name = self.spec.provider_of(alias)
        provider_spec = self.spec.providers[provider_name]
        provider, limits = self._provider(provider_name, provider_spec)
        retry: Retry = node.retry or self.spec.defaults.retry or provider_spec.retry
        timeout = self.spec.defaults.timeout or provider_spec.timeout
        request = ChatRequest(model.id, messages, params, timeout)

        async def attempt() -> Any:
            self.gate.check(provider_name)
            async with limits.slot():
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)
                try:
                    return await provider.complete(request)
                except CallError as error:
                    self.gate.record(provider_name, error)
                    raise
                finally:
                    self.in_flight -= 1

        def on_retry(number: int, error: CallError, delay: float) -> None:
            info = ErrorInfo(type=error.type, status=error.status, message=error.message)
            self.emit(
                "call_retried", node=node_id, model=alias, attempt=number, delay_s=delay, error=info
            )

        started = time.perf_counter()
        base = {"model": alias, "model_id": model.id, "provider": provider_name}
        try:
            completion, attempts = await call_with_retries(attempt, retry, on_retry=on_retry)
        except CallError as error:
            result = CallResult(
                **base,
                success=False,
                error=ErrorInfo(type=error.type, status=error.status, message=error.message),
                latency_s=round(time.perf_counter() - started, 6),
                attempts=getattr(error, "attempts", 1),
                confidence=self.scores.get(alias),
            )
        else:
            result = CallResult(
                **base,
                served_model=completion.served_model,
                content=completion.content,
                success=True,
                finish_reason=completion.finish_reason,
                usage=completion.usage,
                latency_s=round(time.perf_counter() - started, 6),
                attempts=attempts,
                confidence=self.scores.get(alias),
            )
        self.calls.append(result)
        self.emit(
            "call_finished",
            node=node_id,
            model=alias,
            duration_s=result.latency_s,
            status="succeeded" if result.success else "failed",
            error=result.error,
        )
        return result
