"""Events the executor emits while a run goes on; the CLI, a progress bar or a server listen.

Each model call is ``call_started`` (node, model, ``attempt`` 1), then ``call_retried`` for each
failed attempt that is tried again (its number, the error, the wait), then ``call_finished``; a
call answered by the cache starts and finishes with no request between.

Besides events, a streamed run sends :class:`TokenDelta` pieces of answers as they arrive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from flowengine.results import ErrorInfo

EventKind = Literal[
    "run_started",
    "node_started",
    "node_finished",
    "node_failed",
    "node_skipped",
    "call_started",
    "call_finished",
    "call_retried",
    "selector_fallback",
    "run_finished",
]


# Not frozen: a run makes about twenty, and a frozen dataclass takes three times as long to build.
@dataclass(slots=True)
class Event:
    """Something that happened in a run. Fields that do not apply to a kind are None."""

    kind: EventKind
    run_id: str
    workflow: str
    node: str | None = None
    model: str | None = None
    attempt: int | None = None
    delay_s: float | None = None
    duration_s: float | None = None
    status: str | None = None
    error: ErrorInfo | None = None
    cached: bool | None = None
    reason: str | None = None


Listener = Callable[[Event], None]


@dataclass(slots=True)
class TokenDelta:
    """A piece of a streamed answer, as it arrives: which node, which model alias, the text.

    The pieces of one call, joined, are its answer's ``content``. Only the nodes a run streams
    (see :meth:`flowengine.Engine.stream`) send them.
    """

    node: str
    model: str
    text: str


TokenListener = Callable[[TokenDelta], None]
