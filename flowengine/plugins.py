"""Plugins: provider types and node kinds by name, registered from code, built in, or installed.

Two entry-point groups: ``flowengine.providers`` (the ``type:`` of a provider) and
``flowengine.nodes`` (the ``type:`` of a node). The built-ins are declared in pyproject.toml
exactly as a plugin's are; :data:`BUILTIN` says the same (a test holds the two equal), so that
a workflow that names only built-ins reads no entry points: reading them scans the metadata of
every installed distribution. They are read once, the first time a name is asked for that is
neither registered from code nor built in. Code registrations win over both.

An entry point names what ``register_provider`` or ``register_node`` would take; a ``config``
attribute on it that is a pydantic model describes its own keys in a workflow. This module
finds and loads; what a provider or a node kind must be is said by
:mod:`flowengine.providers.registry` and :mod:`flowengine.run.nodes.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flowengine.errors import PluginError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

    from pydantic import BaseModel

PROVIDERS = "flowengine.providers"
NODES = "flowengine.nodes"

#: The built-in provider types and node kinds, as pyproject.toml declares them.
BUILTIN: dict[str, dict[str, str]] = {
    PROVIDERS: {
        "openai": "flowengine.providers.openai:OpenAICompatible.from_spec",
        "offline": "flowengine.providers.offline:Offline.from_spec",
    },
    NODES: {
        "select": "flowengine.run.nodes.select:run",
        "llm": "flowengine.run.nodes.llm:run",
        "fanout": "flowengine.run.nodes.fanout:run",
        "judge": "flowengine.run.nodes.judge:run",
        "python": "flowengine.run.nodes.python:run",
        "loop": "flowengine.run.nodes.loop:run",
    },
}

WHAT = {PROVIDERS: "provider type", NODES: "node kind"}


@dataclass(frozen=True)
class Plugin:
    """A provider type or a node kind: what implements it, and the model of its keys."""

    group: str
    name: str
    obj: Any
    #: A pydantic model of the plugin's own keys in a workflow; None: they are passed as given.
    config: type[BaseModel] | None
    #: Where it comes from, for messages: built in, registered from code, or an entry point.
    origin: str


_REGISTERED: dict[str, dict[str, Plugin]] = {PROVIDERS: {}, NODES: {}}
_LOADED: dict[str, dict[str, Plugin]] = {PROVIDERS: {}, NODES: {}}
_ENTRY_POINTS: dict[str, dict[str, EntryPoint]] = {}


def register(group: str, name: str, obj: Any, config: type[BaseModel] | None = None) -> Plugin:
    """Register ``obj`` as ``name`` in ``group``; it replaces any other of that name."""
    plugin = Plugin(group, name, obj, config or config_of(obj), "registered from code")
    _REGISTERED[group][name] = plugin
    return plugin


def find(group: str, name: str) -> Plugin | None:
    """The plugin called ``name``, loaded; None if there is none.

    Raises :class:`PluginError`, naming the plugin and its distribution, if it fails to load.
    """
    found = _REGISTERED[group].get(name) or _LOADED[group].get(name)
    if found is not None:
        return found
    target = BUILTIN[group].get(name)
    if target is not None:
        import pkgutil  # not at the top: validating a workflow of built-ins needs none of this

        found = Plugin(group, name, pkgutil.resolve_name(target), None, "built in")
    else:
        entry = entry_points(group).get(name)
        if entry is None:
            return None
        found = _load(group, entry)
    _LOADED[group][name] = found
    return found


def is_builtin(group: str, name: str) -> bool:
    return name in BUILTIN[group]


def names(group: str) -> list[str]:
    """Every name known in ``group``: the built-ins, then those registered from code or
    installed, sorted."""
    builtin = BUILTIN[group]
    others = {*_REGISTERED[group], *entry_points(group)} - set(builtin)
    return [*builtin, *sorted(others)]


def entry_points(group: str) -> dict[str, EntryPoint]:
    """The group's entry points by name, read once; the first of a name wins."""
    found = _ENTRY_POINTS.get(group)
    if found is None:
        from importlib import metadata  # not at the top: it costs start-up time

        found = {}
        for entry in metadata.entry_points(group=group):
            found.setdefault(entry.name, entry)
        _ENTRY_POINTS[group] = found
    return found


def config_of(obj: Any) -> type[BaseModel] | None:
    """``obj.config`` when that is a pydantic model, else None."""
    from pydantic import BaseModel

    config = getattr(obj, "config", None)
    return config if isinstance(config, type) and issubclass(config, BaseModel) else None


def origin_of(entry: EntryPoint) -> str:
    """``the entry point 'echo = echo:Echo' of the distribution 'flowengine-echo 1.0'``."""
    dist = entry.dist
    source = f"the distribution '{dist.name} {dist.version}'" if dist else "an unknown distribution"
    return f"the entry point '{entry.name} = {entry.value}' of {source}"


def _load(group: str, entry: EntryPoint) -> Plugin:
    origin = origin_of(entry)
    try:
        obj = entry.load()
    except Exception as exc:
        dist = entry.dist.name if entry.dist else None
        fix = (
            f"reinstall it (pip install --force-reinstall {dist}), or uninstall it "
            f"(pip uninstall {dist})"
            if dist
            else "reinstall or uninstall the package that declares it"
        )
        raise PluginError(
            f"the {WHAT[group]} '{entry.name}' could not be loaded from {origin}: "
            f"{type(exc).__name__}: {exc}",
            fix,
        ) from exc
    return Plugin(group, entry.name, obj, config_of(obj), origin)
