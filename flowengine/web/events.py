"""Each run's events, kept in a bounded log, and sent as server-sent events.

A run's log numbers its events from 1: the engine's events (:mod:`flowengine.events`: node and
call states, retries, fallbacks), ``token`` for each piece of a streamed answer, and last
``end`` with the run's final status. A client sees each as ``id: n``, ``event: kind`` and
``data: json``; one that reconnects with ``Last-Event-ID: n`` gets the events after ``n``
still in the log (the newest :data:`KEPT` of a run are). The stream of a finished run replays
what is kept and ends after ``end``; asked again from ``end`` on, it answers 204, which tells
a browser's EventSource to stop reconnecting.

Events carry data only: ids, states, durations, error messages, the answer's text. They are
kept as the engine made them and encoded only when a client reads them, so that a run nobody
watches pays for one append per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections import deque
from dataclasses import asdict
from typing import Any

from aiohttp import web

from flowengine.events import Event, TokenDelta

#: Events kept per run: enough for every event of a large run and a long streamed answer.
KEPT = 10_000

#: Seconds without an event after which the stream sends a comment, so that proxies and
#: browsers keep a quiet connection open.
KEEPALIVE_S = 15.0

Item = tuple[int, str, Any]


class EventLog:
    """One run's events in order, numbered from 1; the newest ``kept`` of them stay."""

    def __init__(self, kept: int = KEPT) -> None:
        self._items: deque[Item] = deque(maxlen=kept)
        self.last = 0
        self.ended = False
        self._changed: asyncio.Event | None = None

    def add(self, kind: str, payload: Any) -> None:
        self.last += 1
        self._items.append((self.last, kind, payload))
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def event(self, event: Event) -> None:
        self.add(event.kind, event)

    def token(self, delta: TokenDelta) -> None:
        self.add("token", delta)

    def end(self, status: str, run_id: str, error: Any = None) -> None:
        """The last event: the run's final status (and its error, if it has one)."""
        self.add("end", {"run_id": run_id, "status": status, "error": error})
        self.ended = True

    def after(self, seq: int) -> list[Item]:
        """The kept events numbered above ``seq``."""
        if not self._items:
            return []
        skip = max(0, seq - self._items[0][0] + 1)
        return list(itertools.islice(self._items, skip, None))

    async def wait(self, seq: int, timeout: float) -> bool:
        """Wait until there is an event after ``seq``; False if ``timeout`` passed first."""
        if self.last > seq or self.ended:
            return True
        if self._changed is None:
            self._changed = asyncio.Event()
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await changed.wait()
        return changed.is_set()


def data_of(payload: Any) -> dict[str, Any]:
    """An event's data as JSON-ready values, leaving out the fields that do not apply."""
    if isinstance(payload, Event | TokenDelta):
        return {k: v for k, v in asdict(payload).items() if v is not None}
    assert isinstance(payload, dict)
    return payload


def frame(seq: int, kind: str, payload: Any) -> bytes:
    """One server-sent event. JSON escapes newlines, so the data is one line."""
    return f"id: {seq}\nevent: {kind}\ndata: {json.dumps(data_of(payload))}\n\n".encode()


def last_event_id(request: web.Request) -> int:
    """The ``Last-Event-ID`` a reconnecting client sends; 0 when there is none (or junk)."""
    text = request.headers.get("Last-Event-ID", "").strip()
    return int(text) if text.isdigit() and len(text) < 12 else 0


async def stream_events(request: web.Request, log: EventLog) -> web.StreamResponse:
    """Send ``log``'s events after the client's ``Last-Event-ID`` as they come, to ``end``."""
    seen = last_event_id(request)
    if log.ended and seen >= log.last:
        return web.Response(status=204)  # nothing more will come: EventSource stops here
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx: pass each event on at once
        }
    )
    await response.prepare(request)
    try:
        while True:
            items = log.after(seen)
            if items:
                await response.write(b"".join(frame(*item) for item in items))
                seen = items[-1][0]
            if log.ended and seen >= log.last:
                break
            if not await log.wait(seen, KEEPALIVE_S):
                await response.write(b": keep-alive\n\n")
    except ConnectionResetError:  # the client went away: nothing to finish
        return response
    await response.write_eof()
    return response
