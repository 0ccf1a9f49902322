"""The judge node: one model, or a panel of them, scores another node's answers on criteria.

The answers that succeeded are listed by letter in one prompt (the answers as data). Each judge
is asked, through the structured call (so a bad reply gets one repair request), for JSON whose
schema the criteria, the letters and the scale make: a reason and a score per criterion for
every answer. A judge that fails is left out and named in the output; if every judge fails, the
node fails. Each judged answer's result gets its ``quality``: its mean score from 0 to 1.
"""

from __future__ import annotations

import asyncio
from typing import Any

from flowengine.language.judging import Candidate
from flowengine.language.response_schemas import ResponseSchema
from flowengine.language.templates import evaluate_value
from flowengine.results import CallResult, ErrorInfo, JudgedAnswer, JudgeResult, Verdict
from flowengine.rubric import reply_schema
from flowengine.run.context import NodeContext, NodeFailure
from flowengine.run.nodes.common import alias_of
from flowengine.run.nodes.fanout import chosen_models
from flowengine.run.structured import structured_call
from flowengine.spec import JudgeNode


async def run(ctx: NodeContext) -> JudgeResult:
    spec = ctx.spec
    assert isinstance(spec, JudgeNode)
    output = ctx.scope.get(spec.target)
    if output is None:
        # Skipped (its `when:` or --skip), or failed before any call under on_error: continue.
        message = (
            f"node '{spec.target}' has nothing to judge: it was skipped, or failed before its "
            f"first call; to judge it only when it answers, give '{ctx.node.id}' "
            f"`when: {spec.target} is not none`"
        )
        raise NodeFailure(ErrorInfo(type="judge", message=message))
    answers = judged_answers(output)
    if not answers:
        message = f"node '{spec.target}' has no answer to judge: none of its calls succeeded"
        raise NodeFailure(ErrorInfo(type="judge", message=message))
    judges = _judges(ctx, spec)
    letters = [letter(i) for i in range(len(answers))]
    sent = _messages(ctx, spec, answers, letters)
    schema = reply_schema(spec.criteria, spec.scale, letters)
    response = ResponseSchema.of(ctx.node.id, schema)
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(structured_call(ctx, a, sent, response)) for a in judges]
    calls = [task.result() for task in tasks]
    replies = [call for call in calls if call.success]
    failed = {call.model: call.error for call in calls if call.error is not None}
    if not replies:
        reasons = "; ".join(f"{model}: {error.message}" for model, error in failed.items())
        message = f"every judge failed ({reasons})"
        raise NodeFailure(ErrorInfo(type="judge", message=message), output=calls)
    result = tally(spec, dict(zip(letters, answers, strict=True)), replies)
    result.failed_judges = failed
    return result


def judged_answers(output: Any) -> list[CallResult]:
    """The answers of a target node's output that can be judged: the calls that succeeded."""
    found = output if isinstance(output, list) else [output]
    return [r for r in found if isinstance(r, CallResult) and r.success and r.content is not None]


def letter(index: int) -> str:
    """A, B, ..., Z, AA, AB, ...: how the prompt names the ``index``-th answer."""
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(ord("A") + rest) + name
    return name


def _judges(ctx: NodeContext, spec: JudgeNode) -> list[str]:
    where = f"nodes.{ctx.node.id}"
    if spec.models is None:
        return [alias_of(ctx, evaluate_value(ctx.node.model, ctx.scope), f"{where}.model")]
    judges = chosen_models(ctx, spec.models.top)
    if not judges:
        raise NodeFailure(ErrorInfo(type="judge", message=f"{where}.models chose no model"))
    return judges


def _messages(
    ctx: NodeContext, spec: JudgeNode, answers: list[CallResult], letters: list[str]
) -> list[dict[str, str]]:
    """The judge's chat messages, each turn rendered with the answers as data."""
    node = ctx.node
    scope = {**ctx.scope}
    if node.vars:
        scope.update(evaluate_value(node.vars, scope))
    question = evaluate_value(node.question, scope) if node.question is not None else ""
    scope["question"] = str(question)
    scope["candidates"] = [
        Candidate(name, answer.model, answer.content or "")
        for name, answer in zip(letters, answers, strict=True)
    ]
    scope["criteria"] = [{"name": c.name, "description": c.description} for c in spec.criteria]
    scope["scale"] = {"low": spec.scale[0], "high": spec.scale[1]}
    return [{"role": turn.role, "content": turn.content.render(scope)} for turn in node.messages]


def tally(
    spec: JudgeNode, answers: dict[str, CallResult], replies: list[CallResult]
) -> JudgeResult:
    """Scores averaged over the judges, then over the criteria; answers ranked by that mean.

    Ties go to the answer listed first (a fanout lists its models by weight). Each answer's
    result gets its ``quality``: the mean score from 0 (the scale's lowest) to 1 (its highest).
    """
    low, high = spec.scale
    names = [c.name for c in spec.criteria]
    scored = [_scored(name, answer, names, replies) for name, answer in answers.items()]
    # Rounded to compare: means of the same scores added in another order are equal.
    scored.sort(key=lambda judged: -round(judged.score, 9))  # stable: ties keep their order
    for rank, judged in enumerate(scored, 1):
        judged.rank = rank
        judged.quality = round((judged.score - low) / (high - low), 4)
        judged.score = round(judged.score, 4)
        answers[judged.letter].quality = judged.quality
    best = answers[scored[0].letter]
    return JudgeResult(
        best=best,
        ranking=[judged.model for judged in scored],
        candidates=scored,
        criteria=names,
        scale=spec.scale,
        judges=[reply.model for reply in replies],
    )


def _scored(
    name: str, answer: CallResult, criteria: list[str], replies: list[CallResult]
) -> JudgedAnswer:
    """One answer's verdicts, each criterion's mean over the judges, and their mean (unranked)."""
    verdicts = [
        Verdict(
            judge=reply.model,
            scores={c: reply.data[name]["scores"][c] for c in criteria},
            reason=reply.data[name]["reason"],
        )
        for reply in replies
    ]
    means = {c: sum(v.scores[c] for v in verdicts) / len(verdicts) for c in criteria}
    return JudgedAnswer(
        letter=name,
        model=answer.model,
        rank=0,
        score=sum(means.values()) / len(means),
        quality=0.0,
        scores={c: round(m, 4) for c, m in means.items()},
        verdicts=verdicts,
    )
