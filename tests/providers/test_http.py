"""The status taxonomy, Retry-After parsing and body excerpts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from flowengine.providers.http import (
    RETRY_AFTER_CAP,
    is_retryable_status,
    parse_retry_after,
    snippet,
)


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 502, 503, 504, 599])
def test_retryable_statuses(status: int) -> None:
    assert is_retryable_status(status)


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 410, 413, 418, 422, 200, 301])
def test_statuses_never_retried(status: int) -> None:
    assert not is_retryable_status(status)


def test_retry_after_seconds() -> None:
    assert parse_retry_after({"Retry-After": "7"}) == 7.0
    assert parse_retry_after({"Retry-After": " 1.5 "}) == 1.5


def test_retry_after_http_date() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"Retry-After": header}, now=now) == 30.0


def test_retry_after_in_the_past_is_zero() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    header = format_datetime(now - timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"Retry-After": header}, now=now) == 0.0
    assert parse_retry_after({"Retry-After": "-5"}) == 0.0


def test_retry_after_is_capped_and_garbage_ignored() -> None:
    assert parse_retry_after({"Retry-After": "86400"}) == RETRY_AFTER_CAP
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({"Retry-After": "nan"}) is None
    assert parse_retry_after({}) is None


def test_retry_after_ms_wins() -> None:
    assert parse_retry_after({"retry-after-ms": "250", "Retry-After": "9"}) == 0.25


def test_snippet_is_short_single_line_and_drops_html() -> None:
    assert snippet("<html><body><h1>502 Bad Gateway</h1></body></html>") == "502 Bad Gateway"
    long = snippet("x" * 1000)
    assert len(long) == 200 and long.endswith("…")
    assert snippet("a\n  b\tc") == "a b c"
