"""Fixtures for provider tests: an aiohttp session and wire-level mocks (the fake server is
the suite's, from tests/conftest.py)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import aioresponses.core
import pytest
from aioresponses import aioresponses as Aioresponses


class _CompatResponse(aiohttp.ClientResponse):
    """aiohttp 3.14 requires ``stream_writer``, which aioresponses 0.7.x does not pass yet."""

    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


_NEEDS_COMPAT = "stream_writer" in inspect.signature(aiohttp.ClientResponse.__init__).parameters


@pytest.fixture
def mocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aioresponses]:
    """Mock every request of every ClientSession; nothing reaches a network."""
    if _NEEDS_COMPAT:
        monkeypatch.setattr(aioresponses.core, "ClientResponse", _CompatResponse)
    with Aioresponses() as mock:
        yield mock


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
