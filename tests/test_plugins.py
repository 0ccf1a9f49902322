"""Plugins in workflows: provider types and node kinds registered from code or installed as
entry points (here monkeypatched into importlib.metadata), checked before the first call."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from flowengine import Engine, Workflow, WorkflowError, plugins
from flowengine.errors import PluginError
from flowengine.providers import ChatRequest, Completion, register_provider
from flowengine.run.context import NodeContext
from flowengine.run.nodes import register_node

ECHO = """\
version: 1
name: plugins
inputs:
  prompt: {type: string}
providers:
  mine: {type: echoOPTIONS}
models:
  small: {id: vendor/small, provider: mine, weight: 1}
  big: {id: vendor/big, provider: mine, weight: 3}
nodes:
  answer: {type: llm, model: big, template: "{{ prompt }}"}
"""


def echo_client(messages: list[dict[str, str]]) -> str:
    return "echo: " + messages[-1]["content"]


async def run(wf: Workflow, **inputs: Any) -> Any:
    async with Engine(cache=False, record=False) as engine:
        return await engine.run(wf, inputs)


def problems(text: str) -> list[str]:
    with pytest.raises(WorkflowError) as caught:
        Workflow.from_string(text, name="w.yaml")
    return [p.render() for p in caught.value.problems]


# -- provider types ----------------------------------------------------------------------------


async def test_a_registered_callable_is_a_provider_type_in_yaml() -> None:
    register_provider("echo", echo_client)
    result = await run(Workflow.from_string(ECHO.replace("OPTIONS", "")), prompt="hello")
    assert result.status == "succeeded"
    answer = result.output["answer"]
    assert (answer["content"], answer["model"], answer["provider"]) == (
        "echo: hello",
        "big",
        "mine",
    )


class Counted:
    """A provider object counting its calls; cached under ``cache_id`` when it has one."""

    def __init__(self, cache_id: str | None) -> None:
        self.cache_id = cache_id
        self.calls = 0

    async def complete(self, request: ChatRequest) -> Completion:
        self.calls += 1
        return Completion(content=f"answer {self.calls}")


@pytest.mark.parametrize(("cache_id", "answers"), [("vendor-x", 1), (None, 2)])
async def test_a_provider_is_cached_only_when_it_names_its_source(
    cache_id: str | None, answers: int
) -> None:
    provider = Counted(cache_id)
    register_provider("echo", provider)
    wf = Workflow.from_string(ECHO.replace("OPTIONS", ""))
    contents = []
    for _ in range(2):
        async with Engine() as engine:  # the defaults: cache on
            result = await engine.run(wf, {"prompt": "hello"})
        contents.append((result.output["answer"]["content"], result.output["answer"]["cached"]))
    assert provider.calls == answers
    if cache_id is None:
        assert contents == [("answer 1", False), ("answer 2", False)]
    else:
        assert contents == [("answer 1", False), ("answer 1", True)]


async def test_the_original_register_model_with_a_weight_is_a_provider_and_a_model() -> None:
    # orchestrator.register_model('llama', llama_client, weight=1.0), as a workflow says it.
    calls: list[str] = []

    async def llama_client(messages: list[dict[str, str]]) -> str:
        calls.append("llama")
        return "llama says hi"

    register_provider("llama", llama_client)
    text = """\
version: 1
name: weights
providers: {llama: {type: llama}}
models:
  llama: {id: llama, provider: llama, weight: 4}
  other: {id: other, provider: llama, weight: 1}
nodes:
  pick: {type: select}
  answer: {type: llm, needs: [pick], model: "{{ pick.model }}", template: hi}
"""
    result = await run(Workflow.from_string(text))
    assert result.output["pick"]["model"] == "llama"  # the highest weight
    assert result.output["answer"]["content"] == "llama says hi"
    assert calls == ["llama"]


def test_an_unknown_provider_type_is_located_with_the_known_types() -> None:
    register_provider("echo", echo_client)
    [problem] = problems(ECHO.replace("OPTIONS", "").replace("type: echo", "type: ecko"))
    assert (
        problem.splitlines()[0]
        == "w.yaml:6:16: error: providers.mine: unknown provider type 'ecko'"
    )
    assert problem.endswith("fix: did you mean 'echo'? (provider types: openai, offline, echo)")


class EchoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prefix: str
    repeat: int = 1


def test_a_plugin_config_model_checks_its_keys_with_locations() -> None:
    register_provider("echo", echo_client, config=EchoConfig)
    text = ECHO.replace("OPTIONS", ", repeat: many, prefx: x, timeout: 5s")
    found = problems(text)
    assert [p.splitlines()[0] for p in found] == [
        "w.yaml:6:3: error: providers.mine is missing required key 'prefix'",
        "w.yaml:6:30: error: providers.mine.repeat: expected a whole number, got 'many'",
        "w.yaml:6:36: error: unknown key 'prefx' in providers.mine",
    ]
    assert found[2].endswith("fix: did you mean 'prefix'?")


def test_flowengine_settings_of_a_plugin_provider_are_checked_too() -> None:
    register_provider("echo", echo_client)
    [problem] = problems(ECHO.replace("OPTIONS", ", max_concurrency: 0"))
    assert "providers.mine.max_concurrency: must be greater than 0, got 0" in problem


# -- entry points ------------------------------------------------------------------------------


@dataclass
class FakeEntryPoint:
    """What importlib.metadata gives for an installed plugin: name, value, dist and load()."""

    name: str
    value: str
    group: str
    dist: Any = None

    def load(self) -> Any:
        import pkgutil

        return pkgutil.resolve_name(self.value)


DIST = SimpleNamespace(name="flowengine-echo", version="1.2.0")


def installed(monkeypatch: pytest.MonkeyPatch, *entries: FakeEntryPoint) -> list[str]:
    """Make ``entries`` the installed entry points; returns the groups asked for, in order."""
    asked: list[str] = []

    def entry_points(*, group: str) -> list[FakeEntryPoint]:
        asked.append(group)
        return [e for e in entries if e.group == group]

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    return asked


async def test_an_installed_provider_type_is_found_by_its_entry_point(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    value = f"{__name__}:echo_client"
    installed(monkeypatch, FakeEntryPoint("echo", value, plugins.PROVIDERS, DIST))
    result = await run(Workflow.from_string(ECHO.replace("OPTIONS", "")), prompt="hi")
    assert result.output["answer"]["content"] == "echo: hi"


def test_built_in_types_read_no_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = installed(monkeypatch)
    Workflow.load("workflows/full.yaml")
    assert asked == []


def test_a_plugin_that_fails_to_load_names_itself_and_its_distribution(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = FakeEntryPoint("echo", "flowengine_echo_gone:echo", plugins.PROVIDERS, DIST)
    installed(monkeypatch, broken)
    [problem] = problems(ECHO.replace("OPTIONS", ""))
    lines = problem.splitlines()
    assert lines[0] == (
        "w.yaml:6:16: error: the provider type 'echo' could not be loaded from the entry point "
        "'echo = flowengine_echo_gone:echo' of the distribution 'flowengine-echo 1.2.0': "
        "ModuleNotFoundError: No module named 'flowengine_echo_gone'"
    )
    assert lines[-1] == (
        "      = fix: reinstall it (pip install --force-reinstall flowengine-echo), "
        "or uninstall it (pip uninstall flowengine-echo)"
    )
    assert "Traceback" not in problem


def test_the_built_ins_are_declared_as_entry_points_in_pyproject() -> None:
    import tomllib

    from tests.conftest import ROOT

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = project["entry-points"]
    assert {group: declared[group] for group in plugins.BUILTIN} == plugins.BUILTIN


# -- node kinds --------------------------------------------------------------------------------


class ShoutConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str
    times: int = 1


async def shout(ctx: NodeContext) -> dict[str, Any]:
    config = ctx.config
    assert isinstance(config, ShoutConfig)
    loud = str(ctx.evaluate(config.text)).upper()
    return {"loud": " ".join([loud] * config.times), "needs": list(ctx.node.needs)}


SHOUT = """\
version: 1
name: shouting
inputs:
  prompt: {type: string}
models:
  m: {id: vendor/m}
nodes:
  answer: {type: llm, model: m, template: "{{ prompt }}"}
  loud: {type: shout, needs: [answer], text: "{{ prompt }}!", times: 2}
  after: {type: llm, needs: [loud], model: m, template: "{{ loud.loud }}"}
"""


async def test_a_plugin_node_kind_runs_with_the_narrow_context() -> None:
    register_node("shout", shout, config=ShoutConfig)
    async with Engine(offline=True, cache=False, record=False) as engine:
        result = await engine.run(Workflow.from_string(SHOUT), prompt="hey")
    assert result.output["loud"] == {"loud": "HEY! HEY!", "needs": ["answer"]}
    assert 'You asked: "HEY! HEY!"' in result.output["after"]["content"]


def test_a_plugin_node_is_checked_like_any_other() -> None:
    register_node("shout", shout, config=ShoutConfig)
    text = SHOUT.replace("times: 2}", "times: two}").replace("{{ prompt }}!", "{{ promt }}!")
    found = problems(text)
    assert [p.splitlines()[0] for p in found] == [
        "w.yaml:9:50: error: template uses undefined name 'promt'",
        "w.yaml:9:69: error: nodes.loud.times: expected a whole number, got 'two'",
    ]


def test_an_unknown_node_kind_lists_the_plugins_too() -> None:
    register_node("shout", shout)
    [problem] = problems(SHOUT.replace("type: shout", "type: shoot"))
    assert problem.splitlines()[0] == "w.yaml:9:16: error: nodes.loud: unknown node type 'shoot'"
    assert problem.endswith("(node types: select, llm, fanout, judge, python, loop, shout)")


async def test_an_installed_node_kind_is_found_by_its_entry_point(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(shout, "config", ShoutConfig, raising=False)
    installed(monkeypatch, FakeEntryPoint("shout", f"{__name__}:shout", plugins.NODES, DIST))
    async with Engine(offline=True, cache=False, record=False) as engine:
        result = await engine.run(Workflow.from_string(SHOUT), prompt="hey")
    assert result.output["loud"]["loud"] == "HEY! HEY!"


def test_a_node_kind_must_be_an_async_function() -> None:
    def sync_run(ctx: NodeContext) -> None:
        return None

    with pytest.raises(PluginError, match=r"node kind 'sync' .* is not an async function"):
        register_node("sync", sync_run)


async def test_an_installed_node_kind_that_is_no_function_fails_before_any_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    installed(monkeypatch, FakeEntryPoint("shout", f"{__name__}:ECHO", plugins.NODES, DIST))
    wf = Workflow.from_string(SHOUT.replace(', text: "{{ prompt }}!", times: 2', ""))
    events: list[Any] = []
    async with Engine(offline=True, cache=False, record=False, listeners=[events.append]) as e:
        with pytest.raises(PluginError, match=r"node kind 'shout' .*flowengine-echo 1\.2\.0"):
            await e.run(wf, prompt="hey")
    assert events == []
