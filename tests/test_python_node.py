"""The python node: a function by import path, called with JSON data, returning JSON data."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from flowengine import Engine, Workflow, WorkflowError
from flowengine.providers import register_provider
from tests import functions
from tests.clirunner import invoke

COUNT = """\
version: 1
name: count
inputs:
  prompt: {type: string}
models:
  m: {id: vendor/m}
nodes:
  primary: {type: llm, model: m, template: "{{ prompt }}"}
  count:
    type: python
    needs: [primary]
    function: tests.functions:word_count
  report:
    type: llm
    needs: [count]
    model: m
    template: "{{ count.words }} words, first {{ count['first'] }}"
"""


async def run(text: str, **inputs: Any) -> Any:
    async with Engine(offline=True, cache=False, record=False) as engine:
        return await engine.run(Workflow.from_string(text), inputs)


async def test_a_sync_function_gets_its_needs_as_json_and_runs_in_a_thread() -> None:
    result = await run(COUNT, prompt="Why?")
    assert result.status == "succeeded"
    primary = result.output["primary"]["content"]
    expected = {"words": len(primary.split()), "model": "m", "first": primary.split()[0]}
    assert result.output["count"] == expected
    assert result.nodes["count"].status == "succeeded"
    assert functions.THREADS["word_count"] is not threading.main_thread()
    # A downstream template reads the output's fields.
    asked = f"{expected['words']} words, first {expected['first']}"
    assert f'You asked: "{asked}"' in result.output["report"]["content"]


ARGS = """\
version: 1
name: shout
inputs:
  prompt: {type: string}
nodes:
  loud:
    type: python
    function: tests.functions:shout
    args: {text: "{{ prompt }}!", times: 2}
output:
  said: "{{ loud }}"
"""


async def test_an_async_function_gets_its_args_with_templates_evaluated() -> None:
    result = await run(ARGS, prompt="hey")
    assert result.output == {"said": "HEY! HEY!"}


def failing(function: str, on_error: str = "fail") -> str:
    return f"""\
version: 1
name: failing
models:
  m: {{id: vendor/m}}
nodes:
  bad: {{type: python, function: "tests.functions:{function}", on_error: {on_error}}}
  after: {{type: llm, needs: [bad], model: m, template: "{{{{ bad }}}}"}}
"""


async def test_an_exception_fails_the_node_with_the_function_and_the_message() -> None:
    result = await run(failing("boom"))
    assert result.status == "failed"
    bad = result.nodes["bad"]
    assert (bad.status, bad.error.type) == ("failed", "python")
    assert bad.error.message == "tests.functions:boom raised ValueError: no good"
    assert result.nodes["after"].status == "skipped"


async def test_on_error_continue_lets_downstream_nodes_run() -> None:
    result = await run(failing("boom", on_error="continue"))
    assert result.status == "partial"
    assert result.nodes["bad"].status == "failed"
    assert result.nodes["after"].status == "succeeded"


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("a_set", "returned a set, which is not JSON data (TypeError: Object of type set"),
        ("not_a_number", "returned a float, which is not JSON data (ValueError: Out of range"),
    ],
)
async def test_a_return_value_that_is_not_json_fails_the_node(function: str, message: str) -> None:
    result = await run(failing(function))
    error = result.nodes["bad"].error
    assert error.message.startswith(f"tests.functions:{function} {message}")
    assert error.message.endswith("return dicts, lists, strings, numbers, booleans or None")


async def test_a_tuple_is_json_data_as_a_list() -> None:
    result = await run(failing("pair"))
    assert result.output["bad"] == [1, 2]
    assert json.loads(result.model_dump_json())["nodes"]["bad"]["output"] == [1, 2]


@pytest.mark.parametrize(
    ("function", "message", "fix"),
    [
        ("gone", "module 'tests.functions' has no 'gone'", "functions in tests.functions: "),
        ("CONSTANT", "'tests.functions:CONSTANT' is a int, not a function", "name a function"),
        ("two_params", "tests.functions:two_params(first, second) cannot be called", "args:"),
    ],
)
async def test_the_function_is_checked_when_the_run_starts_before_any_call(
    function: str, message: str, fix: str
) -> None:
    calls: list[Any] = []
    register_provider("counting", lambda messages: calls.append(messages) or "ok")
    text = failing(function).replace("models:", "providers: {p: {type: counting}}\nmodels:")
    text = text.replace("{id: vendor/m}", "{id: vendor/m, provider: p}")
    text = text.replace("  bad: {", "  first: {type: llm, model: m, template: hi}\n  bad: {")
    text = text.replace("on_error: fail", "needs: [first]")
    wf = Workflow.from_string(text, name="w.yaml")
    async with Engine(cache=False, record=False) as engine:
        with pytest.raises(WorkflowError) as caught:
            await engine.run(wf)
    [problem] = caught.value.problems
    assert str(problem.location) == "w.yaml:8:33"
    assert problem.message.startswith(f"nodes.bad.function: {message}")
    assert problem.fix is not None and fix in problem.fix
    assert calls == []


def test_the_cli_runs_a_python_node_and_validates_its_module(
    in_repo_root: Any, tmp_path: Any
) -> None:
    workflow = tmp_path / "shout.yaml"
    workflow.write_text(ARGS, encoding="utf-8")
    code, out, err = invoke("run", str(workflow), "--prompt", "hi", "--offline", "-q")
    assert (code, json.loads(out)["output"]) == (0, {"said": "HI! HI!"}), err
    workflow.write_text(ARGS.replace("tests.functions", "tests.nothing"), encoding="utf-8")
    code, out, err = invoke("validate", str(workflow))
    assert code == 2
    assert f"{workflow}:8:15: error: nodes.loud.function: no module named 'tests.nothing'" in err


def test_the_cli_finds_a_module_in_the_current_directory(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "local_tools.py").write_text("def hello():\n    return 'hello'\n")
    (tmp_path / "w.yaml").write_text(
        "version: 1\nname: local\nnodes:\n  hi: {type: python, function: local_tools:hello}\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.path", [p for p in __import__("sys").path if p not in ("", ".")])
    code, out, err = invoke("run", "w.yaml", "--offline", "-q")
    assert (code, json.loads(out)["output"]) == (0, {"hi": "hello"}), err
