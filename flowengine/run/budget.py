"""Budgets: caps on the calls a run (or a batch) starts and the money it spends.

The call path asks :func:`admit` before each call it would send and :func:`charge` once the
call is priced. A call starts only while every meter is under its caps, and counts from then:
calls in flight when a cap is reached finish and count. A cost cap sees only known costs
(``usage.cost``, else the provider's price list), and only once a call has finished, so a run
may end above ``max_cost`` by what its calls in flight cost. Cache hits are free: they count
toward neither cap.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from flowengine.errors import CallError
from flowengine.spec import Budget

Scope = Literal["run", "batch"]


def usd(amount: float) -> str:
    """``$0.50``, ``$0.0004``, ``$1.234567``: enough digits to show what a call costs."""
    text = f"{amount:.6f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


@dataclass
class BudgetMeter:
    """What one run or one batch has started and spent, against its caps."""

    budget: Budget
    scope: Scope = "run"
    calls: int = 0
    spent: float = 0.0

    def refusal(self) -> CallError | None:
        """The error of a call this meter does not let start, or None when it may start."""
        cap = self.budget
        if cap.max_calls is not None and self.calls >= cap.max_calls:
            key, reached = "max_calls", f"max_calls {cap.max_calls} reached"
        elif cap.max_cost is not None and self.spent >= cap.max_cost:
            key, reached = "max_cost", f"max_cost {usd(cap.max_cost)} reached"
        else:
            return None
        flag = "--" + key.replace("_", "-")
        made = f"{self.calls} call{'s' if self.calls != 1 else ''} made, {usd(self.spent)} spent"
        if self.scope == "batch":
            then = f"no more rows start; to go on, run it again with --resume and a higher {flag}"
        else:
            then = f"nothing more starts; raise budget.{key} or pass {flag}"
        message = f"the {self.scope}'s budget: {reached} ({made}): {then}"
        return CallError("budget", message, status=key)

    @property
    def reached(self) -> bool:
        """A cap is reached: no further call may start."""
        return self.refusal() is not None


def meters(budget: Budget | None, shared: Iterable[BudgetMeter] = ()) -> list[BudgetMeter]:
    """A new meter for a run's own ``budget`` (when it caps anything), then the ``shared`` ones."""
    own = budget is not None and (budget.max_cost is not None or budget.max_calls is not None)
    return [*([BudgetMeter(budget)] if own and budget is not None else []), *shared]


def admit(meters: Sequence[BudgetMeter]) -> CallError | None:
    """Count a call that is about to start, or return why it may not (it is then not counted)."""
    for meter in meters:
        error = meter.refusal()
        if error is not None:
            error.attempts = 0
            return error
    for meter in meters:
        meter.calls += 1
    return None


def charge(meters: Sequence[BudgetMeter], cost: float | None) -> None:
    """Add a finished call's cost, when it is known, to every meter."""
    if cost:
        for meter in meters:
            meter.spent += cost
