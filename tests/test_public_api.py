"""The public API is exactly what ``flowengine.__all__`` names, and each name works."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

import flowengine

PUBLIC = {
    "CallError",
    "CallResult",
    "ConfigError",
    "Engine",
    "Event",
    "FlowEngineError",
    "JudgeResult",
    "LoopResult",
    "NodeResult",
    "PluginError",
    "Problem",
    "RunError",
    "RunResult",
    "SelectResult",
    "TokenDelta",
    "UsageError",
    "Workflow",
    "WorkflowError",
    "compare",
    "register_node",
    "register_provider",
}


def test_all_is_the_public_api() -> None:
    assert set(flowengine.__all__) == PUBLIC
    for name in flowengine.__all__:
        assert getattr(flowengine, name) is not None


def test_errors_form_one_tree() -> None:
    errors = ("CallError", "ConfigError", "PluginError", "RunError", "UsageError", "WorkflowError")
    for name in errors:
        assert issubclass(getattr(flowengine, name), flowengine.FlowEngineError)
    assert issubclass(flowengine.WorkflowError, ValueError)


def test_version_matches_the_package() -> None:
    assert flowengine.__version__ == importlib.metadata.version("flowengine")


def test_names_load_on_first_use() -> None:
    assert set(flowengine.__all__) <= set(dir(flowengine))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        flowengine.nothing  # noqa: B018


def test_compare_stays_the_function_when_its_module_is_imported_first() -> None:
    code = (
        "import sys, flowengine.compare, flowengine; "
        "assert flowengine.compare is sys.modules['flowengine.compare'].compare"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
