"""The response cache in Redis, shared by every process, worker and server replica using it.

Entries are ``flowengine:cache:<key>``, JSON values, with an optional TTL. While a process makes
a call, it holds ``flowengine:lock:<key>`` (``SET NX PX``, through redis-py's ``Lock``); the
same call in another process waits for the answer instead of asking the provider again
(:meth:`RedisCache.flight`).

Redis failing in the middle of a run never fails a call (as a bad SQLite file does not): a miss,
an answer not kept, a call made without waiting, and one warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from flowengine.providers.base import Completion
from flowengine.store.cache import CacheStats, decode_answer, encode_answer
from flowengine.store.redis_link import RedisLink

log = logging.getLogger("flowengine.store")

PREFIX = "flowengine:cache:"
LOCK_PREFIX = "flowengine:lock:"

#: How often a process waiting for another one's answer looks for it.
POLL_S = 0.05

#: What talking to Redis can raise (a timeout is an OSError).
FAILURES = (RedisError, OSError)


def encode(provider_url: str, model_id: str, completion: Completion) -> str:
    return encode_answer(completion, provider=provider_url, model_id=model_id, created=time.time())


class RedisCache:
    """The cache backend on Redis; ``ttl`` (seconds) bounds an entry's life, None keeps it.

    ``link`` gives the engine's link to Redis on the running loop.
    """

    def __init__(self, link: Callable[[], RedisLink], ttl: float | None = None) -> None:
        self._link = link
        self.ttl = ttl
        self._warned = False

    def _client(self) -> Redis:
        return self._link().client

    def _warn(self, doing: str, exc: BaseException) -> None:
        if not self._warned:
            self._warned = True
            link = self._link()
            log.warning("Redis at %s failed %s: %s", link.shown, doing, link.reason(exc))

    async def get(self, key: str) -> Completion | None:
        try:
            raw = await self._client().get(PREFIX + key)
        except FAILURES as exc:
            self._warn("to read the cache (a miss)", exc)
            return None
        return decode_answer(raw)

    async def put(self, key: str, provider_url: str, model_id: str, completion: Completion) -> None:
        expiry = None if self.ttl is None else max(1, round(self.ttl * 1000))
        try:
            await self._client().set(
                PREFIX + key, encode(provider_url, model_id, completion), px=expiry
            )
        except FAILURES as exc:
            self._warn("to keep an answer (not cached)", exc)

    @contextlib.asynccontextmanager
    async def flight(self, key: str, wait: float) -> AsyncIterator[Completion | None]:
        """Hold the key's lock while this process makes the call, or wait for the process
        holding it: its answer, or None when it ends without one or ``wait`` runs out."""
        lock = self._client().lock(
            LOCK_PREFIX + key,
            timeout=wait,
            blocking=False,
            thread_local=False,
            raise_on_release_error=False,
        )
        try:
            mine = await lock.acquire()
        except FAILURES as exc:
            self._warn("to lock a call (made without waiting)", exc)
            mine = None
        if mine is None:
            yield None
            return
        if not mine:
            yield await self._answer_of(key, wait)
            return
        try:
            # The process before may have kept its answer and let go just now.
            yield await self.get(key)
        finally:
            with contextlib.suppress(*FAILURES):
                await lock.release()

    async def _answer_of(self, key: str, wait: float) -> Completion | None:
        """Wait while another process holds the lock of ``key``: the answer it keeps, or None."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while loop.time() < deadline:
            await asyncio.sleep(POLL_S)
            try:
                value, holder = await self._client().mget([PREFIX + key, LOCK_PREFIX + key])
            except FAILURES as exc:
                self._warn("while waiting for another process's answer", exc)
                return None
            if value is not None:
                return decode_answer(value)
            if holder is None:
                return None  # it failed, or its answer is not one to keep: call yourself
        return None

    async def _keys(self) -> AsyncIterator[list[bytes]]:
        """Every entry's key, a few hundred at a time."""
        batch: list[bytes] = []
        async for found in self._client().scan_iter(match=PREFIX + "*", count=500):
            batch.append(found)
            if len(batch) == 500:
                yield batch
                batch = []
        if batch:
            yield batch

    async def stats(self) -> CacheStats:
        entries, size = 0, 0
        by_model: dict[str, int] = {}
        try:
            async for keys in self._keys():
                for raw in await self._client().mget(keys):
                    if raw is None:
                        continue  # expired since the scan
                    entries += 1
                    size += len(raw)
                    model = _model_of(raw)
                    by_model[model] = by_model.get(model, 0) + 1
        except FAILURES as exc:
            raise self._link().unreachable(exc) from None
        return CacheStats(self._link().shown, True, entries, size, by_model)

    async def clear(self) -> int:
        removed = 0
        try:
            async for keys in self._keys():
                removed += int(await self._client().unlink(*keys))
        except FAILURES as exc:
            raise self._link().unreachable(exc) from None
        return removed


def _model_of(raw: bytes | str) -> str:
    try:
        return str(json.loads(raw).get("model_id", "?"))
    except (ValueError, AttributeError):
        return "?"
