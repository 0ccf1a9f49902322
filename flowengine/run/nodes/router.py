"""The `llm` selector: a router model reads the question and the candidates and names one."""

from __future__ import annotations

import json
import re
from typing import Any

from flowengine.errors import CallError
from flowengine.run.context import NodeContext
from flowengine.spec import LlmSelector

_JSON_OBJECT = re.compile(r"\{[^{}]*\}", re.DOTALL)


async def route(
    ctx: NodeContext, name: str, selector: LlmSelector, candidates: list[str]
) -> tuple[str, dict[str, float]]:
    """The router's choice and, if it gave one, its confidence; CallError if it gave none."""
    template = ctx.router_template(name)
    content = template.render({**ctx.scope, "candidates": [ctx.models[a] for a in candidates]})
    params = {**ctx.workflow.defaults.params, **selector.params}
    result = await ctx.call(selector.model, [{"role": "user", "content": content}], params)
    if not result.success or result.content is None:
        message = result.error.message if result.error else "no answer"
        raise CallError("router", f"router model '{selector.model}' failed: {message}")
    return parse_choice(result.content, candidates)


def parse_choice(text: str, candidates: list[str]) -> tuple[str, dict[str, float]]:
    """``{"model": ..., "confidence": ...}`` from the answer, else the first candidate it names."""
    for match in _JSON_OBJECT.finditer(text):
        try:
            data: Any = json.loads(match.group(0))
        except ValueError:
            continue
        if isinstance(data, dict) and isinstance(data.get("model"), str):
            model: str = data["model"].strip()
            confidence = data.get("confidence")
            if (
                isinstance(confidence, int | float)
                and not isinstance(confidence, bool)
                and 0 <= confidence <= 1
            ):
                return model, {model: float(confidence)}
            return model, {}
    # Not JSON: the candidate named earliest in the text, longer names first on ties
    # ("gpt-4o-mini" before "gpt-4o").
    found = [(text.find(alias), -len(alias), alias) for alias in candidates if alias in text]
    if found:
        return min(found)[2], {}
    raise CallError("router", f"the router's answer names no candidate: {text[:120]!r}")
