"""Cost of a call from the provider's price list, when the API does not report ``usage.cost``.

The list (``GET {base_url}/models``, OpenRouter's shape: ``pricing.prompt`` and
``pricing.completion`` in USD per token) is fetched once per engine and kept in the store for a
day. When it cannot be had, the cost stays null: never a made-up number; a long-lived engine asks
again after a few minutes.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from flowengine.errors import CallError
from flowengine.results import Usage
from flowengine.store.db import Store

Prices = dict[str, tuple[float, float]]
Fetch = Callable[[], Awaitable[Any]]
MAX_AGE_S = 24 * 3600
# After a failed fetch, calls go unpriced for this long before the list is asked for again.
RETRY_FAILED_S = 300.0


def parse_prices(body: Any) -> Prices:
    """``{model_id: (per prompt token, per completion token)}`` from a /models reply."""
    prices: Prices = {}
    data = body.get("data") if isinstance(body, dict) else None
    for item in data if isinstance(data, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            continue
        pricing = item.get("pricing")
        if not isinstance(pricing, dict):
            continue
        try:
            price = (float(pricing["prompt"]), float(pricing["completion"]))
        except (KeyError, TypeError, ValueError):
            continue
        # OpenRouter lists "-1" for models whose price varies (its auto router); an infinite
        # or missing number is no price either. Their calls' cost stays unknown.
        if all(math.isfinite(p) and p >= 0 for p in price):
            prices[item["id"]] = price
    return prices


def cost_of(usage: Usage, price: tuple[float, float]) -> float | None:
    if usage.prompt_tokens is None or usage.completion_tokens is None:
        return None
    return round(usage.prompt_tokens * price[0] + usage.completion_tokens * price[1], 10)


class PriceBook:
    """Price lists by provider URL: from memory, else the store, else fetched once."""

    def __init__(self, store: Store | None) -> None:
        self.store = store
        self._lists: dict[str, Prices | None] = {}
        self._failed: dict[str, float] = {}  # base URL -> when its list could not be had
        self._locks: dict[str, asyncio.Lock] = {}

    async def cost(self, base_url: str, fetch: Fetch, model_id: str, usage: Usage) -> float | None:
        prices = await self._prices(base_url, fetch)
        price = prices.get(model_id) if prices else None
        return cost_of(usage, price) if price else None

    async def _prices(self, base_url: str, fetch: Fetch) -> Prices | None:
        if base_url in self._lists and not self._retry_due(base_url):
            return self._lists[base_url]
        async with self._locks.setdefault(base_url, asyncio.Lock()):
            if base_url not in self._lists or self._retry_due(base_url):
                found = self._stored(base_url) or await self._fetch(base_url, fetch)
                self._lists[base_url] = found
                if found is None:
                    self._failed[base_url] = time.monotonic()
                else:
                    self._failed.pop(base_url, None)
        return self._lists[base_url]

    def _retry_due(self, base_url: str) -> bool:
        failed = self._failed.get(base_url)
        return failed is not None and time.monotonic() - failed > RETRY_FAILED_S

    def _stored(self, base_url: str) -> Prices | None:
        if self.store is None:
            return None
        row = self.store.use(
            lambda db: db.execute(
                "SELECT fetched, value FROM prices WHERE base_url = ?", (base_url,)
            ).fetchone()
        )
        if row is None or time.time() - row[0] > MAX_AGE_S:
            return None
        try:
            return {str(k): (float(v[0]), float(v[1])) for k, v in json.loads(row[1]).items()}
        except (ValueError, TypeError, LookupError, AttributeError):
            return None  # a row this version cannot read: fetch the list again

    async def _fetch(self, base_url: str, fetch: Fetch) -> Prices | None:
        try:
            prices = parse_prices(await fetch())
        except CallError:  # no price list: the cost stays null, the run goes on
            return None
        if prices and self.store is not None:
            value = json.dumps(prices)
            self.store.write(
                lambda db: db.execute(
                    "INSERT OR REPLACE INTO prices VALUES (?, ?, ?)", (base_url, time.time(), value)
                )
            )
        return prices or None
