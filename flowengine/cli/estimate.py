"""A dry run's estimate as text: a table of models, then what the figures rest on."""

from __future__ import annotations

from flowengine.run.budget import usd
from flowengine.run.dry_run import (
    CHARS_PER_TOKEN,
    DEFAULT_COMPLETION_TOKENS,
    Estimate,
    LoopWalk,
    NotRun,
    budget_text,
)
from flowengine.spec import Budget

HEADERS = ("model", "calls", "prompt tokens", "completion tokens (max)", "cost estimate")


def render_estimate(estimate: Estimate) -> str:
    lines = [_headline(estimate), "", *_table(estimate)]
    notes = [
        *_not_run(estimate),
        *_loops(estimate),
        *_prices(estimate),
        *_budgets(estimate),
        _tokens(estimate),
    ]
    return "\n".join([*lines, "", *notes])


def _headline(e: Estimate) -> str:
    head = f"Dry run of {e.workflow}: no model was called; every figure is an estimate."
    if e.rows is None:
        return head
    if e.scale == 1.0:
        return f"{head}\nWalked all {e.rows} rows to run."
    return (
        f"{head}\nWalked {e.runs} of the {e.rows} rows to run, evenly spread, and multiplied "
        f"the figures by {e.scale:.4g}."
    )


def _cost(cost: float | None, complete: bool = True) -> str:
    if cost is None:
        return "unknown"
    return usd(cost) if complete else f"at least {usd(cost)}"


def _table(e: Estimate) -> list[str]:
    rows = [
        (m.model, str(m.calls), str(m.prompt_tokens), str(m.completion_tokens_max), _cost(m.cost))
        for m in e.models
    ]
    total = (
        "total",
        str(e.calls),
        str(e.prompt_tokens),
        str(e.completion_tokens_max),
        _cost(e.cost, e.cost_complete),
    )
    widths = [max(len(row[i]) for row in (HEADERS, *rows, total)) for i in range(len(HEADERS))]

    def line(row: tuple[str, ...]) -> str:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return [line(HEADERS), rule, *(line(row) for row in rows), rule, line(total)]


def _not_run(e: Estimate) -> list[str]:
    if not e.not_run:
        return []
    single = e.rows is None
    head = "Not run in the stand-in run" if single else "Not run in some stand-in runs"
    lines = [f"{head} (stand-in answers: a real run may branch otherwise):"]
    for node_id, node in e.not_run.items():
        lines.append(f"  {node_id}: {_why(node, None if single else e.runs)}")
    return lines


def _why(node: NotRun, walked: int | None) -> str:
    where = "" if walked is None else f" in {node.runs} of {walked} walked rows"
    first = "" if walked is None else "first "
    return f"{node.status}{where} ({first}reason: {node.reason})"


def _loops(e: Estimate) -> list[str]:
    if not e.loops:
        return []
    lines = ["Loops, walked with stand-in answers:"]
    lines += [f"  {loop_id}: {_walk(walk)}" for loop_id, walk in e.loops.items()]
    return lines


def _walk(walk: LoopWalk) -> str:
    counted = f"{walk.rounds} of at most {walk.max_rounds} rounds counted"
    if walk.stopped == "condition":
        return (
            f"{counted}: `until:` held on the stand-in answers; a real run may take up to "
            f"{walk.max_rounds} rounds"
        )
    if walk.stopped == "cap":
        return f"{counted}: every round, the most a run takes"
    return f"{counted}: a round failed"


def _prices(e: Estimate) -> list[str]:
    """The models without a price, grouped by why (one line for a price list not had)."""
    why: dict[str, list[str]] = {}
    for m in e.models:
        if m.cost is None:
            why.setdefault(m.price_note or "no price", []).append(m.model)
    if not why:
        return []
    lines = ["No known price, so the total cost counts only the other models:"]
    lines += [f"  {', '.join(models)}: {note}" for note, models in why.items()]
    return lines


def _budgets(e: Estimate) -> list[str]:
    lines = []
    for cap, runs in e.over_budget.items():
        caps = budget_text(_only(e.budget, cap))
        if e.rows is None:
            lines.append(f"The run's budget ({caps}) would stop this run before its end.")
        else:
            lines.append(
                f"The workflow's budget ({caps}, per row) would stop {runs} of {e.runs} walked "
                "rows before their end."
            )
    if e.batch_budget is not None:
        for cap in e.batch_over_budget:
            caps = budget_text(_only(e.batch_budget, cap))
            lines.append(f"The batch's budget ({caps}) would stop the batch before its end.")
    return lines


def _only(budget: Budget, cap: str) -> Budget:
    return Budget.model_validate({cap: getattr(budget, cap)})


def _tokens(e: Estimate) -> str:
    text = (
        f"Prompt tokens: characters / {CHARS_PER_TOKEN} of the rendered messages. Completion "
        "tokens: each call's max_tokens, the most it may answer"
    )
    if e.uncapped_calls:
        here = f"{e.uncapped_calls} here"
        text += f"; each call without max_tokens ({here}) counts {DEFAULT_COMPLETION_TOKENS}"
    return text + ". Retries and repairs are not counted."
