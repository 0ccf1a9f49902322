"""Redis, where processes share provider limits and the response cache.

``FLOWENGINE_REDIS_URL`` turns sharing on (a provider's ``redis_url:`` overrides it for that
provider's rate limit); ``FLOWENGINE_CACHE=redis|sqlite`` picks the cache apart from it and
``FLOWENGINE_CACHE_TTL`` bounds a shared entry's life. :class:`SharedSettings` reads them, once,
for the engine.

A URL is shown only through :func:`redact`: a password never reaches a message or a log.
"""

from __future__ import annotations

import asyncio
import urllib.parse
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from flowengine.errors import ConfigError
from flowengine.spec.common import parse_duration

if TYPE_CHECKING:
    from redis.asyncio import Redis

REDIS_URL_ENV = "FLOWENGINE_REDIS_URL"
CACHE_ENV = "FLOWENGINE_CACHE"
CACHE_TTL_ENV = "FLOWENGINE_CACHE_TTL"

#: The URL schemes redis-py connects to.
SCHEMES = ("redis", "rediss", "unix")

#: How long a command may take before Redis counts as unreachable.
SOCKET_TIMEOUT = 5.0


def redact(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***`` (in the user part or the query).

    Example::

        >>> redact("redis://alice:s3cret@10.0.0.5:6379/0")
        'redis://alice:***@10.0.0.5:6379/0'
    """
    if password_of(url) is None:
        return url
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        name, has_password, _ = user.partition(":")
        netloc = f"{name}:***@{host}" if has_password else netloc
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if any(key == "password" for key, _ in query):
        hidden = [(k, "***" if k == "password" else v) for k, v in query]
        parts = parts._replace(query=urllib.parse.urlencode(hidden, safe="*"))
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def password_of(url: str) -> str | None:
    """The password in ``url``, for scrubbing it out of a third party's message."""
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    password = parts.password or query.get("password")
    return urllib.parse.unquote(password) if password else None


def check_url(url: str, origin: str) -> str:
    """``url`` if redis-py can connect to it; else ConfigError naming ``origin``."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise ConfigError(
            f"{origin}: {redact(url)!r} is not a Redis URL",
            "use redis://[user:password@]host:port/db, rediss://... (TLS) or unix:///path",
        )
    return url


@dataclass(frozen=True)
class SharedSettings:
    """What the environment says about sharing: the Redis URL, the cache's backend, its TTL."""

    redis_url: str | None = None
    cache: Literal["sqlite", "redis"] = "sqlite"
    cache_ttl: float | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> SharedSettings:
        url = environ.get(REDIS_URL_ENV) or None
        if url is not None:
            check_url(url, REDIS_URL_ENV)
        cache = environ.get(CACHE_ENV) or ("redis" if url else "sqlite")
        if cache not in ("sqlite", "redis"):
            raise ConfigError(
                f"{CACHE_ENV}={cache!r} is not a cache backend", "use redis or sqlite"
            )
        if cache == "redis" and url is None:
            raise ConfigError(
                f"{CACHE_ENV}=redis, but {REDIS_URL_ENV} is not set",
                f"set {REDIS_URL_ENV}=redis://host:6379/0, or {CACHE_ENV}=sqlite",
            )
        return cls(url, "redis" if cache == "redis" else "sqlite", _ttl(environ))


def _ttl(environ: Mapping[str, str]) -> float | None:
    text = environ.get(CACHE_TTL_ENV)
    if not text:
        return None
    try:
        seconds = float(parse_duration(text))
    except ValueError:
        seconds = 0.0
    if seconds <= 0:
        raise ConfigError(
            f"{CACHE_TTL_ENV}={text!r} is not a duration", "use a duration such as 30m, 24h"
        )
    return seconds


class RedisLink:
    """One Redis server, for every engine on an event loop: its client is made on first use
    and closed when the last engine using it leaves (:meth:`join`, :meth:`leave`).

    ``origin`` says where the URL came from (``FLOWENGINE_REDIS_URL``, or a provider's
    ``redis_url``), for error messages; ``shown`` is the URL without its password.
    """

    def __init__(self, url: str, origin: str) -> None:
        self.url = url
        self.origin = origin
        self.shown = redact(url)
        self.checked = False
        self._users = 0
        self._client: Redis | None = None

    @property
    def client(self) -> Redis:
        if self._client is None:
            try:
                from redis.asyncio import Redis
            except ImportError:
                raise ConfigError(
                    f"{self.origin} names a Redis, but the redis package is not installed",
                    "pip install 'flowengine[redis]'",
                ) from None
            self._client = Redis.from_url(
                self.url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT
            )
        return self._client

    def reason(self, exc: BaseException) -> str:
        """What went wrong talking to Redis, in one line without the password."""
        text = str(exc).strip().rstrip(".") or type(exc).__name__
        password = password_of(self.url)
        return text.replace(password, "***") if password else text

    def unreachable(self, exc: BaseException) -> ConfigError:
        """The error of a Redis that cannot be used, naming it and how to go on."""
        return ConfigError(
            f"cannot use Redis at {self.shown} ({self.origin}): {self.reason(exc)}",
            f"start Redis there, or correct {self.origin} (unset {REDIS_URL_ENV} to keep "
            "limits and cache in each process)",
        )

    async def check(self) -> None:
        """Ping once per link; ConfigError (see :meth:`unreachable`) when Redis cannot be used."""
        if self.checked:
            return
        from redis.exceptions import RedisError

        try:
            await self.client.ping()
        except (RedisError, OSError) as exc:
            raise self.unreachable(exc) from None
        self.checked = True

    def join(self) -> None:
        self._users += 1

    async def leave(self) -> None:
        self._users -= 1
        if self._users <= 0 and self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


# One link per URL and event loop (a client's connections belong to one loop), shared by the
# engines on it, so that the provider limits they share use one connection pool.
_LINKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, RedisLink]] = (
    weakref.WeakKeyDictionary()
)


def redis_link(url: str, origin: str) -> RedisLink:
    """The link to ``url`` on the running loop."""
    table = _LINKS.setdefault(asyncio.get_running_loop(), {})
    link = table.get(url)
    if link is None:
        link = table[url] = RedisLink(url, origin)
    return link
