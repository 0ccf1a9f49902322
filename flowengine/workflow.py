"""The public ``Workflow``: a loaded, fully checked workflow file."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx

from flowengine import graph as dag
from flowengine.errors import WorkflowError
from flowengine.loader import Source, parse_source, read_source, spec_from_source
from flowengine.spec import WorkflowSpec
from flowengine.templates import find_prompts_dir, make_environment
from flowengine.validate import check

if TYPE_CHECKING:
    from jinja2.sandbox import ImmutableSandboxedEnvironment


class Workflow:
    """A workflow file, parsed and checked: every problem is found before the first call.

    Example::

        wf = Workflow.load("workflows/critique.yaml", overrides={"models.llama.weight": 4})
        result = await wf.run(prompt="Explain quantum computing")
        result.output["primary_response"]["model"]
    """

    def __init__(self, spec: WorkflowSpec, source: Source, prompts_dir: Path | None) -> None:
        self.spec = spec
        self.source = source
        self.prompts_dir = prompts_dir
        self.env: ImmutableSandboxedEnvironment = make_environment(prompts_dir)
        problems = check(spec, source, self.env, prompts_dir)
        if problems:
            raise WorkflowError(problems)

    @classmethod
    def load(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> Workflow:
        """Read and check a workflow file; raise :class:`WorkflowError` listing every problem."""
        source = read_source(path)
        spec = spec_from_source(source, overrides)
        return cls(spec, source, find_prompts_dir(Path(path)))

    @classmethod
    def from_string(
        cls,
        text: str,
        *,
        name: str = "<workflow>",
        prompts_dir: str | Path | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Workflow:
        """Check a workflow given as YAML text; prompt files resolve in ``prompts_dir``."""
        source = parse_source(name, text)
        spec = spec_from_source(source, overrides)
        return cls(spec, source, Path(prompts_dir) if prompts_dir is not None else None)

    @property
    def name(self) -> str:
        return self.spec.name

    @cached_property
    def graph(self) -> nx.DiGraph:
        return dag.build(self.spec)

    @cached_property
    def order(self) -> list[str]:
        return dag.order(self.graph)

    @cached_property
    def content_hash(self) -> str:
        """SHA-256 of the file's text, to tell which version of a workflow a run used."""
        return hashlib.sha256(self.source.text.encode("utf-8")).hexdigest()

    def to_mermaid(self) -> str:
        return dag.to_mermaid(self.spec)

    def to_dot(self) -> str:
        return dag.to_dot(self.spec)
