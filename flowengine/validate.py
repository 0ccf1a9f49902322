"""Checks that relate parts of a workflow to each other, all run before the first paid call.

References (models, providers, selectors, needs), cycles, and every template: its syntax, that
its file exists inside prompts/, and that each name it reads is an input, an ancestor node,
``models`` or, in a fanout, ``model``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from jinja2 import TemplateNotFound
from jinja2.sandbox import ImmutableSandboxedEnvironment
from ruamel.yaml.scalarstring import FoldedScalarString, LiteralScalarString

from flowengine import graph as dag
from flowengine.errors import Location, Problem, did_you_mean
from flowengine.loader import Source, YamlPath
from flowengine.spec import FanoutNode, LlmNode, SelectNode, WorkflowSpec
from flowengine.templates import (
    PromptPathError,
    analyse,
    included_templates,
    is_template,
    prompt_file,
)

Where = Callable[[int], Location]
RESERVED = frozenset({"models", "model", "inputs", "metadata", "loop", "self", "true", "false"})


@dataclass(frozen=True)
class Scope:
    """The names a template may read, and what to say about the ones it may not."""

    allowed: frozenset[str]
    nodes: frozenset[str]
    owner: str | None  # the node the template belongs to; None for the output mapping

    def problem(self, name: str) -> tuple[str, str | None] | None:
        if name in self.allowed:
            return None
        if name == self.owner:
            return f"node '{name}' cannot read its own output", "read an upstream node instead"
        if name in self.nodes:
            return (
                f"uses '{name}', which is not among the needs of node '{self.owner}'",
                f"add '{name}' to needs: `needs: [{name}]`",
            )
        if name == "model":
            return "'model' exists only in fanout nodes", "use the node's `model:` value instead"
        fix = did_you_mean(name, self.allowed) or f"names here: {', '.join(sorted(self.allowed))}"
        return f"undefined name '{name}'", fix


class Checker:
    """Collects every problem of one workflow."""

    def __init__(
        self,
        spec: WorkflowSpec,
        source: Source,
        env: ImmutableSandboxedEnvironment,
        prompts_dir: Path | None,
    ) -> None:
        self.spec = spec
        self.source = source
        self.env = env
        self.prompts_dir = prompts_dir
        self.graph = dag.build(spec)
        self.problems: list[Problem] = []

    def add(self, path: YamlPath, message: str, fix: str | None = None, *, key: bool = False) -> None:
        self.problems.append(Problem(self.source.locate(path, key=key), message, fix))

    def run(self) -> list[Problem]:
        self.check_names()
        self.check_references()
        self.check_needs()
        if not self.problems_of("cycle"):
            for node_id in self.spec.nodes:
                self.check_node_templates(node_id)
            self.check_output()
        return self.problems

    def problems_of(self, word: str) -> list[Problem]:
        return [p for p in self.problems if word in p.message]

    # -- names and references -------------------------------------------------------------

    def check_names(self) -> None:
        for node_id in self.spec.nodes:
            if node_id in RESERVED:
                self.add(("nodes", node_id), f"node id '{node_id}' is reserved", "rename the node", key=True)
            elif node_id in self.spec.inputs:
                self.add(
                    ("nodes", node_id),
                    f"node id '{node_id}' is also the name of an input",
                    "rename the node or the input: templates read both by name",
                    key=True,
                )
        for name in self.spec.inputs:
            if name in RESERVED:
                self.add(("inputs", name), f"input name '{name}' is reserved", "rename the input", key=True)

    def check_references(self) -> None:
        spec = self.spec
        for alias, model in spec.models.items():
            if model.provider is not None:
                self.check_ref(("models", alias, "provider"), model.provider, spec.providers, "provider")
        self.check_ref(("defaults", "provider"), spec.defaults.provider, spec.providers, "provider")
        for node_id, node in spec.nodes.items():
            base: YamlPath = ("nodes", node_id)
            if isinstance(node, SelectNode):
                if node.selector is not None:
                    self.check_ref((*base, "selector"), node.selector, spec.selectors, "selector")
                self.check_models((*base, "candidates"), node.candidates or [])
            elif isinstance(node, LlmNode):
                if not is_template(node.model):
                    self.check_ref((*base, "model"), node.model, spec.models, "model")
                self.check_models((*base, "fallbacks"), node.fallbacks)
            elif isinstance(node, FanoutNode):
                self.check_fanout(node_id, node)

    def check_fanout(self, node_id: str, node: FanoutNode) -> None:
        base: YamlPath = ("nodes", node_id, "models")
        query = node.models
        raw = self.source.root["nodes"][node_id].get("models") if self.source.root else None
        include_path = base if isinstance(raw, list) else (*base, "include")
        self.check_models(include_path, query.include or [])
        self.check_models((*base, "exclude"), query.exclude)
        if query.include is not None and not any(is_template(m) for m in query.include):
            count = len(set(query.include) - set(query.exclude))
            if query.top is not None:
                count = min(count, query.top)
            if node.min_success > count:
                self.add(
                    ("nodes", node_id, "min_success"),
                    f"min_success is {node.min_success} but the fanout calls at most {count} models",
                    f"lower min_success to {count} or add models",
                )

    def check_models(self, path: YamlPath, aliases: Iterable[str]) -> None:
        for i, alias in enumerate(aliases):
            if not is_template(alias):
                self.check_ref((*path, i), alias, self.spec.models, "model")

    def check_ref(self, path: YamlPath, name: str, known: Iterable[str], what: str) -> None:
        names = list(known)
        if name in names:
            return
        section = {"model": "models", "provider": "providers", "selector": "selectors"}[what]
        fix = did_you_mean(name, names)
        if fix is None:
            fix = f"declare it under `{section}:`" + (f" (known: {', '.join(names)})" if names else "")
        self.add(path, f"unknown {what} '{name}'", fix)

    def check_needs(self) -> None:
        for node_id, node in self.spec.nodes.items():
            for i, need in enumerate(node.needs):
                path: YamlPath = ("nodes", node_id, "needs", i)
                if need == node_id:
                    self.add(path, f"node '{node_id}' needs itself", "remove it from its own needs")
                elif need not in self.spec.nodes:
                    fix = did_you_mean(need, self.spec.nodes) or f"nodes: {', '.join(self.spec.nodes)}"
                    self.add(path, f"node '{node_id}' needs unknown node '{need}'", fix)
        for cycle in dag.cycles(self.graph):
            if len(cycle) < 2:
                continue
            first = cycle[0]
            self.add(
                ("nodes", first, "needs"),
                f"cycle in needs: {dag.describe_cycle(cycle)}",
                "remove one of these needs so the nodes can run in order",
                key=True,
            )

    # -- templates ---------------------------------------------------------------------------

    def scope_for(self, node_id: str) -> Scope:
        node = self.spec.nodes[node_id]
        allowed = set(self.spec.inputs) | {"inputs", "models"} | dag.ancestors(self.graph, node_id)
        if isinstance(node, FanoutNode):
            allowed.add("model")
        return Scope(frozenset(allowed), frozenset(self.spec.nodes), node_id)

    def check_node_templates(self, node_id: str) -> None:
        node = self.spec.nodes[node_id]
        scope = self.scope_for(node_id)
        base: YamlPath = ("nodes", node_id)
        if isinstance(node, LlmNode | FanoutNode):
            for path, text in _strings(node.vars, (*base, "vars")):
                if is_template(text):
                    self.check_inline(path, text, scope)
            for name in node.vars:
                if name in scope.allowed or name in scope.nodes:
                    self.add((*base, "vars", name), f"var '{name}' hides a name of the same name",
                             "rename the var", key=True)
            scope = Scope(scope.allowed | set(node.vars), scope.nodes, node_id)
            if node.template is not None:
                self.check_inline((*base, "template"), node.template, scope)
            if node.prompt is not None:
                self.check_prompt_file((*base, "prompt"), node.prompt, scope)
            if node.system is not None:
                self.check_inline((*base, "system"), node.system, scope)
        model_scope = Scope(scope.allowed - {"model"}, scope.nodes, node_id)
        if isinstance(node, LlmNode) and is_template(node.model):
            self.check_inline((*base, "model"), node.model, model_scope)
        if isinstance(node, FanoutNode):
            for i, alias in enumerate(node.models.exclude):
                if is_template(alias):
                    self.check_inline((*base, "models", "exclude", i), alias, model_scope)

    def check_output(self) -> None:
        if self.spec.output is None:
            return
        allowed = set(self.spec.inputs) | set(self.spec.nodes) | {"inputs", "models", "metadata"}
        scope = Scope(frozenset(allowed), frozenset(self.spec.nodes), None)
        for path, text in _strings(self.spec.output, ("output",)):
            if is_template(text):
                self.check_inline(path, text, scope)

    def check_inline(self, path: YamlPath, text: str, scope: Scope) -> None:
        base = self.source.locate(path)
        raw = _value_at(self.source.root, path)
        block = isinstance(raw, LiteralScalarString | FoldedScalarString)

        def where(line: int) -> Location:
            if base.line is None:
                return base
            if not block:
                return base if line == 1 else self.source.at(base.line + line - 1, None)
            file_line = base.line + line
            text_line = self.source.at(file_line).source_line or ""
            return self.source.at(file_line, len(text_line) - len(text_line.lstrip()) + 1)

        self.check_template(text, scope, where)

    def check_prompt_file(self, path: YamlPath, name: str, scope: Scope) -> None:
        if self.prompts_dir is None:
            self.add(
                path,
                f"prompt file '{name}': there is no prompts/ folder beside the workflow or above it",
                "create prompts/ next to the workflow, or write the prompt inline with `template:`",
            )
            return
        self.check_prompt(path, name, scope, seen=set())

    def check_prompt(self, path: YamlPath, name: str, scope: Scope, seen: set[str]) -> None:
        assert self.prompts_dir is not None
        try:
            file = prompt_file(self.prompts_dir, name)
        except PromptPathError as exc:
            self.add(path, str(exc), "name a file inside prompts/, such as critique.j2")
            return
        if name in seen:
            return
        seen.add(name)
        try:
            text = file.read_text(encoding="utf-8")
        except (FileNotFoundError, IsADirectoryError):
            existing = sorted(str(p.relative_to(self.prompts_dir)) for p in self.prompts_dir.rglob("*.j2"))
            fix = did_you_mean(name, existing) or f"files in prompts/: {', '.join(existing) or 'none'}"
            self.add(path, f"prompt file '{name}' not found in {_display(self.prompts_dir)}/", fix)
            return
        except (OSError, UnicodeDecodeError) as exc:
            self.add(path, f"cannot read prompt file '{name}': {exc}")
            return
        display = _display(file)
        file_source = Source(display, text)
        self.check_template(text, scope, lambda line: file_source.at(line, 1))
        for child in included_templates(self.env, text):
            self.check_prompt(path, child, scope, seen)

    def check_template(self, text: str, scope: Scope, where: Where) -> None:
        try:
            uses, issues = analyse(self.env, text)
        except TemplateNotFound as exc:  # pragma: no cover - analyse does not load files
            self.problems.append(Problem(where(1), f"template not found: {exc}"))
            return
        for issue in issues:
            self.problems.append(Problem(where(issue.line), issue.message, issue.fix))
        for use in uses:
            found = scope.problem(use.name)
            if found:
                message, fix = found
                self.problems.append(Problem(where(use.line), f"template {message}", fix))


def _strings(value: object, path: YamlPath) -> Iterator[tuple[YamlPath, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, (*path, i))


def _value_at(root: object, path: YamlPath) -> object:
    node = root
    for part in path:
        try:
            node = node[part]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def check(
    spec: WorkflowSpec,
    source: Source,
    env: ImmutableSandboxedEnvironment,
    prompts_dir: Path | None,
) -> list[Problem]:
    """Every cross-reference problem of a structurally valid workflow."""
    return Checker(spec, source, env, prompts_dir).run()
