"""Functions that the python nodes of the tests call by import path (`tests.functions:name`)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

#: The thread each sync function last ran in, by name.
THREADS: dict[str, threading.Thread] = {}


def word_count(primary: dict[str, Any]) -> dict[str, Any]:
    """Sync: counts the words of an llm node's answer, given as JSON data."""
    THREADS["word_count"] = threading.current_thread()
    words = str(primary["content"]).split()
    return {"words": len(words), "model": primary["model"], "first": words[0]}


async def shout(text: str, times: int = 1) -> str:
    await asyncio.sleep(0)
    return " ".join([text.upper()] * times)


def boom(**_: Any) -> None:
    raise ValueError("no good")


def a_set(**_: Any) -> set[int]:
    return {1, 2}


def not_a_number() -> float:
    return float("nan")


def pair() -> tuple[int, int]:
    return (1, 2)


def two_params(first: Any, second: Any) -> None:
    return None


CONSTANT = 42
