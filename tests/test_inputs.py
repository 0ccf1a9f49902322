"""Workflow.bind_inputs: what the Python API refuses before a run, and optional inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flowengine import Workflow
from flowengine.errors import UsageError

DATA = Path(__file__).resolve().parent / "data" / "cli"


def nested(depth: int) -> list[Any]:
    """``depth`` arrays, one inside the other, built without recursion."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (
            {"prompt": "caf\udce9"},
            "input 'prompt' is not valid UTF-8 text (byte 0xe9 at character 4); pass UTF-8 text",
        ),
        (
            {"prompt": "q", "data": {"tags": ["ok", "caf\udce9"]}},
            "input 'data' is not valid UTF-8 text (byte 0xe9 at character 4 of ['tags'][1]); "
            "pass UTF-8 text",
        ),
        (
            {"prompt": "q", "data": {"ok": 1, "caf\udce9": 1}},
            "input 'data' is not valid UTF-8 text (byte 0xe9 at character 4 of the key "
            "['caf\\udce9']); pass UTF-8 text",
        ),
        (
            {"prompt": "q", "items": [{"k": "\ud800"}]},
            "input 'items' is not valid UTF-8 text (a lone surrogate at character 1 of [0]['k']); "
            "pass UTF-8 text",
        ),
        (
            {"prompt": "q", "items": nested(101)},
            "input 'items' is nested deeper than 100 levels; "
            "pass at most 100 levels of arrays and objects",
        ),
        (
            {"prompt": "q", "items": nested(5000)},  # far past Python's recursion limit
            "input 'items' is nested deeper than 100 levels; "
            "pass at most 100 levels of arrays and objects",
        ),
    ],
)
def test_inputs_no_run_can_take_are_refused(inputs: dict[str, Any], message: str) -> None:
    wf = Workflow.load(DATA / "object_input.yaml")
    with pytest.raises(UsageError) as caught:
        wf.bind_inputs(inputs)
    assert str(caught.value) == message


def test_nesting_up_to_the_bound_is_taken() -> None:
    wf = Workflow.load(DATA / "object_input.yaml")
    assert wf.bind_inputs({"prompt": "q", "items": nested(100)})["items"] == nested(100)


async def test_the_api_refuses_text_that_is_not_utf8_before_the_run() -> None:
    wf = Workflow.load(DATA / "object_input.yaml")
    with pytest.raises(UsageError, match="input 'prompt' is not valid UTF-8 text"):
        await wf.run(prompt="caf\udce9", offline=True)


def test_an_optional_input_not_given_is_left_out_and_binding_twice_changes_nothing() -> None:
    wf = Workflow.load(DATA / "optional_input.yaml")
    bound = wf.bind_inputs({"prompt": "q"})
    assert bound == {"prompt": "q"}
    assert wf.bind_inputs({"prompt": "q", "style": None}) == bound  # None is "not given"
    assert wf.bind_inputs(bound) == bound  # what the CLI's early check and the run both do
    assert wf.bind_inputs({"prompt": "q", "style": "haiku"})["style"] == "haiku"
    with pytest.raises(UsageError, match="missing input 'prompt'"):
        wf.bind_inputs({"prompt": None})  # None is "not given", for a required input too


async def test_an_optional_input_without_a_default_runs_through_the_api() -> None:
    wf = Workflow.load(DATA / "optional_input.yaml")
    result = await wf.run(prompt="hi", offline=True)
    assert result.status == "succeeded"
    assert result.output["style"] is None and "style" not in result.inputs
    assert 'You asked: "hi"' in result.output["text"]
    styled = await wf.run(prompt="hi", style="haiku", offline=True)
    assert 'You asked: "hi in the style of haiku"' in styled.output["text"]
