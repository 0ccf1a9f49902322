"""One run's state, and the narrow view of it that each node gets.

A node kind sees a :class:`NodeContext`: its compiled node, the names its templates read, the
models it may use, and a ``call`` that goes through the run's one call path. It never sees the
engine, the scheduler or another node's state.
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jinja2

from flowengine import plugins
from flowengine.events import Event, Listener, TokenDelta, TokenListener
from flowengine.language.plan import CompiledNode
from flowengine.language.templates import (
    CompiledTemplate,
    ModelInfo,
    compile_value,
    evaluate_value,
)
from flowengine.providers import Completion, call_selector
from flowengine.results import CallResult, ErrorInfo, SelectResult
from flowengine.run.budget import BudgetMeter
from flowengine.run.calls import Target
from flowengine.run.log import log_event, logged_kinds
from flowengine.spec import HttpSelector, NodeSpec, PluginNode, WorkflowSpec

if TYPE_CHECKING:
    from flowengine.language.workflow import Workflow
    from flowengine.run.engine import Engine


# What a template can raise at run time: its own errors, and Python's from expressions it evaluates.
TEMPLATE_ERRORS = (jinja2.TemplateError, ArithmeticError, LookupError, TypeError, ValueError)


class NodeFailure(Exception):
    """A node did not succeed; ``output`` keeps what it produced (failed calls included)."""

    def __init__(self, error: ErrorInfo, output: Any = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.output = output


def _emit(
    listeners: Sequence[Listener],
    kinds: frozenset[str] | None,
    run_id: str,
    workflow: str,
    kind: Any,
    **fields: Any,
) -> None:
    if kinds is not None and kind not in kinds:
        return
    event = Event(kind, run_id, workflow, **fields)
    for listener in listeners:
        listener(event)


def new_run_id() -> str:
    """A fresh run id: 16 hex digits."""
    return secrets.token_hex(8)


class Run:
    """The state of one run: its inputs, the models it may use, its calls and listeners."""

    def __init__(
        self,
        engine: Engine,
        workflow: Workflow,
        inputs: dict[str, Any],
        listeners: Sequence[Listener],
        allowed: Sequence[str],
        budgets: Sequence[BudgetMeter] = (),
        *,
        on_token: TokenListener | None = None,
        streamed: Iterable[str] = (),
        run_id: str | None = None,
    ) -> None:
        self.engine = engine
        self.workflow = workflow
        self.spec: WorkflowSpec = workflow.spec
        self.run_id = run_id or new_run_id()
        self.inputs = inputs
        self.listeners = listeners
        self.allowed = allowed  # model aliases this run may use, by weight
        #: Where the pieces of streamed answers go, and the nodes whose calls stream.
        self.on_token = on_token
        self.streamed = frozenset(streamed) if on_token is not None else frozenset()
        # A function, not a method: the call path keeps it, and a bound method would tie the
        # two in a reference cycle that only the garbage collector could free.
        # When logging is the only listener, an event of a kind it would not log at its level
        # (as of the run's start) is not built: most are, at the default level.
        others = [listener for listener in listeners if listener is not log_event]
        kinds = None if others else logged_kinds()
        self.emit = functools.partial(_emit, listeners, kinds, self.run_id, self.spec.name)
        self.selector_confidence: float | None = None
        #: The confidence a selector gave each model, which that model's results carry.
        self.scores: dict[str, float] = {}
        #: What each node has produced so far, kept for a node that is cancelled or times out:
        #: the calls it has completed, or what it keeps itself (a loop: its finished rounds).
        self.partial: dict[str, Any] = {}
        self.calls = engine.call_path(self.emit, self.scores, budgets)
        self._targets = engine.targets(workflow)

    def target(self, alias: str) -> Target:
        """Where calls for ``alias`` go, resolved once per engine and workflow."""
        found = self._targets.get(alias)
        if found is None:
            found = self._targets[alias] = self.engine.target(self.spec, alias)
        return found

    def kept(self, node_id: str) -> Any:
        """What a node that did not finish had produced (a copy of its calls); None if nothing."""
        found = self.partial.get(node_id)
        return (list(found) if isinstance(found, list) else found) or None

    def resolve_alias(self, name: str) -> str | None:
        """An alias for a name that is an alias or a provider model id (exact, then any case)."""
        if name in self.spec.models:
            return name
        lowered = name.strip().lower()
        for alias, model in self.spec.models.items():
            if model.id == name or alias.lower() == lowered or model.id.lower() == lowered:
                return alias
        return None


#: Runs one round of a loop's group: ``(loop, scope, number)`` -> each node's output by id,
#: and the error of the node that stopped the round, if one did.
RoundRunner = Callable[
    [CompiledNode, dict[str, Any], int], Awaitable[tuple[dict[str, Any], ErrorInfo | None]]
]


class NodeContext:
    """What one node may see and do during a run."""

    def __init__(
        self,
        run: Run,
        node: CompiledNode,
        scope: Mapping[str, Any],
        rounds: RoundRunner | None = None,
    ) -> None:
        self._run = run
        self._rounds = rounds
        self.node = node
        self.spec: NodeSpec = node.spec
        #: The names the node's templates read: inputs, ancestors' outputs, ``models``.
        self.scope = scope
        self.workflow: WorkflowSpec = run.spec
        self.models: Mapping[str, ModelInfo] = run.workflow.plan.models
        self.allowed: Sequence[str] = run.allowed
        self.offline: bool = run.engine.offline
        self.inputs: Mapping[str, Any] = run.inputs
        #: The calls this node has completed so far.
        self.done: list[CallResult] = run.partial.setdefault(node.id, [])

    async def call(
        self,
        alias: str,
        messages: list[dict[str, str]],
        params: dict[str, Any] | None = None,
        *,
        cacheable: Callable[[Completion], bool] | None = None,
    ) -> CallResult:
        """One call of model ``alias`` through the run's call path; failures are results.

        An answer ``cacheable`` refuses is not cached (see :meth:`CallPath.call`).
        """
        spec = self.spec
        result = await self._run.calls.call(
            self.node.id,
            self._run.target(alias),
            messages,
            self.params(alias) if params is None else params,
            retry=spec.retry,
            use_cache=spec.cache,
            cacheable=cacheable,
            on_delta=self._token_sink(alias),
        )
        self.done.append(result)
        return result

    async def run_round(
        self, scope: dict[str, Any], number: int
    ) -> tuple[dict[str, Any], ErrorInfo | None]:
        """Round ``number`` of this loop node's group, as a DAG whose nodes read ``scope``
        (where their outputs are added): each node's output by id, and the error of the node
        that stopped the round, if one did. Its nodes' events and calls name them
        ``loop[number].node``, and their results join the run's."""
        if self._rounds is None:
            raise RuntimeError(f"node '{self.node.id}' cannot run rounds here")
        return await self._rounds(self.node, scope, number)

    def keep(self, output: Any) -> None:
        """What the node has produced so far: its output if it is cancelled or times out."""
        self._run.partial[self.node.id] = output

    def _token_sink(self, alias: str) -> Callable[[str], None] | None:
        """Where the pieces of this node's answer go, if it streams: not a structured answer,
        which is only an answer once it is checked whole."""
        on_token = self._run.on_token
        if (
            on_token is None
            or self.node.id not in self._run.streamed
            or self.node.response is not None
        ):
            return None
        node_id = self.node.id
        return lambda text: on_token(TokenDelta(node_id, alias, text))

    def params(self, alias: str) -> dict[str, Any]:
        """Defaults, then the model's params, then the node's: the most specific wins."""
        node_params: dict[str, Any] = getattr(self.spec, "params", {})
        model_params = self.workflow.models[alias].params
        return {**self.workflow.defaults.params, **model_params, **node_params}

    async def ask_selector(
        self, selector: HttpSelector, prompt: str
    ) -> tuple[str, dict[str, float]]:
        """The model-selector service's choice for ``prompt``; CallError when it fails."""
        return await call_selector(selector, self._run.engine.session, prompt)

    @functools.cached_property
    def config(self) -> Any:
        """A plugin node's own keys: an instance of its config model if it gave one, else a
        dict. Template strings among them are as written: :meth:`evaluate` evaluates them."""
        spec = self.spec
        if not isinstance(spec, PluginNode):
            return {}
        plugin = plugins.find(plugins.NODES, spec.type)
        config = plugin.config if plugin is not None else None
        return spec.options if config is None else config.model_validate(spec.options)

    def evaluate(self, value: Any) -> Any:
        """``value`` with every template in it evaluated with what this node's templates see:
        ``"{{ answer }}"`` alone keeps the native value, other text renders to a string."""
        return evaluate_value(compile_value(self._run.workflow.env, value), self.scope)

    def router_template(self, name: str) -> CompiledTemplate:
        return self._run.workflow.plan.routers[name]

    def chose(self, result: SelectResult) -> None:
        """Record a select node's choice: later calls carry its confidence scores."""
        run = self._run
        if result.scores and not run.scores:
            run.scores.update(result.scores)
        if result.source == "selector" and run.selector_confidence is None:
            run.selector_confidence = result.confidence
        if result.source == "fallback":
            run.emit(
                "selector_fallback", node=self.node.id, model=result.model, reason=result.reason
            )

    def resolve_alias(self, name: str) -> str | None:
        return self._run.resolve_alias(name)

    def by_weight(self, aliases: Iterable[str]) -> list[str]:
        """``aliases`` (known ones, once each) in the workflow's priority order."""
        wanted = set(aliases)
        return [alias for alias in self._run.workflow.plan.by_weight if alias in wanted]
