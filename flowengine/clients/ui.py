"""The original client's UI helper: response cards, a comparison, and statistics across runs.

Cards, the recommendation and the metrics are flowengine's own, the ones the web UI and
``flowengine compare`` show: :func:`flowengine.compare.compare` and
:func:`flowengine.results.model_metrics`. This module only keeps the runs it was shown.
"""

from __future__ import annotations

from typing import Any

from flowengine import RunResult
from flowengine.clients._workflows import ClientResult
from flowengine.compare import compare, response_calls
from flowengine.results import model_metrics, to_jsonable


def run_of(result: ClientResult | RunResult) -> RunResult:
    """The run behind a facade's result; TypeError for a dict that has none."""
    if isinstance(result, RunResult):
        return result
    run = getattr(result, "run", None)
    if not isinstance(run, RunResult):
        raise TypeError(
            "expected the dict a flowengine client returned (it carries its run as `.run`) "
            f"or a RunResult, got {type(result).__name__}; a dict rebuilt from JSON has lost "
            "its run: pass the client's own result"
        )
    return run


#: Runs a UIResponseManager keeps for its statistics, the newest first to stay.
KEEP = 1000


class UIResponseManager:
    """Format a client's results for a UI, and keep statistics over the results it formats
    (the newest ``keep`` of them).

    Example::

        ui_manager = UIResponseManager()
        ui_data = ui_manager.prepare_ui_data(result)            # cards, for display
        comparison = ui_manager.get_response_comparison(result)  # side by side, recommended
        ui_manager.get_statistics()["success_rate"]
    """

    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self._runs: dict[str, RunResult] = {}

    def prepare_ui_data(self, result: ClientResult | RunResult) -> dict[str, Any]:
        """``{run_id, workflow, status, cards: [...], recommended, metadata}``.

        Each card is one response: node, model, content, success, confidence, quality,
        latency_s, tokens, cost, length, words, cached and error (as ``flowengine compare``).
        """
        run = self._track(result)
        comparison = compare(run)
        return {
            "run_id": run.run_id,
            "workflow": run.workflow,
            "status": run.status,
            "cards": comparison["responses"],
            "recommended": comparison["recommended"],
            "metadata": run.metadata.model_dump(mode="json"),
        }

    def get_response_comparison(self, result: ClientResult | RunResult) -> dict[str, Any]:
        """The responses side by side and the one recommended, with the reason:
        ``{run_id, workflow, status, responses: [card...], recommended: {node, model, reason},
        skipped}``."""
        return compare(self._track(result))

    def get_statistics(self) -> dict[str, Any]:
        """Over the newest ``keep`` runs formatted so far: ``{runs, succeeded, success_rate,
        total_time, average_time, models: {alias: {calls, success_rate, latency_p50_s,
        latency_p95_s, tokens, cost, cached, retries, quality, ...}}}``."""
        runs = list(self._runs.values())
        succeeded = sum(run.status == "succeeded" for run in runs)
        total = sum(run.metadata.total_time for run in runs)
        calls = [call for run in runs for call in response_calls(run)]
        return {
            "runs": len(runs),
            "succeeded": succeeded,
            "success_rate": succeeded / len(runs) if runs else None,
            "total_time": round(total, 6),
            "average_time": round(total / len(runs), 6) if runs else None,
            "models": to_jsonable(model_metrics(calls)),
        }

    def _track(self, result: ClientResult | RunResult) -> RunResult:
        run = run_of(result)
        self._runs[run.run_id] = run  # shown twice (cards, then comparison): counted once
        if len(self._runs) > self.keep:  # bounded, however long the service runs
            del self._runs[next(iter(self._runs))]
        return run
