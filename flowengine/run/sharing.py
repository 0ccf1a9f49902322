"""What an engine shares with other processes through Redis: provider rate limits, the cache.

The one place that turns the settings (:class:`~flowengine.store.redis_link.SharedSettings`,
from the environment, and a provider's ``redis_url:``) into limiters and a cache backend: a CLI
run, a batch worker or a server replica shares by constructing an Engine, nothing else.

Redis that cannot be reached stops a run before its first call (:meth:`Sharing.check`); one
that fails later fails the calls that needed the shared limit, never lets them start unlimited.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from flowengine.run.resilience import WINDOW_MARGIN
from flowengine.run.shared_window import SharedWindow
from flowengine.spec import OpenAIProvider, ProviderBase
from flowengine.store.backend import CacheBackend, SqliteCache
from flowengine.store.cache import ResponseCache
from flowengine.store.db import Store
from flowengine.store.redis_link import REDIS_URL_ENV, RedisLink, SharedSettings, redact, redis_link

if TYPE_CHECKING:
    from flowengine.store.redis_cache import RedisCache


def window_key(spec: ProviderBase, name: str) -> str:
    """Where a provider's window is kept. Processes share it when they call the same URL with
    the same key variable and the same rate (a different rate is a different promise)."""
    rate = spec.rate_limit
    assert rate is not None
    if isinstance(spec, OpenAIProvider):
        where = f"{redact(spec.base_url)}:{spec.api_key_env or ''}"
    else:
        where = f"{getattr(spec, 'type', '?')}:{name}"
    return f"flowengine:limit:{where}:{rate.requests}/{rate.per:g}s:{rate.burst or 1}"


class Sharing:
    """An engine's links to Redis, joined as its runs need them and left when it closes."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.settings = SharedSettings.from_environ(environ)
        self._links: dict[str, RedisLink] = {}

    def link(self, url: str, origin: str) -> RedisLink:
        """The link to ``url`` on the running loop, joined once by this engine."""
        found = self._links.get(url)
        if found is None:
            found = self._links[url] = redis_link(url, origin)
            found.join()
        return found

    def cache(self, store: Store) -> CacheBackend:
        """The cache backend the settings choose: Redis, or the SQLite file of ``store``."""
        return self.redis_cache() or SqliteCache(ResponseCache(store))

    def redis_cache(self) -> RedisCache | None:
        """The cache on Redis, when the settings share it; else None."""
        url = self.settings.redis_url
        if self.settings.cache != "redis" or url is None:
            return None
        from flowengine.store.redis_cache import RedisCache

        return RedisCache(lambda: self.link(url, REDIS_URL_ENV), self.settings.cache_ttl)

    def limit_url(self, name: str, spec: ProviderBase) -> tuple[str, str] | None:
        """The Redis URL that keeps ``spec``'s rate limit and where it was set, or None."""
        if spec.rate_limit is None:
            return None
        if spec.redis_url is not None:
            return spec.redis_url, f"providers.{name}.redis_url"
        if self.settings.redis_url is not None:
            return self.settings.redis_url, REDIS_URL_ENV
        return None

    def window(self, name: str, spec: ProviderBase) -> SharedWindow | None:
        """The shared window of provider ``name``, or None when its limit is this process's."""
        found = self.limit_url(name, spec)
        if found is None or spec.rate_limit is None:
            return None
        link = self.link(*found)
        window = spec.rate_limit.per * (1 + WINDOW_MARGIN)
        return SharedWindow(link, window_key(spec, name), spec.rate_limit, window)

    async def check(self, providers: Mapping[str, ProviderBase], cache: bool) -> None:
        """Ping each Redis that the calls of these providers (and the cache, if ``cache`` and
        it is on Redis) need; ConfigError naming the first that cannot be used."""
        links: list[RedisLink] = []
        for name, spec in providers.items():
            found = self.limit_url(name, spec)
            if found is not None:
                links.append(self.link(*found))
        if cache and self.settings.cache == "redis" and self.settings.redis_url is not None:
            links.append(self.link(self.settings.redis_url, REDIS_URL_ENV))
        for link in dict.fromkeys(links):
            await link.check()

    async def aclose(self) -> None:
        links: Iterable[RedisLink] = list(self._links.values())
        self._links.clear()
        for link in links:
            await link.leave()
