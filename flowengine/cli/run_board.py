"""What the live view shows of a run, kept up to date from its events alone.

Every node of the run has a line from the start (waiting); a node that makes calls has a line
under it for each model it calls (a fanout's models each their own), with the call's state,
its retries and their last reason, and whether the cache answered. Times come from ``clock``
(monotonic seconds), so that a test can drive them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from flowengine.events import Event
from flowengine.results import ErrorInfo

NodeState = Literal["waiting", "running", "done", "failed", "skipped", "cancelled", "not run"]
CallState = Literal["running", "retrying", "done", "failed", "cancelled"]

#: Control characters but tab: an error message or reason is shown on one line of a terminal,
#: and text from a server could otherwise move the cursor or retitle the window.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def clean(text: str) -> str:
    """``text`` fit for one line of a terminal: control characters become U+FFFD."""
    return _CONTROL.sub("\ufffd", text)


def why(error: ErrorInfo | None) -> str:
    """An error as ``type status: message``, as the progress lines write it."""
    if error is None:
        return "unknown error"
    status = f" {error.status}" if error.status is not None else ""
    return clean(f"{error.type}{status}: {error.message}")


@dataclass(slots=True)
class CallLine:
    """The latest call of one model by one node."""

    model: str
    started: float
    state: CallState = "running"
    duration: float | None = None
    retries: int = 0
    #: The last failed attempt's error, and when the attempt after it begins.
    last_error: str | None = None
    retry_at: float | None = None
    cached: bool = False
    error: str | None = None
    #: How many calls of this model the node has started (a loop or a repair calls again).
    count: int = 1


@dataclass(slots=True)
class NodeLine:
    node: str
    state: NodeState = "waiting"
    started: float | None = None
    duration: float | None = None
    #: Why the node was skipped, or what failed it.
    note: str | None = None
    #: A select node that fell back: the model it took, and why.
    fallback: tuple[str, str] | None = None
    calls: dict[str, CallLine] = field(default_factory=dict)


class Board:
    """A run's nodes and calls as the events tell them. Not thread-safe: the caller locks."""

    def __init__(
        self, workflow: str, nodes: Iterable[str], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.workflow = workflow
        self.clock = clock
        self.nodes = {node: NodeLine(node) for node in nodes}
        self.run_id: str | None = None
        self.started: float | None = None
        self.status: str | None = None  # set when the run is over
        self.duration: float | None = None

    def node(self, node_id: str) -> NodeLine:
        found = self.nodes.get(node_id)
        if found is None:  # not among the nodes the run was to take: shown after them
            found = self.nodes[node_id] = NodeLine(node_id)
        return found

    def on_event(self, event: Event) -> None:
        now = self.clock()
        kind = event.kind
        if kind == "run_started":
            self.run_id, self.started = event.run_id, now
        elif kind == "run_finished":
            self._finish_run(event, now)
        elif event.node is None:
            return  # a kind this view does not know
        elif kind.startswith("call_"):
            self._on_call(event, self.node(event.node), now)
        else:
            self._on_node(event, self.node(event.node), now)

    def _on_node(self, event: Event, line: NodeLine, now: float) -> None:
        kind = event.kind
        if kind == "node_started":
            line.state, line.started = "running", now
        elif kind == "node_finished":
            line.state, line.duration = "done", event.duration_s
        elif kind == "node_failed":
            line.state, line.duration = "failed", event.duration_s
            line.note = clean(event.error.message) if event.error else "failed"
            _stop_calls(line, now)  # a node that timed out cancelled the calls it had going
        elif kind == "node_skipped":
            line.state, line.note = "skipped", clean(event.reason or "")
        elif kind == "selector_fallback":
            line.fallback = (clean(event.model or "?"), clean(event.reason or ""))

    def _on_call(self, event: Event, line: NodeLine, now: float) -> None:
        calls = line.calls
        model = event.model or "?"
        call = calls.get(model)
        if event.kind == "call_started":
            count = call.count + 1 if call is not None else 1
            calls[model] = CallLine(model, now, count=count)
            return
        if call is None:  # a listener added mid-run: the call's start was not seen
            call = calls[model] = CallLine(model, now)
        if event.kind == "call_retried":
            call.state, call.retries = "retrying", call.retries + 1
            call.last_error = why(event.error)
            call.retry_at = now + (event.delay_s or 0.0)
        elif event.kind == "call_finished":
            call.state = "done" if event.status != "failed" else "failed"
            call.duration, call.cached = event.duration_s, bool(event.cached)
            call.error = why(event.error) if event.error else None

    def _finish_run(self, event: Event, now: float) -> None:
        """The run is over: what was still going on was stopped, what waited will not run."""
        cancelled = event.error is not None and event.error.type == "cancelled"
        self.status = "cancelled" if cancelled else event.status
        self.duration = event.duration_s
        for line in self.nodes.values():
            if line.state == "running":
                line.state = "cancelled"
                line.duration = now - (line.started or now)
            elif line.state == "waiting":
                line.state = "not run"
            _stop_calls(line, now)

    def elapsed(self, line: NodeLine | CallLine) -> float | None:
        """Seconds a node or call took, or has taken so far."""
        if line.duration is not None:
            return line.duration
        if line.started is None:
            return None
        return self.clock() - line.started

    def call_state(self, call: CallLine) -> CallState:
        """``retrying`` only while waiting for the next attempt; then it runs again."""
        if call.state == "retrying" and call.retry_at is not None and self.clock() >= call.retry_at:
            return "running"
        return call.state


def _stop_calls(line: NodeLine, now: float) -> None:
    """The node's calls still going are cancelled: they will not finish."""
    for call in line.calls.values():
        if call.state in ("running", "retrying"):
            call.state, call.duration = "cancelled", now - call.started
