"""Structured answers: a call whose reply must be JSON that matches the node's schema.

One step for every node kind that asks a model for data (``llm``, ``fanout``, a judge): the
call, with the schema sent as ``response_format``; the reply parsed (one surrounding ```
fence tolerated) and validated. On invalid JSON or a mismatch, ONE repair call through the same
call path (so it is rate-limited, retried, priced, recorded and counted like any other) with the
conversation, the bad reply as the assistant's turn and a user turn stating the exact error.
Then the result carries the parsed value as ``data``, or fails saying what was wrong.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from flowengine.language.json_text import JsonTextError, parse_json_text
from flowengine.language.response_schemas import ResponseSchema
from flowengine.providers import Completion
from flowengine.results import CallResult, ErrorInfo
from flowengine.run.context import NodeContext


@dataclass(frozen=True)
class Mismatch:
    """Why an answer is not the data asked for: not JSON, or not matching the schema."""

    kind: Literal["json", "schema"]
    detail: str


def check_answer(text: str, response: ResponseSchema) -> tuple[Any, Mismatch | None]:
    """The data in an answer, or why there is none."""
    try:
        data = parse_json_text(text)
    except JsonTextError as exc:
        return None, Mismatch("json", str(exc))
    errors = response.errors(data)
    if errors:
        return None, Mismatch("schema", "; ".join(errors))
    return data, None


async def structured_call(
    ctx: NodeContext, alias: str, messages: list[dict[str, str]], response: ResponseSchema
) -> CallResult:
    """One structured answer of model ``alias``: a result with ``data``, or a failed result.

    A call that fails as a call (HTTP, timeout...) is returned as it is, with no repair.
    """
    params = {**ctx.params(alias), "response_format": response.response_format()}

    def cacheable(completion: Completion) -> bool:
        # An answer that is not the data asked for is not kept: the next run asks again.
        return check_answer(completion.content, response)[1] is None

    first = await ctx.call(alias, messages, params, cacheable=cacheable)
    if not first.success:
        return first
    first.data, mismatch = check_answer(first.content or "", response)
    if mismatch is None:
        return first
    conversation = [
        *messages,
        {"role": "assistant", "content": first.content or ""},
        {"role": "user", "content": repair_request(mismatch)},
    ]
    second = await ctx.call(alias, conversation, params, cacheable=cacheable)
    if not second.success:
        return second
    second.data, mismatch = check_answer(second.content or "", response)
    if mismatch is None:
        return second
    return _failed(ctx.node.id, second, mismatch)


def repair_request(mismatch: Mismatch) -> str:
    """The user turn that asks for the answer again, stating exactly what was wrong."""
    if mismatch.kind == "json":
        problem = f"Your reply is not valid JSON: {mismatch.detail}."
    else:
        problem = f"Your reply does not match the required JSON Schema: {mismatch.detail}."
    return f"{problem}\nReply again with the corrected JSON only, and no other text."


def _failed(node_id: str, result: CallResult, mismatch: Mismatch) -> CallResult:
    what = "is not JSON" if mismatch.kind == "json" else "does not match the schema"
    message = (
        f"nodes.{node_id}: the answer of model '{result.model}' {what}, "
        f"also after a repair request: {mismatch.detail}"
    )
    # A copy: the call itself succeeded, and stays so in the run's calls and metrics.
    return dataclasses.replace(
        result, success=False, data=None, error=ErrorInfo(type=mismatch.kind, message=message)
    )
