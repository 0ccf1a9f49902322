"""A flowengine plugin: ``type: echo`` answers with the question; ``type: shout`` upper-cases."""

from __future__ import annotations

from typing import Any


def echo(messages: list[dict[str, str]]) -> str:
    return "echo: " + messages[-1]["content"]


async def shout(ctx: Any) -> str:
    return str(ctx.evaluate(ctx.config["text"])).upper()
