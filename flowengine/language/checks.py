"""Checks that relate parts of a workflow to each other, all run before the first paid call.

References (models, providers, selectors, needs), names and cycles here; the templates of each
node, router and the output mapping through :mod:`.template_checks`, each with the names it
may read: inputs, ancestor nodes, ``models`` and, in a fanout, ``model``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from jinja2.sandbox import ImmutableSandboxedEnvironment

from flowengine.errors import Problem, did_you_mean
from flowengine.language.graph import Graph, describe_cycle
from flowengine.language.source import Source, YamlPath
from flowengine.language.template_checks import Names, TemplateChecks
from flowengine.language.templates import is_template
from flowengine.spec import FanoutNode, LlmNode, LlmSelector, SelectNode, WorkflowSpec

RESERVED = frozenset({"models", "model", "inputs", "metadata", "loop", "self", "true", "false"})


class Checker(TemplateChecks):
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
        self.graph = Graph.of(spec)
        self.node_ids = frozenset(spec.nodes)
        self.problems: list[Problem] = []
        # Names (by section) that are in the file but failed structural checks. When set, this
        # is a second pass over what could be read: references to these names are not errors,
        # and prompt files wait until the structure is fixed.
        self.partial = unreadable is not None
        self.unreadable = {section: set(names) for section, names in (unreadable or {}).items()}

    def readable(self, section: str, name: str) -> bool:
        names = self.unreadable.get(section, set())
        return name not in names and "*" not in names

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
        for cycle in self.graph.cycles():
            self.add(
                ("nodes", cycle[0], "needs"),
                f"cycle in needs: {describe_cycle(cycle)}",
                "remove one of these needs so the nodes can run in order",
                key=True,
            )

    # -- templates ---------------------------------------------------------------------------

    def names_for(self, node_id: str) -> Names:
        node = self.spec.nodes[node_id]
        allowed = set(self.spec.inputs) | {"inputs", "models"}
        if isinstance(node, FanoutNode):
            allowed.add("model")
        allowed |= self.unreadable.get("nodes", set()) | self.unreadable.get("inputs", set())
        unknown_ok = not self.readable("inputs", "*")
        needs = tuple(n for n in node.needs if n in self.node_ids)
        upstream = self.graph.ancestors(node_id)
        return Names(frozenset(allowed), self.node_ids, node_id, needs, unknown_ok, upstream)

    def check_node_templates(self, node_id: str) -> None:
        node = self.spec.nodes[node_id]
        names = self.names_for(node_id)
        base: YamlPath = ("nodes", node_id)
        if isinstance(node, LlmNode | FanoutNode):
            for path, text in _strings(node.vars, (*base, "vars")):
                if is_template(text):
                    self.check_inline(path, text, names)
            for name in node.vars:
                if names.allows(name) or name in names.nodes:
                    self.add(
                        (*base, "vars", name),
                        f"var '{name}' hides a name of the same name",
                        "rename the var",
                        key=True,
                    )
            names = names.with_names(node.vars)
            if node.template is not None:
                self.check_inline((*base, "template"), node.template, names)
            if node.prompt is not None:
                self.check_prompt_file((*base, "prompt"), node.prompt, names)
            if node.system is not None:
                self.check_inline((*base, "system"), node.system, names)
        model_names = names.with_names((), drop={"model"})
        if isinstance(node, LlmNode) and is_template(node.model):
            self.check_inline((*base, "model"), node.model, model_names)
        if isinstance(node, FanoutNode):
            for i, alias in enumerate(node.models.exclude):
                if is_template(alias):
                    self.check_inline((*base, "models", "exclude", i), alias, model_names)

    def check_routers(self) -> None:
        """An `llm` selector names a known model, and its template reads only what it gets."""
        allowed = set(self.spec.inputs) | {"inputs", "models", "candidates"}
        names = Names(frozenset(allowed), frozenset(), None)  # a router sees no node outputs
        for name, selector in self.spec.selectors.items():
            if not isinstance(selector, LlmSelector):
                continue
            base: YamlPath = ("selectors", name)
            self.check_ref((*base, "model"), selector.model, self.spec.models, "model")
            if selector.template is not None:
                self.check_inline((*base, "template"), selector.template, names)
            if selector.prompt is not None:
                self.check_prompt_file((*base, "prompt"), selector.prompt, names)

    def check_output(self) -> None:
        if self.spec.output is None:
            return
        allowed = set(self.spec.inputs) | set(self.spec.nodes) | {"inputs", "models", "metadata"}
        allowed |= self.unreadable.get("nodes", set()) | self.unreadable.get("inputs", set())
        unknown_ok = not self.readable("inputs", "*")
        names = Names(frozenset(allowed), frozenset(self.spec.nodes), None, (), unknown_ok)
        for path, text in _strings(self.spec.output, ("output",)):
            if is_template(text):
                self.check_inline(path, text, names)


def _strings(value: object, path: YamlPath) -> Iterator[tuple[YamlPath, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, (*path, i))


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
