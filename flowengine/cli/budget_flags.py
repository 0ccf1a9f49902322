"""`--max-cost`, `--max-calls` and `--dry-run`, shared by `run` and `batch`."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from flowengine.spec import Budget

F = TypeVar("F", bound=Callable[..., Any])


def _finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise click.BadParameter("give a number of US dollars, such as 0.50")
    return value


def budget_options(scope: str) -> Callable[[F], F]:
    """The two cap options; ``scope`` says in their help what they cap (a run, the batch)."""
    max_cost = click.option(
        "--max-cost",
        type=click.FloatRange(min=0, min_open=True),
        callback=_finite,
        metavar="USD",
        help=f"Stop {scope} once it has spent this many US dollars (known costs).",
    )
    max_calls = click.option(
        "--max-calls",
        type=click.IntRange(min=1),
        metavar="N",
        help=f"Stop {scope} before its model call number N+1.",
    )
    dry_run = click.option(
        "--dry-run",
        is_flag=True,
        help="Make no model call: count the calls, tokens and cost it would take, and print them.",
    )

    def decorate(func: F) -> F:
        return dry_run(max_cost(max_calls(func)))

    return decorate


def merged(budget: Budget, max_cost: float | None, max_calls: int | None) -> Budget:
    """The workflow's ``budget:`` with the flags given on the command line in its place."""
    flags = {"max_cost": max_cost, "max_calls": max_calls}
    return budget.model_copy(update={k: v for k, v in flags.items() if v is not None})
