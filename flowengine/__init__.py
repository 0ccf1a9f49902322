"""flowengine: declarative workflows for multi-model LLM pipelines.

The public API is what ``__all__`` names. Each name is imported on first use, so that
``import flowengine`` (and so every ``flowengine`` command) stays fast: the engine and its
HTTP client load only when something needs them.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowengine.compare import compare
    from flowengine.errors import (
        CallError,
        ConfigError,
        FlowEngineError,
        PluginError,
        Problem,
        RunError,
        UsageError,
        WorkflowError,
    )
    from flowengine.events import Event, TokenDelta
    from flowengine.language.workflow import Workflow
    from flowengine.providers import register_provider
    from flowengine.results import (
        CallResult,
        JudgeResult,
        LoopResult,
        NodeResult,
        RunResult,
        SelectResult,
    )
    from flowengine.run.engine import Engine
    from flowengine.run.nodes import register_node

__all__ = [
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
]
__version__ = "0.1.0"  # the one place: pyproject.toml reads it from here

_HOME = {
    "CallError": "flowengine.errors",
    "CallResult": "flowengine.results",
    "ConfigError": "flowengine.errors",
    "Engine": "flowengine.run.engine",
    "Event": "flowengine.events",
    "FlowEngineError": "flowengine.errors",
    "JudgeResult": "flowengine.results",
    "LoopResult": "flowengine.results",
    "NodeResult": "flowengine.results",
    "PluginError": "flowengine.errors",
    "Problem": "flowengine.errors",
    "RunError": "flowengine.errors",
    "RunResult": "flowengine.results",
    "SelectResult": "flowengine.results",
    "TokenDelta": "flowengine.events",
    "UsageError": "flowengine.errors",
    "Workflow": "flowengine.language.workflow",
    "WorkflowError": "flowengine.errors",
    "compare": "flowengine.compare",
    "register_node": "flowengine.run.nodes",
    "register_provider": "flowengine.providers",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'flowengine' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """Keeps a public name from being replaced by the submodule it shares a name with.

    Importing ``flowengine.compare`` (the module) sets the attribute ``flowengine.compare``,
    which must stay the function ``compare`` whichever is imported first.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _HOME and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
