"""Provider types by name. Built-ins register here exactly as a plugin would."""

from __future__ import annotations

from collections.abc import Callable

from flowengine.errors import did_you_mean
from flowengine.providers.base import Provider, ProviderContext
from flowengine.spec import ProviderBase

ProviderFactory = Callable[[str, ProviderBase, ProviderContext], Provider]

_FACTORIES: dict[str, ProviderFactory] = {}


def register_provider(type_name: str, factory: ProviderFactory) -> None:
    """Make ``type: <type_name>`` in a workflow's ``providers:`` build with ``factory``.

    ``factory(name, spec, ctx)`` returns a :class:`~flowengine.providers.base.Provider`.
    Registering a name again replaces the earlier factory.

    Example::

        register_provider("echo", lambda name, spec, ctx: EchoProvider(name, spec))
    """
    _FACTORIES[type_name] = factory


def provider_types() -> list[str]:
    """The registered type names, sorted."""
    return sorted(_FACTORIES)


def create_provider(name: str, spec: ProviderBase, ctx: ProviderContext) -> Provider:
    """Build the provider called ``name`` from its spec, by the spec's ``type``."""
    type_name = getattr(spec, "type", None)
    factory = _FACTORIES.get(type_name) if isinstance(type_name, str) else None
    if factory is None:
        hint = did_you_mean(str(type_name), _FACTORIES)
        known = ", ".join(provider_types()) or "none"
        raise LookupError(
            f"provider '{name}' has unknown type {type_name!r}"
            + (f"; {hint}" if hint else "")
            + f" (known: {known})"
        )
    return factory(name, spec, ctx)
