"""Where the response cache keeps answers: the interface, and the default SQLite backend.

Two backends: :class:`SqliteCache` (the default: one machine's file, through
:class:`~flowengine.store.cache.ResponseCache`) and
:class:`~flowengine.store.redis_cache.RedisCache` (shared by every process that uses the same
Redis). The call path uses only :class:`CacheBackend`.
"""

from __future__ import annotations

import contextlib
from typing import Protocol

from flowengine.providers.base import Completion
from flowengine.store.cache import CacheStats, ResponseCache


class CacheBackend(Protocol):
    """Get and put successful answers by cache key; what ``flowengine cache`` shows and clears."""

    async def get(self, key: str) -> Completion | None:
        """The answer kept under ``key``, or None."""

    async def put(self, key: str, provider_url: str, model_id: str, completion: Completion) -> None:
        """Keep ``completion`` under ``key``; it is never an error."""

    def flight(
        self, key: str, wait: float
    ) -> contextlib.AbstractAsyncContextManager[Completion | None]:
        """``async with backend.flight(key, wait) as answer:`` — while another process makes
        the same call, wait for its answer (at most ``wait`` seconds) and give it; else None,
        and this process makes the call, other processes waiting until the block ends."""

    async def stats(self) -> CacheStats: ...

    async def clear(self) -> int:
        """Delete every entry; return how many there were."""


class SqliteCache:
    """The default backend: this machine's SQLite file. It knows no other process's calls, so
    :meth:`flight` never waits."""

    def __init__(self, cache: ResponseCache) -> None:
        self.cache = cache

    async def get(self, key: str) -> Completion | None:
        return self.cache.get(key)

    async def put(self, key: str, provider_url: str, model_id: str, completion: Completion) -> None:
        self.cache.put(key, provider_url, model_id, completion)

    def flight(
        self, key: str, wait: float
    ) -> contextlib.AbstractAsyncContextManager[Completion | None]:
        return contextlib.nullcontext()

    async def stats(self) -> CacheStats:
        return self.cache.stats()

    async def clear(self) -> int:
        return self.cache.clear()
