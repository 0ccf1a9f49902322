"""The original critique client, over the shipped ``critique`` workflow.

The workflow runs the pipeline (the selector, the primary answer, the critiques at once); this
module only turns the constructor's arguments into overrides of the workflow, and the run into
the dict the original client returned.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flowengine import ConfigError, RunResult, SelectResult
from flowengine.clients._workflows import ClientResult, load, run

#: The fields of each part of the original client's result.
PRIMARY_FIELDS = ("model", "content", "confidence", "success")
CRITIQUE_FIELDS = ("model", "content", "confidence")


class MultiModelOrchestrator:
    """Route a prompt to the best model; other models critique its answer, concurrently.

    The shipped ``critique`` workflow does the work: its select node asks the model selector
    at ``model_selector_url`` (and falls back to the highest-weight model when the selector is
    down, slow or names an unknown model), the chosen model answers, and five other models
    critique the answer, ``max_concurrent_critiques`` at a time. The API key is read from
    ``OPENROUTER_API_KEY``. ``offline=True`` answers every call with the offline provider and
    selects by weight (``flowengine run --offline``); ``base_url`` sends the calls to another
    OpenAI-compatible server; ``workflow`` runs another workflow file with the same node ids
    (``select``, ``critiques``) and output; ``overrides`` set any value of it by dotted path.

    Example::

        orchestrator = MultiModelOrchestrator(
            model_selector_url="http://localhost:8000/predict", max_concurrent_critiques=3
        )
        result = await orchestrator.orchestrate_with_critiques("Explain quantum computing")
        result["primary_response"]["model"], result["metadata"]["total_time"]
    """

    #: The workflow a subclass runs instead: a shipped workflow's name, or a file.
    workflow: str | Path = "critique"

    def __init__(
        self,
        model_selector_url: str | None = None,
        max_concurrent_critiques: int = 3,
        *,
        offline: bool = False,
        base_url: str | None = None,
        workflow: str | Path | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        given: dict[str, Any] = {"nodes.critiques.max_concurrency": max_concurrent_critiques}
        if model_selector_url is not None:
            given["selectors.ml.url"] = model_selector_url
        given.update(overrides or {})
        self.offline = offline
        self.pipeline = load(workflow or self.workflow, given, base_url=base_url)

    async def orchestrate_with_critiques(self, prompt: str) -> ClientResult:
        """``{primary_response: {model, content, confidence, success}, critiques: [{model,
        content, confidence}], metadata: {total_time, concurrent_calls,
        model_selector_confidence}}``; ``.run`` on it is the whole :class:`RunResult`.

        A critique that failed is left out of ``critiques`` (its error is in ``.run``); a
        primary answer that failed has ``success: False`` and no content.
        """
        result = await run(self.pipeline, {"prompt": prompt}, offline=self.offline)
        return ClientResult(documented(result), result)

    async def _call_model_selector_api(self, prompt: str) -> tuple[str, dict[str, float]]:
        """The selected model and the selector's confidence scores: the select node alone.

        When the selector is down the model is the fallback's and the scores are empty.
        """
        result = await run(self.pipeline, {"prompt": prompt}, offline=self.offline, only=["select"])
        chosen = result.nodes["select"].output
        assert isinstance(chosen, SelectResult)
        return chosen.model, dict(chosen.scores)


def documented(result: RunResult) -> dict[str, Any]:
    """The original client's dict, from the critique workflow's output."""
    output = result.output if isinstance(result.output, dict) else {}
    primary = output.get("primary_response") or {}
    critiques = output.get("critiques") or []
    return {
        "primary_response": {
            **{key: primary.get(key) for key in PRIMARY_FIELDS},
            "success": bool(primary.get("success")),
        },
        "critiques": [
            {key: critique.get(key) for key in CRITIQUE_FIELDS}
            for critique in critiques
            if critique.get("success")
        ],
        "metadata": {
            "total_time": result.metadata.total_time,
            "concurrent_calls": result.metadata.concurrent_calls,
            "model_selector_confidence": result.metadata.model_selector_confidence,
        },
    }


class SecureAPIKeyManager:
    """The API key from the environment, where the workflows read it; never shown.

    The clients need none of this: their workflows read the key themselves. It is here for
    code that used the original manager::

        api_manager = SecureAPIKeyManager()
        api_manager.has_key  # False: `export OPENROUTER_API_KEY=...`, or pass offline=True
    """

    def __init__(
        self, env_var: str = "OPENROUTER_API_KEY", environ: Mapping[str, str] | None = None
    ) -> None:
        self.env_var = env_var
        self._environ = os.environ if environ is None else environ

    def __repr__(self) -> str:
        return f"SecureAPIKeyManager(env_var={self.env_var!r}, has_key={self.has_key})"

    @property
    def has_key(self) -> bool:
        return bool(self._environ.get(self.env_var))

    def get_api_key(self) -> str:
        """The key; :class:`ConfigError` saying what to set when there is none."""
        key = self._environ.get(self.env_var)
        if not key:
            raise ConfigError(
                f"{self.env_var} is not set",
                f"export {self.env_var}=..., or pass offline=True to try the client with "
                "offline answers",
            )
        return key
