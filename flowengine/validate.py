"""Checks that relate parts of a workflow to each other, all run before the first paid call.

References (models, providers, selectors, needs), cycles, and every template: its syntax, that
its file exists inside prompts/, and that each name it reads is an input, an ancestor node,
``models`` or, in a fanout, ``model``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from jinja2 import TemplateNotFound
from jinja2.sandbox import ImmutableSandboxedEnvironment
from ruamel.yaml.scalarstring import FoldedScalarString, LiteralScalarString

from flowengine import graph as dag
from flowengine.errors import Location, Problem, did_you_mean
from flowengine.loader import Source, YamlPath
from flowengine.spec import FanoutNode, LlmNode, LlmSelector, SelectNode, WorkflowSpec
from flowengine.templates import (
    PromptPathError,
    analyse,
    included_templates,
    is_template,
    prompt_file,
)

# Where a problem is, from the template's 1-based line and the word to point at (if any).
Where = Callable[[int, str | None], Location]
RESERVED = frozenset({"models", "model", "inputs", "metadata", "loop", "self", "true", "false"})


@dataclass(frozen=True)
class Scope:
    """The names a template may read, and what to say about the ones it may not."""

    allowed: frozenset[str]
    nodes: frozenset[str]
    owner: str | None  # the node the template belongs to; None for the output mapping
    needs: tuple[str, ...] = ()  # the owner's needs, to write the fix
    unknown_ok: bool = False  # part of the file could not be read: unknown names may be there

    def problem(self, name: str) -> tuple[str, str | None] | None:
        if name in self.allowed:
            return None
        if name == self.owner:
            return (
                f"template uses '{name}', the output of its own node",
                "read an upstream node instead",
            )
        if name in self.nodes:
            needs = ", ".join([*self.needs, name])
            return (
                f"template uses node '{name}', which is not among the needs of node '{self.owner}'",
                f"add '{name}' to the needs of '{self.owner}': `needs: [{needs}]`",
            )
        if name == "model":
            return (
                "template uses 'model', which exists only in fanout nodes",
                "use the node's `model:` value instead",
            )
        if self.unknown_ok:
            return None
        fix = did_you_mean(name, self.allowed) or (
            f"names known here: {', '.join(sorted(self.allowed))}; declare an input under `inputs:`"
        )
        return f"template uses undefined name '{name}'", fix

    def with_names(self, names: Iterable[str], *, drop: Iterable[str] = ()) -> Scope:
        allowed = (self.allowed | set(names)) - set(drop)
        return Scope(allowed, self.nodes, self.owner, self.needs, self.unknown_ok)


class Checker:
    """Collects every problem of one workflow."""

    def __init__(
        self,
        spec: WorkflowSpec,
        source: Source,
        env: ImmutableSandboxedEnvironment,
        prompts_dir: Path | None,
        unreadable: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self.spec = spec
        self.source = source
        self.env = env
        self.prompts_dir = prompts_dir
        self.graph = dag.build(spec)
        self.problems: list[Problem] = []
        # Names (by section) that are in the file but failed structural checks. When set, this
        # is a second pass over what could be read: references to these names are not errors,
        # and prompt files wait until the structure is fixed.
        self.partial = unreadable is not None
        self.unreadable = {section: set(names) for section, names in (unreadable or {}).items()}

    def readable(self, section: str, name: str) -> bool:
        names = self.unreadable.get(section, set())
        return name not in names and "*" not in names

    def add(
        self, path: YamlPath, message: str, fix: str | None = None, *, key: bool = False
    ) -> None:
        self.problems.append(Problem(self.source.locate(path, key=key), message, fix))

    def run(self) -> list[Problem]:
        self.check_names()
        self.check_references()
        self.check_needs()
        if not self.problems_of("cycle"):
            for node_id in self.spec.nodes:
                self.check_node_templates(node_id)
            self.check_output()
        self.check_routers()
        return self.problems

    def problems_of(self, word: str) -> list[Problem]:
        return [p for p in self.problems if word in p.message]

    # -- names and references -------------------------------------------------------------

    def check_names(self) -> None:
        for node_id in self.spec.nodes:
            if node_id in RESERVED:
                self.add(
                    ("nodes", node_id),
                    f"node id '{node_id}' is reserved",
                    "rename the node",
                    key=True,
                )
            elif node_id in self.spec.inputs:
                self.add(
                    ("nodes", node_id),
                    f"node id '{node_id}' is also the name of an input",
                    "rename the node or the input: templates read both by name",
                    key=True,
                )
        for name in self.spec.inputs:
            if name in RESERVED:
                self.add(
                    ("inputs", name),
                    f"input name '{name}' is reserved",
                    "rename the input",
                    key=True,
                )

    def check_references(self) -> None:
        spec = self.spec
        for alias, model in spec.models.items():
            if model.provider is not None:
                self.check_ref(
                    ("models", alias, "provider"), model.provider, spec.providers, "provider"
                )
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
                    f"min_success is {node.min_success}, but the fanout calls at most "
                    f"{count} models",
                    f"lower min_success to {count} or add models",
                )

    def check_models(self, path: YamlPath, aliases: Iterable[str]) -> None:
        for i, alias in enumerate(aliases):
            if not is_template(alias):
                self.check_ref((*path, i), alias, self.spec.models, "model")

    def check_ref(self, path: YamlPath, name: str, known: Iterable[str], what: str) -> None:
        names = list(known)
        section = {"model": "models", "provider": "providers", "selector": "selectors"}[what]
        if name in names or not self.readable(section, name):
            return
        fix = did_you_mean(name, names)
        if fix is None:
            fix = f"declare it under `{section}:`" + (
                f" (known: {', '.join(names)})" if names else ""
            )
        self.add(path, f"unknown {what} '{name}'", fix)

    def check_needs(self) -> None:
        for node_id, node in self.spec.nodes.items():
            for i, need in enumerate(node.needs):
                path: YamlPath = ("nodes", node_id, "needs", i)
                if need == node_id:
                    self.add(path, f"node '{node_id}' needs itself", "remove it from its own needs")
                elif need not in self.spec.nodes and self.readable("nodes", need):
                    fix = (
                        did_you_mean(need, self.spec.nodes)
                        or f"known nodes: {', '.join(self.spec.nodes)}"
                    )
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
        allowed |= self.unreadable.get("nodes", set()) | self.unreadable.get("inputs", set())
        unknown_ok = not self.readable("inputs", "*")
        nodes = frozenset(self.spec.nodes)
        needs = tuple(n for n in node.needs if n in nodes)
        return Scope(frozenset(allowed), nodes, node_id, needs, unknown_ok)

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
                    self.add(
                        (*base, "vars", name),
                        f"var '{name}' hides a name of the same name",
                        "rename the var",
                        key=True,
                    )
            scope = scope.with_names(node.vars)
            if node.template is not None:
                self.check_inline((*base, "template"), node.template, scope)
            if node.prompt is not None:
                self.check_prompt_file((*base, "prompt"), node.prompt, scope)
            if node.system is not None:
                self.check_inline((*base, "system"), node.system, scope)
        model_scope = scope.with_names((), drop={"model"})
        if isinstance(node, LlmNode) and is_template(node.model):
            self.check_inline((*base, "model"), node.model, model_scope)
        if isinstance(node, FanoutNode):
            for i, alias in enumerate(node.models.exclude):
                if is_template(alias):
                    self.check_inline((*base, "models", "exclude", i), alias, model_scope)

    def check_routers(self) -> None:
        """An `llm` selector names a known model, and its template reads only what it gets."""
        allowed = set(self.spec.inputs) | {"inputs", "models", "candidates"}
        scope = Scope(frozenset(allowed), frozenset(), None)  # a router sees no node outputs
        for name, selector in self.spec.selectors.items():
            if not isinstance(selector, LlmSelector):
                continue
            base: YamlPath = ("selectors", name)
            self.check_ref((*base, "model"), selector.model, self.spec.models, "model")
            if selector.template is not None:
                self.check_inline((*base, "template"), selector.template, scope)
            if selector.prompt is not None:
                self.check_prompt_file((*base, "prompt"), selector.prompt, scope)

    def check_output(self) -> None:
        if self.spec.output is None:
            return
        allowed = set(self.spec.inputs) | set(self.spec.nodes) | {"inputs", "models", "metadata"}
        allowed |= self.unreadable.get("nodes", set()) | self.unreadable.get("inputs", set())
        unknown_ok = not self.readable("inputs", "*")
        scope = Scope(frozenset(allowed), frozenset(self.spec.nodes), None, (), unknown_ok)
        for path, text in _strings(self.spec.output, ("output",)):
            if is_template(text):
                self.check_inline(path, text, scope)

    def check_inline(self, path: YamlPath, text: str, scope: Scope) -> None:
        base = self.source.locate(path)
        raw = _value_at(self.source.root, path)
        block = isinstance(raw, LiteralScalarString | FoldedScalarString)

        def where(line: int, word: str | None) -> Location:
            if base.line is None:
                return base
            if block:
                # A block scalar's text starts on the line after its `|` or `>` indicator.
                file_line = base.line + line
                text_line = self.source.at(file_line).source_line or ""
                start = len(text_line) - len(text_line.lstrip()) + 1
            elif line == 1:
                file_line, start = base.line, base.column or 1
            else:
                # A quoted string folded over several lines: the template's lines do not map
                # to the file's, so point at the start of the string.
                return base
            column = _column_of(self.source.at(file_line).source_line, word, start)
            return self.source.at(file_line, column or start)

        self.check_template(text, scope, where)

    def check_prompt_file(self, path: YamlPath, name: str, scope: Scope) -> None:
        if self.partial:
            return
        if self.prompts_dir is None:
            self.add(
                path,
                f"prompt file '{name}': there is no prompts/ folder beside the workflow "
                "or above it",
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
            existing = sorted(
                str(p.relative_to(self.prompts_dir)) for p in self.prompts_dir.rglob("*.j2")
            )
            fix = (
                did_you_mean(name, existing)
                or f"files in prompts/: {', '.join(existing) or 'none'}"
            )
            self.add(path, f"prompt file '{name}' not found in {_display(self.prompts_dir)}/", fix)
            return
        except (OSError, UnicodeDecodeError) as exc:
            self.add(path, f"cannot read prompt file '{name}': {exc}")
            return
        display = _display(file)
        file_source = Source(display, text)

        def where(line: int, word: str | None) -> Location:
            return file_source.at(line, _column_of(file_source.at(line).source_line, word, 1))

        self.check_template(text, scope, where)
        for child in included_templates(self.env, text):
            self.check_prompt(path, child, scope, seen)

    def check_template(self, text: str, scope: Scope, where: Where) -> None:
        try:
            uses, issues = analyse(self.env, text)
        except TemplateNotFound as exc:  # pragma: no cover - analyse does not load files
            self.problems.append(Problem(where(1, None), f"template not found: {exc}"))
            return
        for issue in issues:
            self.problems.append(Problem(where(issue.line, issue.word), issue.message, issue.fix))
        for use in uses:
            found = scope.problem(use.name)
            if found:
                message, fix = found
                self.problems.append(Problem(where(use.line, use.name), message, fix))


_TAG = re.compile(r"\{\{.*?(?:\}\}|$)|\{%.*?(?:%\}|$)")


def _column_of(line: str | None, word: str | None, start: int) -> int | None:
    """The 1-based column of ``word`` inside a {{ }} or {% %} tag of ``line``, from ``start``."""
    if not line or not word:
        return None
    name = re.compile(rf"(?<!\w){re.escape(word)}(?!\w)")
    for tag in _TAG.finditer(line, start - 1):
        found = name.search(line, tag.start(), tag.end())
        if found:
            return found.start() + 1
    return None


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
    unreadable: Mapping[str, Iterable[str]] | None = None,
) -> list[Problem]:
    """Every cross-reference problem of a structurally valid workflow.

    ``unreadable`` names, by section (``"nodes"``, ``"models"``...), the entries that failed
    structural validation and were left out of ``spec``; ``"*"`` stands for a whole section.
    """
    return Checker(spec, source, env, prompts_dir, unreadable).run()
