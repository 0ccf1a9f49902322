"""Run events to Python's logging: the ``flowengine.run`` logger, one listener among others.

Retries (with their reason and wait), selector fallbacks and skipped nodes are INFO; failed
calls, failed nodes and failed runs are WARNING; every call's start and success is DEBUG.
Messages come from CallError texts, which never hold an API key.
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


def _where(event: Event) -> str:
    node = f"{event.node}/{event.model}" if event.model else str(event.node)
    return f"{event.workflow} {event.run_id}: {node}"


#: What :func:`log_event` logs at WARNING: failures (a failed call, node or run).
_FAILURES = frozenset({"call_finished", "node_failed", "run_finished"})
#: What it logs at INFO besides: retries, fallbacks, skipped nodes and every run's end.
_NOTICES = _FAILURES | {"call_retried", "selector_fallback", "node_skipped"}


def logged_kinds() -> frozenset[str] | None:
    """The kinds of event :func:`log_event` may log at the logger's level now; None: all."""
    if log.isEnabledFor(logging.DEBUG):
        return None
    if log.isEnabledFor(logging.INFO):
        return _NOTICES
    return _FAILURES if log.isEnabledFor(logging.WARNING) else frozenset()


def log_event(event: Event) -> None:
    """Log one event at its level; an event nobody logs costs a comparison or two."""
    kind = event.kind
    if kind == "call_finished":
        if event.status == "failed":
            log.warning("%s: call failed (%s)", _where(event), _why(event.error))
        elif log.isEnabledFor(logging.DEBUG):
            cached = " (cached)" if event.cached else ""
            log.debug("%s: call succeeded in %.3fs%s", _where(event), event.duration_s, cached)
    elif kind == "call_started":
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: call started", _where(event))
    elif kind == "call_retried":
        log.info(
            "%s: attempt %s failed (%s); retrying in %.1fs",
            _where(event),
            event.attempt,
            _why(event.error),
            event.delay_s or 0.0,
        )
    elif kind == "selector_fallback":
        log.info(
            "%s %s: %s: selector fallback to '%s': %s",
            event.workflow,
            event.run_id,
            event.node,
            event.model,
            event.reason,
        )
    elif kind == "node_failed":
        log.warning("%s: node failed (%s)", _where(event), _why(event.error))
    elif kind == "node_skipped":
        log.info("%s: node skipped (%s)", _where(event), event.reason)
    elif kind == "run_finished":
        level = logging.WARNING if event.status == "failed" else logging.INFO
        if log.isEnabledFor(level):
            took = event.duration_s or 0.0
            log.log(
                level, "%s %s: run %s in %.2fs", event.workflow, event.run_id, event.status, took
            )
