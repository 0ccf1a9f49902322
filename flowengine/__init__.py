"""flowengine: declarative workflows for multi-model LLM pipelines."""

from flowengine.compare import compare
from flowengine.errors import (
    CallError,
    ConfigError,
    FlowEngineError,
    Problem,
    RunError,
    UsageError,
    WorkflowError,
)
from flowengine.events import Event
from flowengine.language.workflow import Workflow
from flowengine.providers import register_provider
from flowengine.results import CallResult, NodeResult, RunResult, SelectResult
from flowengine.run.engine import Engine

__all__ = [
    "CallError",
    "CallResult",
    "ConfigError",
    "Engine",
    "Event",
    "FlowEngineError",
    "NodeResult",
    "Problem",
    "RunError",
    "RunResult",
    "SelectResult",
    "UsageError",
    "Workflow",
    "WorkflowError",
    "compare",
    "register_provider",
]
__version__ = "0.1.0"  # keep in step with pyproject.toml
