"""Checks that relate parts of a workflow to each other, all run before the first paid call.

References (models, providers, selectors, needs), names and cycles here; the templates of each
node, router and the output mapping through :mod:`.template_checks`, each with the names it
may read: inputs, ancestor nodes, ``models`` and, in a fanout, ``model``; each node's ``when:``
through :mod:`.conditions`; the nodes of loops (ids, needs, ``until:``) through
:mod:`.loop_checks`; ``output:`` and ``answer:`` through :mod:`.output_checks`.
"""

from __future__ import annotations

import functools
from collections import ChainMap
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from jinja2.sandbox import ImmutableSandboxedEnvironment

from flowengine.errors import Problem, did_you_mean
from flowengine.language.ancestry import ancestry
from flowengine.language.conditions import check_condition, condition_names
from flowengine.language.fields import (
    MODEL,
    NODE_OUTPUTS,
    ListOf,
    Shape,
    Table,
    data_shape,
    loop_output,
    node_output,
)
from flowengine.language.graph import Graph, describe_cycle
from flowengine.language.inputs import may_be_missing
from flowengine.language.judge_checks import JudgeChecks
from flowengine.language.judging import judge_output
from flowengine.language.loop_checks import LoopChecks
from flowengine.language.output_checks import OutputChecks, strings
from flowengine.language.placement import loops, placed_nodes
from flowengine.language.plugin_checks import PluginChecks
from flowengine.language.source import Source, YamlPath
from flowengine.language.template_checks import Names
from flowengine.language.templates import is_template
from flowengine.spec import (
    FanoutNode,
    JudgeNode,
    LlmNode,
    LlmSelector,
    NodeSpec,
    PluginNode,
    Prompted,
    PythonNode,
    SelectNode,
    WorkflowSpec,
)

RESERVED = frozenset({"models", "model", "inputs", "metadata", "loop", "self", "true", "false"})


class Checker(LoopChecks, JudgeChecks, PluginChecks, OutputChecks):
    """Collects every problem of one workflow."""

    def __init__(
        self,
        spec: WorkflowSpec,
        source: Source,
        env: ImmutableSandboxedEnvironment,
        prompts_dir: Path | None,
        unreadable: Mapping[str, Iterable[str]] | None = None,
        schemas: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        self.spec = spec
        self.schemas = schemas or {}
        self.source = source
        self.env = env
        self.prompts_dir = prompts_dir
        self.graph = Graph.of(spec)
        self.cycles = self.graph.cycles()
        self.upstream = ancestry(self.graph, self.cycles)
        self.node_ids = frozenset(spec.nodes)
        #: Every node by id, those inside loops too, with where each is written.
        self.placed = placed_nodes(spec)
        self.problems: list[Problem] = []
        # Names (by section) that are in the file but failed structural checks. When set, this
        # is a pass over what could be read: references to these names are not errors.
        self.partial = unreadable is not None
        self.unreadable = {section: set(names) for section, names in (unreadable or {}).items()}
        # Inputs a run may not be given, with no default: undefined in templates then.
        self.optional = frozenset(n for n, i in spec.inputs.items() if may_be_missing(i))
        self.shapes = self.known_shapes()

    def readable(self, section: str, name: str) -> bool:
        names = self.unreadable.get(section, set())
        return name not in names and "*" not in names

    def run(self) -> list[Problem]:
        self.check_names()
        self.check_references()
        self.check_needs()
        self.check_plugins()
        self.check_judges()
        # Templates are checked even when the needs form a cycle: ancestors are still defined
        # (see .ancestry), so one pass reports the cycle and every template problem too.
        for node_id in self.placed:
            self.check_node_templates(node_id)
            self.check_when(node_id)
        self.check_loops()
        self.check_output()
        self.check_routers()
        self.check_answer()
        return self.problems

    def known_shapes(self) -> dict[str, Shape]:
        """What templates read whose fields are known: node outputs, ``models``, ``inputs``."""
        spec = self.spec
        # A python or plugin node's output is whatever it returns: its fields are not known.
        shapes: dict[str, Shape] = {
            n: NODE_OUTPUTS[placed.node.type]
            for n, placed in self.placed.items()
            if placed.node.type in NODE_OUTPUTS
        }
        for node_id, schema in self.schemas.items():
            # What the node's schema describes is what templates read of its `data`.
            kind = self.placed[node_id].node.type
            shapes[node_id] = node_output(kind, data_shape(schema, schema))
        for node_id, placed in self.placed.items():
            if isinstance(placed.node, JudgeNode):
                shapes[node_id] = judge_output([c.name for c in placed.node.criteria])
        for loop_id, loop in loops(spec).items():
            if self.group_read(loop_id):  # else its rounds may hold nodes that are not known
                shapes[loop_id] = loop_output(loop_id, {n: shapes.get(n) for n in loop.nodes})
        # Where part of a section could not be read, any name may be in it.
        models = None if self.unreadable.get("models") else tuple(spec.models)
        inputs = None if self.unreadable.get("inputs") else tuple(spec.inputs)
        shapes["models"] = Table("models", "model", models, MODEL)
        shapes["inputs"] = Table("inputs", "input", inputs, optional=self.optional)
        return shapes

    # -- names and references -------------------------------------------------------------

    def check_names(self) -> None:
        for node_id, placed in self.placed.items():
            if node_id in RESERVED:
                self.add(
                    placed.path,
                    f"node id '{node_id}' is reserved",
                    "rename the node",
                    code="reserved-name",
                    key=True,
                )
            elif node_id in self.spec.inputs:
                self.add(
                    placed.path,
                    f"node id '{node_id}' is also the name of an input",
                    "rename the node or the input: templates read both by name",
                    code="name-clash",
                    key=True,
                )
        for name in self.spec.inputs:
            if name in RESERVED:
                self.add(
                    ("inputs", name),
                    f"input name '{name}' is reserved",
                    "rename the input",
                    code="reserved-name",
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
        for placed in self.placed.values():
            node, base = placed.node, placed.path
            if isinstance(node, SelectNode):
                if node.selector is not None:
                    self.check_ref((*base, "selector"), node.selector, spec.selectors, "selector")
                self.check_models((*base, "candidates"), node.candidates or [])
            elif isinstance(node, LlmNode):
                if not is_template(node.model):
                    self.check_ref((*base, "model"), node.model, spec.models, "model")
                self.check_models((*base, "fallbacks"), node.fallbacks)
            elif isinstance(node, FanoutNode):
                self.check_fanout(placed.path, node)

    def check_fanout(self, where: YamlPath, node: FanoutNode) -> None:
        base: YamlPath = (*where, "models")
        query = node.models
        raw = self.source.root
        for part in base:
            raw = raw.get(part) if isinstance(raw, dict) else None
        include_path = base if isinstance(raw, list) else (*base, "include")
        self.check_models(include_path, query.include or [])
        self.check_models((*base, "exclude"), query.exclude)
        if query.include is not None and not any(is_template(m) for m in query.include):
            count = len(set(query.include) - set(query.exclude))
            if query.top is not None:
                count = min(count, query.top)
            if node.min_success > count:
                self.add(
                    (*where, "min_success"),
                    f"min_success is {node.min_success}, but the fanout calls at most "
                    f"{count} models",
                    f"lower min_success to {count} or add models",
                    code="min-success",
                )

    def check_models(self, path: YamlPath, aliases: Iterable[str]) -> None:
        for i, alias in enumerate(aliases):
            if not is_template(alias):
                self.check_ref((*path, i), alias, self.spec.models, "model")

    def check_ref(self, path: YamlPath, name: str, known: Collection[str], what: str) -> None:
        section = {"model": "models", "provider": "providers", "selector": "selectors"}[what]
        if name in known or not self.readable(section, name):  # a dict: no pass over it
            return
        names = list(known)
        fix = did_you_mean(name, names)
        if fix is None:
            more = f", and {len(names) - 20:,} more" if len(names) > 20 else ""
            fix = f"declare it under `{section}:`" + (
                f" (known: {', '.join(names[:20])}{more})" if names else ""
            )
        self.add(path, f"unknown {what} '{name}'", fix, code=f"unknown-{what}")

    def check_needs(self) -> None:
        for node_id, node in self.spec.nodes.items():
            for i, need in enumerate(node.needs):
                path: YamlPath = ("nodes", node_id, "needs", i)
                if need == node_id:
                    fix = "remove it from its own needs"
                    self.add(path, f"node '{node_id}' needs itself", fix, code="self-need")
                elif need in self.placed and self.placed[need].loop is not None:
                    loop = self.placed[need].loop
                    message = f"node '{node_id}' needs '{need}', a node inside loop '{loop}'"
                    fix = f"need the loop, '{loop}', and read `{loop}.last.{need}`"
                    self.add(path, message, fix, code="inside-loop")
                elif need not in self.spec.nodes and self.readable("nodes", need):
                    fix = (
                        did_you_mean(need, self.spec.nodes)
                        or f"known nodes: {', '.join(self.spec.nodes)}"
                    )
                    message = f"node '{node_id}' needs unknown node '{need}'"
                    self.add(path, message, fix, code="unknown-need")
        for cycle in self.cycles:
            self.add(
                ("nodes", cycle[0], "needs"),
                f"cycle in needs: {describe_cycle(cycle)}",
                "remove one of these needs so the nodes can run in order",
                code="cycle",
                key=True,
            )

    # -- templates ---------------------------------------------------------------------------

    def names_for(self, node_id: str) -> Names:
        if self.placed[node_id].loop is not None:
            return self.group_names(node_id)
        node = self.spec.nodes[node_id]
        allowed = set(self.spec.inputs) | {"inputs", "models"}
        if isinstance(node, FanoutNode):
            allowed.add("model")
        allowed |= self.unreadable.get("nodes", set()) | self.unreadable.get("inputs", set())
        unknown_ok = not self.readable("inputs", "*")
        needs = tuple(n for n in node.needs if n in self.node_ids)
        upstream = self.upstream(node_id) if self.needs_read(node_id) else self.node_ids
        shapes = (
            ChainMap[str, Shape]({"model": MODEL}, self.shapes)
            if node.type == "fanout"
            else self.shapes
        )
        explain = functools.partial(self.explain_outside, node_id)
        return Names(
            frozenset(allowed),
            self.node_ids,
            node_id,
            needs,
            unknown_ok,
            upstream,
            shapes=shapes,
            explain=explain,
            optional=self.optional,
        )

    def needs_read(self, node_id: str) -> bool:
        """Whether the node's needs could be read: if not, it may read any other node."""
        if not self.partial:
            return True
        written = self.source.root
        for part in (*self.placed[node_id].path, "needs"):
            written = written.get(part) if isinstance(written, dict) else None
        # Needs that failed the structural checks were left out of the spec.
        return not written or bool(self.placed[node_id].node.needs)

    def check_node_templates(self, node_id: str) -> None:
        node: NodeSpec = self.placed[node_id].node
        names = self.names_for(node_id)
        base = self.placed[node_id].path
        if isinstance(node, LlmNode | FanoutNode | JudgeNode):
            for path, text in strings(node.vars, (*base, "vars")):
                if is_template(text):
                    self.check_inline(path, text, names)
            for name in node.vars:
                if names.allows(name) or name in names.nodes:
                    self.add(
                        (*base, "vars", name),
                        f"var '{name}' hides a name of the same name",
                        "rename the var",
                        code="var-hides-name",
                        key=True,
                    )
            names = names.with_names(node.vars)
            if isinstance(node, JudgeNode):
                self.check_judge_templates(node_id, node, names)
            else:
                self.check_prompts(base, node, names)
        elif isinstance(node, PythonNode):
            for path, text in strings(node.args or {}, (*base, "args")):
                if is_template(text):
                    self.check_inline(path, text, names)
        elif isinstance(node, PluginNode):
            # A plugin's own values may be templates, which it evaluates (NodeContext.evaluate).
            for path, text in strings(node.options, base):
                if is_template(text):
                    self.check_inline(path, text, names)
        model_names = names.with_names((), drop={"model"})
        model = node.model if isinstance(node, LlmNode | JudgeNode) else None
        if model is not None and is_template(model):
            self.check_inline((*base, "model"), model, model_names)
        query = node.models if isinstance(node, FanoutNode | JudgeNode) else None
        if query is not None:
            for i, alias in enumerate(query.exclude):
                if is_template(alias):
                    self.check_inline((*base, "models", "exclude", i), alias, model_names)

    def check_prompts(self, base: YamlPath, node: Prompted | JudgeNode, names: Names) -> None:
        """Every template of the node's prompt, in whichever form it is written, at its place."""
        inline = [((*base, "template"), node.template), ((*base, "system"), node.system)]
        files = [((*base, "prompt"), node.prompt)]
        for i, message in enumerate(node.messages or ()):
            inline.append(((*base, "messages", i, "content"), message.content))
            files.append(((*base, "messages", i, "prompt"), message.prompt))
        for path, text in inline:
            if text is not None:
                self.check_inline(path, text, names)
        for path, name in files:
            if name is not None:
                self.check_prompt_file(path, name, names)

    def check_when(self, node_id: str) -> None:
        when = self.placed[node_id].node.when
        if when is not None:
            names = condition_names(self.names_for(node_id))
            check_condition(self, (*self.placed[node_id].path, "when"), when, names)

    def check_routers(self) -> None:
        """An `llm` selector names a known model, and its template reads only what it gets."""
        allowed = set(self.spec.inputs) | {"inputs", "models", "candidates"}
        shapes = {
            "models": self.shapes["models"],
            "inputs": self.shapes["inputs"],
            "candidates": ListOf("a list of models", MODEL),
        }
        # A router sees no node outputs.
        names = Names(frozenset(allowed), frozenset(), None, shapes=shapes, optional=self.optional)
        for name, selector in self.spec.selectors.items():
            if not isinstance(selector, LlmSelector):
                continue
            base: YamlPath = ("selectors", name)
            self.check_ref((*base, "model"), selector.model, self.spec.models, "model")
            if selector.template is not None:
                self.check_inline((*base, "template"), selector.template, names)
            if selector.prompt is not None:
                self.check_prompt_file((*base, "prompt"), selector.prompt, names)


def check(
    spec: WorkflowSpec,
    source: Source,
    env: ImmutableSandboxedEnvironment,
    prompts_dir: Path | None,
    unreadable: Mapping[str, Iterable[str]] | None = None,
    schemas: Mapping[str, dict[str, Any]] | None = None,
) -> list[Problem]:
    """Every cross-reference problem of a structurally valid workflow.

    ``unreadable`` names, by section (``"nodes"``, ``"models"``...), the entries that failed
    structural validation and were left out of ``spec``; ``"*"`` stands for a whole section.
    ``schemas`` are the nodes' response schemas that could be read (see
    :mod:`.response_schemas`): templates reading ``.data`` of those nodes are checked by them.
    """
    return Checker(spec, source, env, prompts_dir, unreadable, schemas).run()
