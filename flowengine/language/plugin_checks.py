"""Checks of what plugins and python nodes bring to a workflow, all before the first call.

A provider type or node kind that is not built in must be known: registered from code, or
installed as an entry point (read only then). Its own keys must fit the plugin's config model
when it gives one. A python node's ``function:`` must name a module that Python can find; the
function itself is looked up when a run starts (:mod:`.functions`), since finding it means
running the module's code.
"""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from flowengine import plugins
from flowengine.errors import PluginError, Problem, did_you_mean
from flowengine.language.functions import module_problem
from flowengine.language.placement import Placed
from flowengine.language.schema_errors import problem_from_error
from flowengine.language.source import Source, YamlPath
from flowengine.spec import PluginNode, PluginProvider, PythonNode, WorkflowSpec


class PluginChecks:
    """The plugin half of the workflow checker (mixed into ``checks.Checker``)."""

    spec: WorkflowSpec
    source: Source
    problems: list[Problem]
    placed: dict[str, Placed]

    def problem(self, path: YamlPath, message: str, fix: str | None, code: str) -> None:
        self.problems.append(Problem(self.source.locate(path), message, fix, code))

    def check_plugins(self) -> None:
        for name, provider in self.spec.providers.items():
            if isinstance(provider, PluginProvider):
                self.check_plugin(plugins.PROVIDERS, ("providers", name), provider.type)
        for placed in self.placed.values():
            node = placed.node
            if isinstance(node, PluginNode):
                self.check_plugin(plugins.NODES, placed.path, node.type)
            elif isinstance(node, PythonNode):
                found = module_problem(node.function)
                if found is not None:
                    message, fix = found
                    path = (*placed.path, "function")
                    where = ".".join(map(str, path))
                    self.problem(path, f"{where}: {message}", fix, "no-module")

    def check_plugin(self, group: str, path: YamlPath, type_name: str) -> None:
        """The type is known and loads, and the entry's own keys fit its config model."""
        try:
            plugin = plugins.find(group, type_name)
        except PluginError as exc:
            self.problem((*path, "type"), exc.message, exc.fix, "plugin-failed")
            return
        if plugin is None:
            self.unknown_type(group, path, type_name)
        elif plugin.config is not None:
            self.check_config(path, plugin.config)

    def unknown_type(self, group: str, path: YamlPath, type_name: str) -> None:
        kind = "node" if group == plugins.NODES else "provider"
        known = plugins.names(group)
        near = did_you_mean(type_name, known)
        fix = (
            f"{near} ({kind} types: {', '.join(known)})"
            if near
            else f"use one of: {', '.join(known)}; or install the plugin that provides it"
        )
        message = f"{'.'.join(map(str, path))}: unknown {kind} type '{type_name}'"
        self.problem((*path, "type"), message, fix, "unknown-type")

    def check_config(self, path: YamlPath, config: type[BaseModel]) -> None:
        if path[0] == "providers":
            entry: object = self.spec.providers[str(path[1])]
        else:
            entry = self.placed[str(path[-1])].node
        assert isinstance(entry, PluginProvider | PluginNode)
        try:
            config.model_validate(entry.options)
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                self.problems.append(problem_from_error(self.source, error, path, config))
