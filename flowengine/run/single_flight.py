"""Single flight: identical calls at the same time make one request, the others take its answer.

Within a process, the calls in flight are kept by cache key; across processes, the cache
backend's :meth:`~flowengine.store.backend.CacheBackend.flight` does the same through a lock
(Redis), or nothing (SQLite, one machine's file). Only calls that use the cache take part: a
call that bypasses it asks for a fresh answer on purpose. A call that fails, or whose answer is
not kept, gives nothing: the calls that waited for it make their own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from flowengine.providers import Completion
from flowengine.store.backend import CacheBackend


@dataclass
class Flight:
    """One call's turn: ``answer`` is someone else's (the cache's, another call's), or None,
    and then the call is made and its kept answer set here for the calls waiting for it."""

    answer: Completion | None = None


class Flights:
    """The cached calls in flight in this process, by cache key.

    Example::

        async with flights.once(cache, key, wait=60.0) as flight:
            if flight.answer is None:
                completion = await make_the_call()
                await cache.put(key, url, model_id, completion)
                flight.answer = completion
    """

    def __init__(self) -> None:
        self._running: dict[str, asyncio.Future[Completion | None]] = {}

    @contextlib.asynccontextmanager
    async def once(self, cache: CacheBackend, key: str, wait: float) -> AsyncIterator[Flight]:
        """The answer of the cache or of an identical call in flight, waiting for it at most
        ``wait`` seconds when another process makes it; else a flight for this call to make."""
        running = self._running.get(key)
        if running is not None:
            # Shielded: a waiter cancelled does not cancel the answer the others wait for.
            yield Flight(await asyncio.shield(running))
            return
        done: asyncio.Future[Completion | None] = asyncio.get_running_loop().create_future()
        self._running[key] = done
        flight = Flight()
        try:
            flight.answer = await cache.get(key)
            if flight.answer is not None:
                yield flight
            else:
                async with cache.flight(key, wait) as answer:
                    flight.answer = answer
                    yield flight
        finally:
            del self._running[key]
            done.set_result(flight.answer)
