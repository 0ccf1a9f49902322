"""Provider types by name. Built-ins are found exactly as a plugin is (:mod:`flowengine.plugins`).

A provider type is one of:

- a factory ``(name, spec, ctx) -> Provider``, such as a Provider class;
- a :class:`~flowengine.providers.base.Provider` object, shared by every provider of the type;
- a plain callable, sync or async, given the messages (or, if its parameter is called
  ``request``, the whole :class:`ChatRequest`) and returning text or a :class:`Completion`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flowengine import plugins
from flowengine.errors import CallError, PluginError, did_you_mean
from flowengine.providers.base import ChatRequest, Completion, Provider, ProviderContext
from flowengine.spec import PluginProvider, ProviderBase

if TYPE_CHECKING:
    from pydantic import BaseModel

ProviderFactory = Callable[[str, Any, ProviderContext], Provider]


def register_provider(
    type_name: str, provider: Any, *, config: type[BaseModel] | None = None
) -> None:
    """Make ``type: <type_name>`` under a workflow's ``providers:`` use ``provider``.

    ``provider`` is a factory ``(name, spec, ctx) -> Provider``, a Provider object, or a plain
    callable (sync or async) that takes the messages and returns text or a Completion.
    ``config``, a pydantic model, checks the provider's own keys in the workflow (those other
    than ``type``, ``rate_limit``, ``max_concurrency``, ``timeout`` and ``retry``) and is what a
    factory gets as ``spec``; without it the factory gets the spec with those keys as
    attributes. Registering a name again replaces the earlier provider.

    Example::

        register_provider("echo", lambda messages: messages[-1]["content"])
        # providers: {mine: {type: echo}}   models: {echo: {id: any, provider: mine}}
    """
    factory_of(type_name, provider)  # refused now, rather than when a run needs it
    plugins.register(plugins.PROVIDERS, type_name, provider, config)


def provider_types() -> list[str]:
    """The known type names, sorted: built in, registered from code, or installed."""
    return plugins.names(plugins.PROVIDERS)


def create_provider(name: str, spec: ProviderBase, ctx: ProviderContext) -> Provider:
    """Build the provider called ``name`` from its spec, by the spec's ``type``.

    Raises :class:`PluginError` when the type is unknown, or its plugin cannot make one.
    """
    type_name = str(getattr(spec, "type", None))
    plugin = plugins.find(plugins.PROVIDERS, type_name)
    if plugin is None:
        known = provider_types()
        hint = did_you_mean(type_name, known)
        raise PluginError(
            f"provider '{name}' has unknown type {type_name!r}" + (f"; {hint}" if hint else ""),
            f"known types: {', '.join(known)}",
        )
    given: Any = spec
    if plugin.config is not None and isinstance(spec, PluginProvider):
        given = plugin.config.model_validate(spec.options)
    try:
        return factory_of(type_name, plugin.obj)(name, given, ctx)
    except (PluginError, CallError):
        raise
    except Exception as exc:
        raise PluginError(
            f"provider '{name}': the {type_name!r} provider type ({plugin.origin}) failed to "
            f"make it: {type(exc).__name__}: {exc}"
        ) from exc


def factory_of(type_name: str, provider: Any) -> ProviderFactory:
    """The factory a registered object stands for; PluginError if it is none of the three."""
    required, accepts_one = _arity(provider)
    if inspect.isclass(provider) or required == 3:
        factory: ProviderFactory = provider
        return factory
    # An object or callable with a `cache_id` is cached under it (see Provider).
    cache_id = getattr(provider, "cache_id", None)
    if callable(getattr(provider, "complete", None)):
        return lambda name, spec, ctx: Bound(name, spec, provider.complete, cache_id)
    if callable(provider) and required <= 1 and accepts_one:
        return lambda name, spec, ctx: Bound(name, spec, _call_plain(provider), cache_id)
    raise PluginError(
        f"provider type {type_name!r}: {provider!r} is not a provider",
        "register a factory (name, spec, ctx) -> Provider, an object with an async "
        "`complete(request)`, or a callable taking the messages and returning text",
    )


def _arity(func: Any) -> tuple[int, bool]:
    """How many positional arguments ``func`` requires, and whether it accepts one."""
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # not callable, or a builtin without a signature
        return -1, False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = sum(p.default is p.empty for p in positional)
    varargs = any(p.kind is p.VAR_POSITIONAL for p in parameters)
    return required, bool(positional) or varargs


Answer = Callable[[ChatRequest], Any]


def _call_plain(func: Callable[..., Any]) -> Answer:
    """A plain callable as ``request -> answer``; a sync one runs in a thread."""
    wants_request = "request" in inspect.signature(func).parameters
    is_async = inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - an object with an async __call__
    )

    async def call(request: ChatRequest) -> Any:
        argument = request if wants_request else request.messages
        if is_async:
            return await func(argument)
        return await asyncio.to_thread(func, argument)

    return call


class Bound:
    """A provider made from a Provider object or a plain callable registered from code."""

    def __init__(self, name: str, spec: Any, answer: Answer, cache_id: str | None = None) -> None:
        self.name = name
        self.spec = spec
        self._answer = answer
        self.cache_id = cache_id

    def __repr__(self) -> str:
        return f"Bound(name={self.name!r})"

    async def complete(self, request: ChatRequest) -> Completion:
        answer = self._answer(request)
        while inspect.isawaitable(answer):  # a sync function may return a coroutine
            answer = await answer
        if isinstance(answer, Completion):
            return answer
        if isinstance(answer, str):
            return Completion(content=answer, served_model=request.model_id, finish_reason="stop")
        raise CallError(
            "provider",
            f"provider '{self.name}' returned {type(answer).__name__}, not text or a Completion",
        )
