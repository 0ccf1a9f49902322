"""The response cache: successful calls keyed by provider, model, messages and params.

Errors are never cached. A hit costs no request, no tokens and no money; it is marked
``cached: true`` and counted apart in the metrics.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from flowengine.providers.base import ChatRequest, Completion, utf8
from flowengine.results import Usage
from flowengine.store.db import Store

#: What a key hashes besides the messages, in a canonical form (one encoder for every call).
_KEY_HEAD = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def cache_key(provider_url: str, request: ChatRequest) -> str:
    """SHA-256 over everything that decides the answer; the API key is not part of it."""
    head = _KEY_HEAD.encode([provider_url, request.model_id, request.params])
    return hashlib.sha256(utf8(f"{head}\n{request.encoded_messages()}")).hexdigest()


def usage_dict(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "cost": usage.cost,
    }


#: One encoder for every answer kept (``json.dumps`` with options would build one per call).
_ANSWER = json.JSONEncoder(ensure_ascii=False)


def encode_answer(completion: Completion, **more: Any) -> str:
    """A cached answer as JSON (``more``: fields a backend keeps beside it)."""
    return _ANSWER.encode(
        {
            **more,
            "content": completion.content,
            "served_model": completion.served_model,
            "finish_reason": completion.finish_reason,
            "usage": usage_dict(completion.usage),
            "tool_calls": completion.tool_calls,
        }
    )


def decode_answer(raw: bytes | str | None) -> Completion | None:
    """The answer :func:`encode_answer` wrote; None for none, or for one this version cannot
    read (a miss, not a failure)."""
    if raw is None:
        return None
    try:
        data: dict[str, Any] = json.loads(raw)
        return Completion(
            content=data["content"],
            served_model=data.get("served_model"),
            finish_reason=data.get("finish_reason"),
            usage=Usage(**(data.get("usage") or {})),
            tool_calls=data.get("tool_calls"),
        )
    except (ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class CacheStats:
    path: str
    enabled: bool
    entries: int
    size_bytes: int
    by_model: dict[str, int]


class ResponseCache:
    """Get and put completions in the store's ``cache`` table."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # Answers put but not yet written by the store's writer: a call made meanwhile must
        # still find them.
        self._pending: dict[str, Completion] = {}

    def get(self, key: str) -> Completion | None:
        pending = self._pending.get(key)
        if pending is not None:
            return pending
        row = self.store.use(
            lambda db: db.execute("SELECT value FROM cache WHERE key = ?", (key,)).fetchone()
        )
        if row is None:
            return None
        return decode_answer(row[0])

    def put(self, key: str, provider_url: str, model_id: str, completion: Completion) -> None:
        if not self.store.enabled:
            return
        created = time.time()
        self._pending[key] = completion

        def insert(db: sqlite3.Connection) -> None:
            value = encode_answer(completion)  # by the store's writer thread: off the event loop
            db.execute(
                "INSERT OR REPLACE INTO cache (key, provider, model_id, created, value) "
                "VALUES (?, ?, ?, ?, ?)",
                (key, provider_url, model_id, created, value),
            )

        # Pending until committed: a reader on another connection sees it only then.
        self.store.write(insert, after=lambda: self._forget(key))

    def _forget(self, key: str) -> None:
        self._pending.pop(key, None)

    def stats(self) -> CacheStats:
        def read(db: Any) -> tuple[int, dict[str, int]]:
            rows = db.execute("SELECT model_id, COUNT(*) FROM cache GROUP BY model_id").fetchall()
            by_model = {str(m): int(n) for m, n in rows}
            return sum(by_model.values()), by_model

        found = self.store.use(read) if self.store.path.exists() else None
        entries, by_model = found or (0, {})
        size = sum(
            p.stat().st_size
            for p in (self.store.path, *self.store.path.parent.glob(self.store.path.name + "-*"))
            if p.exists()
        )
        return CacheStats(str(self.store.path), self.store.enabled, entries, size, by_model)

    def clear(self) -> int:
        """Delete every entry; return how many there were."""
        if not self.store.path.exists():
            return 0

        def wipe(db: sqlite3.Connection) -> int:
            count = int(db.execute("DELETE FROM cache").rowcount)
            # Give the space back; a process reading the file at this moment may prevent it.
            with contextlib.suppress(sqlite3.OperationalError):
                db.execute("VACUUM")
            return count

        return self.store.use(wipe) or 0
