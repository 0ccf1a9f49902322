"""Run events to Python's logging: the ``flowengine.run`` logger, one listener among others.

Retries (with their reason and wait) and selector fallbacks are INFO; failed calls, failed nodes
and failed runs are WARNING; every finished call is DEBUG. Messages come from CallError texts,
which never hold an API key.
"""

from __future__ import annotations

import logging

from flowengine.events import Event
from flowengine.results import ErrorInfo

log = logging.getLogger("flowengine.run")


def _why(error: ErrorInfo | None) -> str:
    if error is None:
        return "unknown error"
    status = f" {error.status}" if error.status is not None else ""
    return f"{error.type}{status}: {error.message}"


def log_event(event: Event) -> None:
    """Log one event at its level; events nobody logs cost one comparison."""
    where = f"{event.workflow} {event.run_id}"
    node = f"{event.node}/{event.model}" if event.model else str(event.node)
    if event.kind == "call_retried":
        log.info(
            "%s: %s: attempt %s failed (%s); retrying in %.1fs",
            where,
            node,
            event.attempt,
            _why(event.error),
            event.delay_s or 0.0,
        )
    elif event.kind == "selector_fallback":
        log.info(
            "%s: %s: selector fallback to '%s': %s", where, event.node, event.model, event.reason
        )
    elif event.kind == "call_finished":
        if event.status == "failed":
            log.warning("%s: %s: call failed (%s)", where, node, _why(event.error))
        elif log.isEnabledFor(logging.DEBUG):
            cached = " (cached)" if event.cached else ""
            log.debug("%s: %s: call succeeded in %.3fs%s", where, node, event.duration_s, cached)
    elif event.kind == "node_failed":
        log.warning("%s: node %s failed (%s)", where, event.node, _why(event.error))
    elif event.kind == "run_finished":
        level = logging.WARNING if event.status == "failed" else logging.INFO
        log.log(level, "%s: run %s in %.2fs", where, event.status, event.duration_s or 0.0)
