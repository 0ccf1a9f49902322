"""The loop node: its group of nodes runs round after round, until ``until:`` holds after a
round or ``max_rounds`` rounds have run.

Each round runs the group as a DAG (see ``Scheduler.run_round``), its nodes reading what the
loop's templates would, plus ``round`` (1, 2...) and ``previous`` (the round before's outputs by
node id; none in round 1). ``until:`` is evaluated after each round with the round's outputs.
A node of the round that fails (``on_error: fail``) fails the round, and so the loop; reaching
the cap succeeds with ``capped: true``, or fails with ``on_cap: fail``. Every finished round
stays in the output, also when the loop fails, times out or is cancelled.
"""

from __future__ import annotations

from flowengine.results import ErrorInfo, LoopResult
from flowengine.run.conditions import holds
from flowengine.run.context import NodeContext, NodeFailure
from flowengine.spec import LoopNode


async def run(ctx: NodeContext) -> LoopResult:
    node, spec = ctx.node, ctx.spec
    assert isinstance(spec, LoopNode)
    result = LoopResult()
    ctx.keep(result)
    for number in range(1, spec.max_rounds + 1):
        previous = result.last
        scope = {**ctx.scope, "round": number, "previous": previous}
        outputs, failure = await ctx.run_round(scope, number)
        result.rounds.append(outputs)
        result.last = outputs
        if failure is not None:
            result.stopped = "failure"
            message = f"round {number} of {spec.max_rounds} failed: {failure.message}"
            error = ErrorInfo(type=failure.type, status=failure.status, message=message)
            raise NodeFailure(error, output=result)
        if node.until is not None and _holds(ctx, scope, result):
            result.stopped = "condition"
            return result
    result.stopped, result.capped = "cap", True
    if spec.on_cap == "fail":
        until = f" before `until: {node.until.source}` held" if node.until is not None else ""
        message = f"loop reached max_rounds ({spec.max_rounds}){until}"
        raise NodeFailure(ErrorInfo(type="cap", message=message), output=result)
    return result


def _holds(ctx: NodeContext, scope: dict[str, object], result: LoopResult) -> bool:
    """Whether ``until:`` holds after a round (its outputs are in ``scope``); an error while
    evaluating it fails the loop, which keeps its rounds."""
    assert ctx.node.until is not None
    try:
        return holds(ctx.node.until, scope, f"nodes.{ctx.node.id}.until")
    except NodeFailure as exc:
        result.stopped = "failure"
        raise NodeFailure(exc.error, output=result) from None
