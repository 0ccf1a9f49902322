"""The checks of loops: what a round's nodes and `until:` may read, and the codes of problems.

The messages of broken loops are golden files (tests/data/invalid/loop_*.err); here, what must
pass, and that each problem carries its code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flowengine import Engine, Workflow
from flowengine.errors import WorkflowError

INVALID = Path(__file__).resolve().parent / "data" / "invalid"

# The round reads a node the loop needs only through another (`a`), `round` and `previous`;
# `until:` reads the round's nodes and the round before; a python node takes `round` as data.
READS = """\
version: 1
name: reads
providers:
  local: {type: offline}
models:
  m: {id: vendor/m, provider: local}
defaults: {provider: local}
nodes:
  a: {type: llm, model: m, template: first}
  b: {type: llm, needs: [a], model: m, template: "{{ a }}"}
  again:
    type: loop
    needs: [b]
    max_rounds: 4
    until: count == previous.count if previous else false
    nodes:
      step:
        type: llm
        model: m
        template: "{{ a.model }} {{ b }} {{ round }} {{ previous.step if previous else '' }}"
      count:
        type: python
        needs: [step]
        function: tests.functions:shout
        args: {text: "x", times: "{{ [round, 2] | min }}"}
output:
  counts: "{{ again.rounds | map(attribute='count') | list }}"
  first: "{{ again.rounds[0].step.model }}"
"""


async def test_a_round_reads_what_the_loop_may_and_until_reads_the_round_before() -> None:
    wf = Workflow.from_string(READS)
    async with Engine(offline=True, cache=False, record=False) as engine:
        result = await engine.run(wf)
    assert result.status == "succeeded"
    assert result.output == {"counts": ["X", "X X", "X X"], "first": "m"}
    assert result.nodes["again"].output.stopped == "condition"


@pytest.mark.parametrize(
    ("name", "codes"),
    [
        (
            "loop_cap",
            [
                "missing-key",
                "undefined-name",
                "invalid-value",
                "cap-without-until",
                "invalid-value",
            ],
        ),
        (
            "loop_needs",
            ["cycle", "not-a-need", "after-loop", "own-loop", "unknown-need", "inside-loop"],
        ),
        (
            "loop_names",
            ["name-clash", "duplicate-id", "reserved-name", "nested-loop", "duplicate-id"],
        ),
        (
            "loop_templates",
            [
                "own-loop",
                "undefined-name",
                "unknown-field",
                "after-loop",
                "unknown-field",
                "own-loop",
                "inside-loop",
                "unknown-field",
                "loop-only-name",
                "inside-loop",
            ],
        ),
    ],
)
def test_problems_carry_codes(name: str, codes: list[str]) -> None:
    with pytest.raises(WorkflowError) as info:
        Workflow.load(INVALID / f"{name}.yaml")
    found = sorted(info.value.problems, key=lambda p: (p.location.line or 0, p.location.column))
    assert [p.code for p in found] == codes


def test_a_fix_names_the_loop_to_need_when_the_reader_does_not_need_it() -> None:
    text = READS.replace(
        "output:\n", "  late: {type: llm, model: m, template: '{{ step }}'}\noutput:\n"
    )
    with pytest.raises(WorkflowError) as info:
        Workflow.from_string(text)
    [problem] = info.value.problems
    assert problem.message == "template uses 'step', a node inside loop 'again'"
    assert problem.fix == "add 'again' to the needs of 'late' and read `again.last.step`"


def test_a_loops_own_condition_cannot_read_its_rounds() -> None:
    text = READS.replace("    max_rounds: 4\n", "    max_rounds: 4\n    when: step.success\n")
    with pytest.raises(WorkflowError) as info:
        Workflow.from_string(text)
    [problem] = info.value.problems
    assert problem.message == "condition uses 'step', a node inside loop 'again'"
    assert problem.fix == (
        "test what the loop needs: its `when:` is evaluated before its first round"
    )
