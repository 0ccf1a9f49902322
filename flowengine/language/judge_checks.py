"""The checks of judge nodes (mixed into ``checks.Checker``): what a judge scores, its judge
models, and the names its templates read.

A judge's ``target`` must be an ``llm`` or ``fanout`` node upstream of it, and no other judge's:
a result has one ``quality``. A judge inside a loop judges a node of its own group, each round's
answer in that round; a judge outside a loop cannot judge a node inside one.
"""

from __future__ import annotations

import dataclasses
from collections import ChainMap
from collections.abc import Callable, Collection, Iterable, Mapping

from flowengine.errors import did_you_mean
from flowengine.language.judging import PROMPT_NAMES, PROMPT_SHAPES
from flowengine.language.placement import Placed
from flowengine.language.source import YamlPath
from flowengine.language.template_checks import Names, TemplateChecks
from flowengine.language.templates import is_template
from flowengine.spec import JudgeNode, NodeSpec, WorkflowSpec

_JUDGED_KINDS = ("llm", "fanout")


class JudgeChecks(TemplateChecks):
    # What checks.Checker provides.
    spec: WorkflowSpec
    placed: dict[str, Placed]
    peers: Callable[[str], tuple[Mapping[str, NodeSpec], Collection[str]]]
    readable: Callable[[str, str], bool]
    needs_read: Callable[[str], bool]
    check_models: Callable[[YamlPath, Iterable[str]], None]
    check_ref: Callable[[YamlPath, str, Collection[str], str], None]
    check_prompts: Callable[[YamlPath, JudgeNode, Names], None]

    def check_judges(self) -> None:
        """Each judge's references and target; a target judged twice is reported once."""
        judged_by: dict[str, str] = {}
        for node_id, placed in self.placed.items():
            node = placed.node
            if not isinstance(node, JudgeNode):
                continue
            self.check_judge_models(node_id, node)
            if not self.check_target(node_id, node):
                continue
            first = judged_by.setdefault(node.target, node_id)
            if first != node_id:
                self.add(
                    (*placed.path, "target"),
                    f"node '{node.target}' is judged by both '{first}' and '{node_id}'",
                    "an answer has one quality: judge it once, with every criterion "
                    "(and `models:` for a panel of judges)",
                    code="judged-twice",
                )

    def check_judge_models(self, node_id: str, node: JudgeNode) -> None:
        base = self.placed[node_id].path
        if node.model is not None and not is_template(node.model):
            self.check_ref((*base, "model"), node.model, self.spec.models, "model")
        if node.models is not None:
            raw = self.source.root
            for part in (*base, "models"):
                raw = raw.get(part) if isinstance(raw, dict) else None
            listed = (*base, "models") if isinstance(raw, list) else (*base, "models", "include")
            self.check_models(listed, node.models.include or [])
            self.check_models((*base, "models", "exclude"), node.models.exclude)
        if "response_format" in node.params:
            self.add(
                (*base, "params", "response_format"),
                "params.response_format: a judge asks for its own JSON (scores by criterion)",
                "remove params.response_format",
                code="judge-response-format",
                key=True,
            )

    def check_target(self, node_id: str, node: JudgeNode) -> bool:
        """Whether the target is an llm or fanout node upstream; if not, say so."""
        target, path = node.target, (*self.placed[node_id].path, "target")
        nodes, upstream = self.peers(node_id)
        judged = [n for n, spec in nodes.items() if spec.type in _JUDGED_KINDS]
        listed = f"llm and fanout nodes: {', '.join(judged)}" if judged else "there are none"
        if target == node_id:
            message = f"node '{node_id}' judges itself"
            self.add(
                path,
                message,
                f"name the node whose answers it scores ({listed})",
                code="judge-itself",
            )
        elif target not in nodes and target in self.placed:
            self.add(path, *self.across_loop(node_id, target), code="judge-across-loop")
        elif target not in nodes:
            if self.readable("nodes", target):
                fix = did_you_mean(target, judged) or listed
                message = f"node '{node_id}' judges unknown node '{target}'"
                self.add(path, message, fix, code="unknown-target")
        elif nodes[target].type not in _JUDGED_KINDS:
            message = (
                f"node '{node_id}' judges node '{target}', a {nodes[target].type} node: a judge "
                "scores the answers of an llm or fanout node"
            )
            self.add(path, message, listed, code="target-kind")
        elif self.needs_read(node_id) and target not in upstream:
            needs = ", ".join([*node.needs, target])
            self.add(
                path,
                f"node '{node_id}' judges node '{target}', which is not among its needs",
                f"add '{target}' to the needs of '{node_id}': `needs: [{needs}]`",
                code="target-not-a-need",
            )
        else:
            return True
        return False

    def across_loop(self, node_id: str, target: str) -> tuple[str, str]:
        """The message and fix for a judge whose target is on the other side of a loop."""
        inside, there = self.placed[node_id].loop, self.placed[target].loop
        if inside is None:
            message = f"node '{node_id}' judges node '{target}', a node inside loop '{there}'"
            fix = f"move '{node_id}' into the nodes of '{there}': it then judges every round"
            return message, fix
        where = f"loop '{there}'" if there is not None else "the top level"
        message = (
            f"node '{node_id}' in loop '{inside}' judges node '{target}', which is in {where}: "
            "a judge inside a loop judges a node of its own round"
        )
        return message, f"judge a node of '{inside}', or move '{node_id}' out of the loop"

    def check_judge_templates(self, node_id: str, node: JudgeNode, names: Names) -> None:
        """The question and prompt templates (in whichever form the prompt is written);
        ``names`` already has the node's vars."""
        base = self.placed[node_id].path
        for name in node.vars:
            if name in PROMPT_NAMES:
                self.add(
                    (*base, "vars", name),
                    f"var '{name}' hides the judge's own '{name}'",
                    "rename the var",
                    code="var-hides-name",
                    key=True,
                )
        if node.question is not None:
            self.check_inline((*base, "question"), node.question, names)
        names = dataclasses.replace(
            names,
            allowed=names.allowed | PROMPT_NAMES,
            hidden=names.hidden - PROMPT_NAMES,
            own=names.own - PROMPT_NAMES,
            optional=names.optional - PROMPT_NAMES,
            shapes=ChainMap(dict(PROMPT_SHAPES), dict(names.shapes)),
        )
        self.check_prompts(base, node, names)
