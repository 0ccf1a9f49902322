"""The Engine: what runs share — one HTTP session, the providers, their rate limits and caps."""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp

from flowengine.errors import ConfigError, UsageError
from flowengine.events import Event, Listener, TokenDelta, TokenListener
from flowengine.providers import Provider, ProviderContext, create_provider
from flowengine.run.budget import BudgetMeter, meters
from flowengine.run.calls import CallPath, Emit, Target
from flowengine.run.log import log_event
from flowengine.run.resilience import Limiter, ProviderLimits
from flowengine.run.scheduler import execute
from flowengine.run.selection import known_nodes, select_nodes
from flowengine.run.sharing import Sharing
from flowengine.run.single_flight import Flights
from flowengine.spec import (
    Budget,
    FanoutNode,
    LlmNode,
    OfflineProvider,
    OpenAIProvider,
    ProviderBase,
    WorkflowSpec,
)
from flowengine.store.backend import CacheBackend
from flowengine.store.db import Store
from flowengine.store.prices import PriceBook

if TYPE_CHECKING:
    from flowengine.language.workflow import Workflow
    from flowengine.results import RunResult

# Limits are per event loop (asyncio primitives belong to one loop) and shared by every engine
# on it, so two engines in one process still respect one provider's rate limit together.
_LIMITS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, ProviderLimits]] = (
    weakref.WeakKeyDictionary()
)


def shared_limits(key: str, spec: ProviderBase, shared: Limiter | None = None) -> ProviderLimits:
    """The process-wide limits of the provider described by ``key`` on the running loop;
    ``shared``, when given, is its rate limiter across processes (see :mod:`.sharing`)."""
    table = _LIMITS.setdefault(asyncio.get_running_loop(), {})
    limits = table.get(key)
    if limits is None:
        limits = table[key] = ProviderLimits.from_spec(spec, shared)
    return limits


class Engine:
    """Runs workflows; owns what runs share so that thousands of runs obey one set of limits.

    Example::

        async with Engine() as engine:
            results = await asyncio.gather(*(engine.run(wf, prompt=p) for p in prompts))

    ``offline=True`` sends every model call to the deterministic offline provider and makes
    select nodes choose by weight, so any workflow runs with no key and no network.
    ``cache`` and ``record`` use the SQLite file ``db`` (default ``$FLOWENGINE_DB``, else
    ``.flowengine/flowengine.db``) for the response cache and the run records.
    ``FLOWENGINE_REDIS_URL`` in ``environ`` shares rate limits and the cache with every
    process using that Redis (:mod:`flowengine.run.sharing`).
    """

    def __init__(
        self,
        *,
        offline: bool = False,
        environ: Mapping[str, str] | None = None,
        listeners: Iterable[Listener] = (),
        session: aiohttp.ClientSession | None = None,
        cache: bool = True,
        record: bool = True,
        db: str | Path | None = None,
    ) -> None:
        self.offline = offline
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.sharing = Sharing(self.environ)
        self.store = Store(db, background=True) if cache or record else None
        self.cache: CacheBackend | None = (
            self.sharing.cache(self.store) if cache and self.store else None
        )
        self.flights = Flights()
        self.record = record
        self.prices = PriceBook(self.store)
        # Logging is one more listener: an application sees retries, fallbacks and failures
        # on the `flowengine.run` logger.
        self.listeners = [log_event, *listeners]
        self._session = session
        self._owns_session = session is None
        self._providers: dict[str, tuple[Provider, ProviderLimits]] = {}
        # Where each workflow's calls go, for as long as the workflow exists: weak keys, so
        # that a service loading thousands of workflows keeps none it no longer uses.
        self._targets: weakref.WeakKeyDictionary[Workflow, dict[str, Target]] = (
            weakref.WeakKeyDictionary()
        )

    async def __aenter__(self) -> Engine:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self.store is not None:
            # Waits for the queued writes, which may wait for a lock: off the event loop.
            await asyncio.to_thread(self.store.close)
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None
        self._providers.clear()
        self._targets.clear()
        await self.sharing.aclose()

    @property
    def session(self) -> aiohttp.ClientSession:
        """One session for every call of this engine, created on first use."""
        if self._session is None or self._session.closed:
            # No per-host cap here: providers enforce their own max_concurrency.
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector)
            self._owns_session = True
        return self._session

    def effective_spec(self, spec: ProviderBase) -> ProviderBase:
        if self.offline and not isinstance(spec, OfflineProvider):
            return OfflineProvider(type="offline", timeout=spec.timeout, retry=spec.retry)
        return spec

    def provider(self, name: str, spec: ProviderBase) -> tuple[Provider, ProviderLimits]:
        """The provider ``name`` and its shared limits, built once per engine and spec."""
        live = self.effective_spec(spec)
        shared_at = self.sharing.limit_url(name, live)
        key = f"{name}\0{live.model_dump_json()}\0{shared_at}"
        found = self._providers.get(key)
        if found is None:
            ctx = ProviderContext(session=self.session, environ=self.environ)
            limits = shared_limits(key, live, self.sharing.window(name, live))
            found = (create_provider(name, live, ctx), limits)
            self._providers[key] = found
        return found

    def targets(self, workflow: Workflow) -> dict[str, Target]:
        """The table of where ``workflow``'s calls go, filled by :meth:`target` as runs need."""
        return self._targets.setdefault(workflow, {})

    def target(self, spec: WorkflowSpec, alias: str) -> Target:
        """Where calls for model ``alias`` of a workflow go: its provider, limits and policy."""
        name = spec.provider_of(alias)
        provider_spec = spec.providers[name]
        provider, limits = self.provider(name, provider_spec)
        # A provider says where its answers are cached, if they are (see Provider): offline
        # answers, which cost nothing and never change, are not.
        cache_id = getattr(provider, "cache_id", None)
        return Target(
            alias=alias,
            model_id=spec.models[alias].id,
            provider_name=name,
            provider=provider,
            limits=limits,
            timeout=spec.defaults.timeout or provider_spec.timeout,
            retry=spec.defaults.retry or provider_spec.retry,
            cache_id=cache_id if isinstance(cache_id, str) else None,
        )

    def call_path(
        self, emit: Emit, confidence: Mapping[str, float], budgets: Sequence[BudgetMeter]
    ) -> CallPath:
        """The call path of one run: through this engine's cache, prices and records."""
        return CallPath(
            cache=self.cache,
            prices=self.prices,
            emit=emit,
            timeline=[] if self.record else None,
            confidence=confidence,
            budgets=budgets,
            flights=self.flights,
        )

    def check_credentials(self, workflow: Workflow, aliases: Iterable[str]) -> None:
        """Raise ConfigError naming the variable to set when a used provider has no key."""
        if self.offline:
            return
        spec = workflow.spec
        for provider_name in dict.fromkeys(spec.provider_of(a) for a in aliases):
            provider = spec.providers[provider_name]
            key_env = provider.api_key_env if isinstance(provider, OpenAIProvider) else None
            if key_env and not self.environ.get(key_env):
                raise ConfigError(
                    f"{key_env} is not set: {workflow.source.file} calls "
                    f"provider '{provider_name}', which needs an API key",
                    f"export {key_env}=..., or pass --offline to try the workflow with "
                    "offline answers",
                )

    async def check_shared(self, workflow: Workflow, aliases: Iterable[str]) -> None:
        """Raise ConfigError naming the Redis that the calls of ``aliases`` need and cannot
        reach: refused before the first call, rather than every call failing."""
        spec = workflow.spec
        names = dict.fromkeys(spec.provider_of(a) for a in aliases)
        live = {name: self.effective_spec(spec.providers[name]) for name in names}
        await self.sharing.check(live, cache=self.cache is not None and not self.offline)

    async def run(
        self,
        workflow: Workflow,
        inputs: Mapping[str, Any] | None = None,
        *,
        only: Iterable[str] | None = None,
        skip: Iterable[str] | None = None,
        models: Iterable[str] | None = None,
        listeners: Iterable[Listener] = (),
        on_token: TokenListener | None = None,
        streamed: Iterable[str] = (),
        budget: Budget | None = None,
        shared_budgets: Iterable[BudgetMeter] = (),
        run_id: str | None = None,
        **named_inputs: Any,
    ) -> RunResult:
        """Run ``workflow`` once; inputs by mapping or by keyword (``prompt=...``).

        ``only`` runs those nodes and what they need; ``skip`` skips those nodes (the nodes
        after them run and see them as none); ``models`` restricts the run to those aliases.
        The calls of the ``streamed`` nodes pass each piece of their answers to ``on_token``
        as it arrives (:meth:`stream` is the convenient form). ``budget`` caps the run instead
        of the workflow's ``budget:``; ``shared_budgets`` are meters it shares with other runs
        (a batch's), checked too. ``run_id`` names the run, for a caller that hands the id
        out before the run starts (a server); default a new one.
        """
        return await execute(
            self,
            workflow,
            {**(inputs or {}), **named_inputs},
            only=only,
            skip=skip,
            models=models,
            listeners=[*self.listeners, *listeners],
            on_token=on_token,
            streamed=streamed,
            budgets=meters(workflow.spec.budget if budget is None else budget, shared_budgets),
            run_id=run_id,
        )

    async def stream(
        self,
        workflow: Workflow,
        inputs: Mapping[str, Any] | None = None,
        *,
        nodes: Iterable[str] | None = None,
        only: Iterable[str] | None = None,
        skip: Iterable[str] | None = None,
        models: Iterable[str] | None = None,
        budget: Budget | None = None,
        run_id: str | None = None,
        **named_inputs: Any,
    ) -> AsyncGenerator[Event | TokenDelta | RunResult, None]:
        """Run ``workflow`` once, yielding its events and the pieces of its answers as they
        come, and last its :class:`RunResult`.

        ``nodes`` are the llm and fanout nodes whose answers stream (a piece's ``model`` tells
        a fanout's apart); default the workflow's answer (:func:`answer_nodes`). A node with a
        ``schema:`` does not stream. Other arguments are :meth:`run`'s.

        Stopping early cancels the run; ``aclosing`` makes that happen at once rather than
        when the iterator is collected::

            async with contextlib.aclosing(engine.stream(wf, prompt="Hi")) as items:
                async for item in items:
                    if isinstance(item, TokenDelta):
                        print(item.text, end="", flush=True)
        """
        streamed = stream_nodes(workflow, nodes, only, skip)
        items: asyncio.Queue[Event | TokenDelta | RunResult | Exception] = asyncio.Queue()

        async def run() -> None:
            try:
                result = await self.run(
                    workflow,
                    inputs,
                    only=only,
                    skip=skip,
                    models=models,
                    budget=budget,
                    listeners=[items.put_nowait],
                    on_token=items.put_nowait,
                    streamed=streamed,
                    run_id=run_id,
                    **named_inputs,
                )
            except Exception as exc:  # bad arguments, a plugin's error: for the consumer
                items.put_nowait(exc)
            else:
                items.put_nowait(result)

        task = asyncio.create_task(run())
        try:
            while True:
                item = await items.get()
                if isinstance(item, Exception):
                    raise item
                yield item
                if not isinstance(item, Event | TokenDelta):
                    return
        finally:
            task.cancel()  # the consumer stopped early, or was cancelled: so is the run
            await asyncio.gather(task, return_exceptions=True)


def answer_nodes(workflow: Workflow, selected: Iterable[str] | None = None) -> list[str]:
    """The nodes whose reply is the workflow's answer: ``answer:`` as written, or else the
    last llm node without ``schema:`` among ``selected`` (default every node), in run order."""
    spec = workflow.spec
    if spec.answer is not None:
        return list(spec.answer)
    last: list[str] = []
    for node_id in workflow.order if selected is None else selected:
        node = spec.nodes[node_id]
        if isinstance(node, LlmNode) and node.output_schema is None:
            last = [node_id]
    return last


def _after_the_loop(loop: str, name: str) -> str:
    return f"stream an llm node after the loop, one that reads `{loop}.last.{name}`"


def stream_nodes(
    workflow: Workflow,
    nodes: Iterable[str] | None,
    only: Iterable[str] | None = None,
    skip: Iterable[str] | None = None,
) -> list[str]:
    """The nodes a streamed run streams: ``nodes``, checked, or the answer's."""
    if nodes is None:
        selected, _ = select_nodes(workflow, only, skip)
        return answer_nodes(workflow, selected)
    found = list(nodes)
    known = workflow.spec.nodes
    for name in found:
        known_nodes(workflow, [name], "stream", _after_the_loop)
        if not isinstance(known[name], LlmNode | FanoutNode):
            raise UsageError(
                f"stream: '{name}' is a {known[name].type} node, which writes no answer",
                "stream llm and fanout nodes",
            )
    return found
