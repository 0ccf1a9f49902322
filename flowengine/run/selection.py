"""Which nodes and models a run takes in: ``--only``, ``--skip`` and ``--models``, checked."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from flowengine.errors import UsageError, did_you_mean

if TYPE_CHECKING:
    from flowengine.language.workflow import Workflow


def allowed_models(workflow: Workflow, models: Iterable[str] | None) -> Sequence[str]:
    """The models a run may call (``--models``), by weight; UsageError for an unknown one."""
    spec = workflow.spec
    if models is None:
        return workflow.plan.by_weight
    chosen = []
    for name in models:
        if name not in spec.models:
            fix = did_you_mean(name, spec.models) or f"models: {', '.join(spec.models)}"
            raise UsageError(f"--models: unknown model '{name}'", fix)
        chosen.append(name)
    return spec.model_sorted(chosen)


def select_nodes(
    workflow: Workflow, only: Iterable[str] | None = None, skip: Iterable[str] | None = None
) -> tuple[list[str], list[str]]:
    """The nodes a run takes in, in run order, and those of them it skips; UsageError if wrong.

    ``only`` keeps those nodes and their ancestors, as the nodes after a skipped node may read
    what is above it. A node given to both ``only`` and ``skip`` is an error.
    """
    skipped = set(known_nodes(workflow, skip or (), "--skip"))
    if only is None:
        return workflow.order, [n for n in workflow.order if n in skipped]
    keep: set[str] = set()
    for node_id in known_nodes(workflow, only, "--only"):
        if node_id in skipped:
            raise UsageError(
                f"--only {node_id} and --skip {node_id}: a node cannot be both run and skipped",
                "give it to one of them",
            )
        keep |= {node_id, *workflow.ancestors(node_id)}
    selected = [n for n in workflow.order if n in keep]
    return selected, [n for n in selected if n in skipped]


def known_nodes(
    workflow: Workflow,
    names: Iterable[str],
    flag: str,
    loop_fix: Callable[[str, str], str] = lambda loop, name: (
        f"name the loop, '{loop}', or give '{name}' a `when:`"
    ),
) -> list[str]:
    """``names`` as given, each a top-level node of ``workflow``; UsageError naming ``flag``
    for one that is unknown or inside a loop (``loop_fix(loop, name)`` says what to do)."""
    nodes = workflow.spec.nodes
    found = list(names)
    for name in found:
        placed = workflow.placed.get(name)
        loop = placed.loop if placed is not None else None
        if loop is not None:
            raise UsageError(
                f"{flag}: node '{name}' is inside loop '{loop}', which runs it every round",
                loop_fix(loop, name),
            )
        if name not in nodes:
            fix = did_you_mean(name, nodes) or f"nodes: {', '.join(nodes)}"
            raise UsageError(f"{flag}: unknown node '{name}'", fix)
    return found
