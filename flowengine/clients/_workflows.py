"""What every facade does with its workflow: find it, load it with the facade's arguments, run it.

A facade's constructor arguments become overrides of its workflow (as ``--set`` does), and
``offline=True`` is the engine's offline mode (as ``--offline`` is). The facade keeps the run's
:class:`RunResult` beside the dict it returns, so that :class:`UIResponseManager` can build
its cards and comparison from the run itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from flowengine import Engine, RunResult, Workflow
from flowengine.shipped import shipped_workflows

#: The provider every shipped workflow calls: ``base_url=`` points it elsewhere.
OPENROUTER = "openrouter"


class ClientResult(dict[str, Any]):
    """The dict a facade returns, exactly as the original client's, with the run behind it.

    ``run`` is the :class:`RunResult` the dict was made from (every node, call and metric),
    for :class:`~flowengine.clients.UIResponseManager` and for anything the dict leaves out.
    """

    def __init__(self, data: Mapping[str, Any], run: RunResult) -> None:
        super().__init__(data)
        self.run = run


def workflow_path(workflow: str | Path) -> Path:
    """A path that exists, else the shipped workflow of that name (``critique``, ``staged``)."""
    path = Path(workflow)
    if path.exists():
        return path
    return shipped_workflows().get(str(workflow), path)  # a missing path: load() names it


def load(
    workflow: str | Path,
    overrides: Mapping[str, Any],
    *,
    base_url: str | None = None,
) -> Workflow:
    """The workflow, with ``overrides`` applied and its OpenRouter provider at ``base_url``."""
    given = dict(overrides)
    if base_url is not None:
        given[f"providers.{OPENROUTER}.base_url"] = base_url
    return Workflow.load(workflow_path(workflow), overrides=given)


async def run(
    workflow: Workflow,
    inputs: Mapping[str, Any],
    *,
    offline: bool,
    cache: bool = True,
    only: Iterable[str] | None = None,
    models: Iterable[str] | None = None,
) -> RunResult:
    """One run on an engine of its own (rate limits are shared across engines anyway)."""
    async with Engine(offline=offline, cache=cache) as engine:
        return await engine.run(workflow, inputs, only=only, models=models)
