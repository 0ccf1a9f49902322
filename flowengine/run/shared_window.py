"""A provider's rate limit kept in Redis, so that every process calling it counts against one
limit: the same promise as :func:`~flowengine.run.resilience.make_limiter`, across processes.

The window is a sorted set of start times, trimmed and counted by one Lua script that either
admits a start or says how long to wait; the clock is the Redis server's, so processes on
machines whose clocks differ still agree. Within a process, waiters take turns to ask Redis,
each sleeping as long as the window says: there is no busy loop.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid

from flowengine.errors import CallError
from flowengine.spec import Rate
from flowengine.store.redis_link import RedisLink

#: Admit one start, or return how many microseconds to wait. Two rules, as the local limiter's:
#: at most ``limit`` starts in any window of ``window`` µs, and at most ``burst`` in any window
#: of ``spacing`` µs (``burst`` of 1, the default, spreads the starts evenly).
#: KEYS[1]: the window; ARGV: limit, window, burst, spacing, a unique member.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit, window = tonumber(ARGV[1]), tonumber(ARGV[2])
local burst, spacing = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local wait = 0
local count = redis.call('ZCARD', KEYS[1])
if count >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], count - limit, count - limit, 'WITHSCORES')
  wait = tonumber(oldest[2]) + window - now
end
-- string.format: Lua's own number-to-text keeps 14 digits, too few for microseconds
if redis.call('ZCOUNT', KEYS[1], string.format('(%d', now - spacing), '+inf') >= burst then
  local recent = redis.call('ZREVRANGE', KEYS[1], burst - 1, burst - 1, 'WITHSCORES')
  wait = math.max(wait, tonumber(recent[2]) + spacing - now)
end
if wait > 0 then
  return math.ceil(wait)
end
redis.call('ZADD', KEYS[1], now, ARGV[5])
redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1000)
return 0
"""


class SharedWindow:
    """At most ``rate.requests`` starts in any window of ``window`` seconds, counted in Redis
    under ``key`` by every process that uses the same key.

    ``window`` is ``rate.per`` with the margin the local limiter keeps too. Raises a retryable
    :class:`CallError` when Redis cannot be reached: a call never starts unlimited.

    Example::

        window = SharedWindow(link, "flowengine:limit:openrouter", Rate(requests=20, per=1.0), 1.02)
        await window.acquire()
    """

    def __init__(self, link: RedisLink, key: str, rate: Rate, window: float) -> None:
        self.link = link
        self.key = key
        burst = rate.burst or 1
        micros = round(window * 1_000_000)
        self.args = [rate.requests, micros, burst, micros * burst // rate.requests]
        self._members = (f"{uuid.uuid4().hex}:{n}" for n in itertools.count())
        self._turn = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait until a start is admitted, then count it."""
        async with self._turn:  # one waiter of this process asks Redis at a time, in order
            while (wait := await self._try()) > 0:
                await asyncio.sleep(wait / 1_000_000)

    async def _try(self) -> int:
        from redis.exceptions import RedisError

        client = self.link.client
        try:
            # EVALSHA, loading the script on the first call to this server.
            script = client.register_script(ACQUIRE)
            return int(await script(keys=[self.key], args=[*self.args, next(self._members)]))
        except (RedisError, OSError) as exc:
            raise CallError(
                "limits",
                f"the shared rate limit cannot be checked: Redis at {self.link.shown} "
                f"({self.link.origin}): {self.link.reason(exc)}",
                retryable=True,
            ) from None
