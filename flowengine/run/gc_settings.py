"""Garbage-collector settings for a process that makes many runs: ``flowengine batch`` and
``flowengine serve``.

Such a process keeps many runs in flight for minutes or days. With the default thresholds the
collector runs every 700 allocations and often walks every object the imports left behind (tens
of thousands, none of them garbage): a quarter of a batch's CPU. Freezing those objects and
collecting young ones less often (a few MB more memory at most) gives that time back. The
settings are the process's, so only commands that own their process use them; an application
that embeds flowengine may do the same around its own work::

    with many_runs_gc():
        ...
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

#: Young objects are collected after this many allocations (Python's default: 700).
YOUNG_THRESHOLD = 20_000


@contextlib.contextmanager
def many_runs_gc() -> Iterator[None]:
    """The heap as it is now frozen, young objects collected less often; restored afterwards."""
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
