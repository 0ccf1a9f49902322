"""The runs a server started: each one's task, its events so far, its node states, its result.

Every run of the server (a chat completion or ``POST /api/runs``) goes through one
:class:`Runs`, over the server's one engine, so limits, cache and run records are shared. The
runs in flight stay until they end; of the finished ones the newest :data:`KEEP` stay in memory,
for their event streams (older ones are read from the run records).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from flowengine.events import Event, TokenDelta
from flowengine.language.workflow import Workflow
from flowengine.results import ErrorInfo, RunResult
from flowengine.run.context import new_run_id
from flowengine.run.engine import Engine, stream_nodes
from flowengine.web.events import EventLog

log = logging.getLogger("flowengine.web")

#: Finished runs kept in memory, with their events.
KEEP = 256


@dataclass(eq=False)
class LiveRun:
    """A run the server started. ``status`` is ``running`` until it ends, then the result's
    status, or ``cancelled`` (the server stopped it) or ``failed`` (it could not run)."""

    run_id: str
    workflow: Workflow
    started_at: str
    events: EventLog = field(default_factory=EventLog)
    status: str = "running"
    result: RunResult | None = None
    #: Why the run could not run at all (it raised instead of returning a result).
    error: ErrorInfo | None = None
    #: Each node's state so far: ``{status, duration_s, error, reason}``, from the events.
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None

    def on_event(self, event: Event) -> None:
        self.events.event(event)
        if event.node is not None and event.kind.startswith("node_"):
            state = event.kind.removeprefix("node_")
            self.nodes[event.node] = {
                "status": "running" if state == "started" else event.status or state,
                "duration_s": event.duration_s,
                "error": asdict(event.error) if event.error else None,
                "reason": event.reason,
            }

    def finish(self, status: str, result: RunResult | None, error: ErrorInfo | None) -> None:
        self.status, self.result, self.error = status, result, error
        final_error = error or (result.error if result is not None else None)
        self.events.end(status, self.run_id, asdict(final_error) if final_error else None)

    async def done(self) -> None:
        """Wait until the run has ended (this never cancels it)."""
        if self.task is not None:
            await asyncio.wait([self.task])


class Runs:
    """Starts runs on the server's engine and keeps them while they run, and a while after."""

    def __init__(self, engine: Engine, keep: int = KEEP) -> None:
        self.engine = engine
        self.keep = keep
        self.closing = False
        self._runs: dict[str, LiveRun] = {}  # oldest first
        self._finished: deque[str] = deque()  # oldest first

    def get(self, run_id: str) -> LiveRun | None:
        return self._runs.get(run_id)

    def in_memory(self) -> list[LiveRun]:
        """The runs kept in memory, newest first."""
        return list(reversed(self._runs.values()))

    def start(
        self,
        workflow: Workflow,
        inputs: dict[str, Any],
        *,
        stream: bool = True,
        on_token: Callable[[TokenDelta], None] | None = None,
    ) -> LiveRun:
        """Start a run of ``workflow`` with bound ``inputs`` and return it at once.

        ``stream`` streams its answer's pieces into its events (and to ``on_token``).
        """
        started = datetime.now(UTC).isoformat()
        live = LiveRun(new_run_id(), workflow, started)
        streamed = stream_nodes(workflow, None) if stream else []
        live.task = asyncio.create_task(self._run(live, inputs, streamed, on_token))
        self._runs[live.run_id] = live
        return live

    async def _run(
        self,
        live: LiveRun,
        inputs: dict[str, Any],
        streamed: list[str],
        on_token: Callable[[TokenDelta], None] | None,
    ) -> None:
        def token(delta: TokenDelta) -> None:
            live.events.token(delta)
            if on_token is not None:
                on_token(delta)

        try:
            result = await self.engine.run(
                live.workflow,
                inputs,
                run_id=live.run_id,
                listeners=[live.on_event],
                on_token=token if streamed else None,
                streamed=streamed,
            )
        except asyncio.CancelledError:
            # What finished is recorded by the engine (status failed, error cancelled).
            live.finish(
                "cancelled", None, ErrorInfo(type="cancelled", message="the run was cancelled")
            )
            raise
        except Exception as exc:  # a plugin's error, a missing key: the run could not start
            log.warning("run %s of %s could not run: %s", live.run_id, live.workflow.name, exc)
            live.finish("failed", None, ErrorInfo(type=type(exc).__name__, message=str(exc)))
        else:
            live.finish(result.status, result, None)
        finally:
            self._retire(live)

    def _retire(self, live: LiveRun) -> None:
        """Keep the newest ``keep`` finished runs; runs in flight always stay."""
        self._finished.append(live.run_id)
        while len(self._finished) > self.keep:
            self._runs.pop(self._finished.popleft(), None)

    def running(self) -> list[LiveRun]:
        return [r for r in self._runs.values() if r.status == "running"]

    async def shutdown(self, grace: float) -> None:
        """Start no more runs; let those in flight finish within ``grace`` seconds, then
        cancel the rest, whose finished parts the engine records."""
        self.closing = True
        tasks = [r.task for r in self.running() if r.task is not None]
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=grace)
        if late:
            log.warning("cancelling %d run(s) still running after %gs", len(late), grace)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
