"""The checks of the workflow's `output:` mapping and its `answer:` (mixed into
``checks.Checker``): what the output's templates may read, and which node's reply may stream.
"""

from __future__ import annotations

import functools
from collections import ChainMap
from collections.abc import Callable, Iterator

from flowengine.errors import did_you_mean
from flowengine.language.fields import METADATA, Shape
from flowengine.language.loop_checks import Found
from flowengine.language.placement import Placed
from flowengine.language.source import YamlPath
from flowengine.language.template_checks import Names, TemplateChecks
from flowengine.language.templates import is_template
from flowengine.spec import LlmNode, WorkflowSpec


class OutputChecks(TemplateChecks):
    # What checks.Checker provides.
    spec: WorkflowSpec
    placed: dict[str, Placed]
    unreadable: dict[str, set[str]]
    shapes: dict[str, Shape]
    optional: frozenset[str]
    readable: Callable[[str, str], bool]
    explain_outside: Callable[[str | None, str], Found | None]

    def check_output(self) -> None:
        if self.spec.output is None:
            return
        allowed = set(self.spec.inputs) | set(self.spec.nodes) | {"inputs", "models", "metadata"}
        allowed |= self.unreadable.get("nodes", set()) | self.unreadable.get("inputs", set())
        unknown_ok = not self.readable("inputs", "*")
        shapes = ChainMap[str, Shape]({"metadata": METADATA}, self.shapes)
        explain = functools.partial(self.explain_outside, None)
        names = Names(
            frozenset(allowed),
            frozenset(self.spec.nodes),
            None,
            (),
            unknown_ok,
            shapes=shapes,
            explain=explain,
            optional=self.optional,
        )
        for path, text in strings(self.spec.output, ("output",)):
            if is_template(text):
                self.check_inline(path, text, names)

    def check_answer(self) -> None:
        """`answer:` names llm nodes whose replies can stream: not a fanout's several replies,
        not a structured answer, which is an answer only once it is checked whole."""
        written = self.source.root.get("answer") if self.source.root else None
        for i, node_id in enumerate(self.spec.answer or ()):
            path: YamlPath = ("answer", i) if isinstance(written, list) else ("answer",)
            placed = self.placed.get(node_id)
            node = placed.node if placed is not None else None
            if placed is not None and placed.loop is not None:
                self.add(
                    path,
                    f"answer: '{node_id}' is inside loop '{placed.loop}', which runs it every "
                    "round; the answer streamed by `run --stream` is one reply",
                    f"name an llm node after the loop, one that reads `{placed.loop}.last."
                    f"{node_id}`",
                    code="answer",
                )
            elif node is None:
                if self.readable("nodes", node_id):
                    fix = did_you_mean(node_id, self.spec.nodes) or "name an llm node"
                    self.add(path, f"answer: unknown node '{node_id}'", fix, code="answer")
            elif not isinstance(node, LlmNode):
                self.add(
                    path,
                    f"answer: '{node_id}' is a {node.type} node; the answer streamed by "
                    "`run --stream` is the reply of one llm node",
                    "name an llm node (one that sums up a fanout's replies, say)",
                    code="answer",
                )
            elif node.output_schema is not None:
                self.add(
                    path,
                    f"answer: '{node_id}' has a `schema:`; a structured answer is checked "
                    "whole, so it is not streamed",
                    "name an llm node without `schema:`",
                    code="answer",
                )


def strings(value: object, path: YamlPath) -> Iterator[tuple[YamlPath, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from strings(v, (*path, i))
