"""The public ``Workflow``: a loaded, fully checked workflow file.

Loading joins the language layer's steps: parse the YAML (:mod:`.loader`), validate its
structure (:mod:`.schema_errors` says what is wrong), then check how its parts relate
(:mod:`.checks`). Every problem of a file is reported at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from flowengine.errors import Problem, UsageError, WorkflowError, did_you_mean
from flowengine.language import diagrams
from flowengine.language.bounded_yaml import collector_paused
from flowengine.language.checks import check
from flowengine.language.graph import Graph
from flowengine.language.inputs import check_value, may_be_missing
from flowengine.language.loader import parse_source, read_source, spec_data
from flowengine.language.placement import Placed, placed_nodes
from flowengine.language.plan import Plan, compile_plan
from flowengine.language.response_schemas import load_schemas
from flowengine.language.schema_errors import problem_from_error, salvage
from flowengine.language.source import Source
from flowengine.language.templates import find_prompts_dir, make_environment
from flowengine.results import RunResult
from flowengine.spec import WorkflowSpec

if TYPE_CHECKING:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from flowengine.run.engine import Engine

_INPUT_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


class Workflow:
    """A workflow file, parsed and checked: every problem is found before the first call.

    Example::

        wf = Workflow.load("workflows/critique.yaml", overrides={"models.llama.weight": 4})
        result = await wf.run(prompt="Explain quantum computing")
        result.output["primary_response"]["model"]
    """

    def __init__(
        self,
        spec: WorkflowSpec,
        source: Source,
        prompts_dir: Path | None,
        *,
        folder: Path | None = None,
    ) -> None:
        self.spec = spec
        self.source = source
        self.prompts_dir = prompts_dir
        self.env: ImmutableSandboxedEnvironment = make_environment(prompts_dir)
        #: Each node's response schema (`schema:`), read once: what was checked is what runs.
        self.schemas, problems = load_schemas(spec, source, folder, prompts_dir)
        problems += check(spec, source, self.env, prompts_dir, schemas=self.schemas)
        if problems:
            raise WorkflowError(problems)

    @classmethod
    def load(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> Workflow:
        """Read and check a workflow file; raise :class:`WorkflowError` listing every problem."""
        source = read_source(path)
        prompts_dir = find_prompts_dir(Path(path))
        folder = Path(path).parent
        spec = checked_spec(source, overrides, prompts_dir, folder)
        return cls(spec, source, prompts_dir, folder=folder)

    @classmethod
    def from_string(
        cls,
        text: str,
        *,
        name: str = "<workflow>",
        prompts_dir: str | Path | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> Workflow:
        """Check a workflow given as YAML text; prompt files resolve in ``prompts_dir``, and
        schema files in the folder that holds it."""
        source = parse_source(name, text)
        prompts = Path(prompts_dir) if prompts_dir is not None else None
        folder = prompts.parent if prompts is not None else None
        spec = checked_spec(source, overrides, prompts, folder)
        return cls(spec, source, prompts, folder=folder)

    @property
    def name(self) -> str:
        return self.spec.name

    @cached_property
    def dag(self) -> Graph:
        """The nodes and the edges their ``needs`` make."""
        return Graph.of(self.spec)

    @property
    def order(self) -> list[str]:
        """The nodes in run order: needs first, file order among independent nodes."""
        return self.dag.order

    @property
    def dependents(self) -> Mapping[str, tuple[str, ...]]:
        """The nodes that need each node, in file order."""
        return self.dag.dependents

    def ancestors(self, node_id: str) -> set[str]:
        """Every node ``node_id`` needs, directly or through others."""
        return set(self.dag.ancestors(node_id))

    @cached_property
    def placed(self) -> dict[str, Placed]:
        """Every node by id, loops' nodes included, with where it is (read by every run)."""
        return placed_nodes(self.spec)

    @cached_property
    def content_hash(self) -> str:
        """SHA-256 of the file's text, to tell which version of a workflow a run used."""
        return hashlib.sha256(self.source.text.encode("utf-8")).hexdigest()

    @cached_property
    def plan(self) -> Plan:
        """Templates compiled once, for every run of this workflow."""
        return compile_plan(self.spec, self.dag, self.env, self.schemas)

    def bind_inputs(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Check given inputs against ``inputs:``, apply defaults; raise UsageError if wrong.

        An input given as None counts as not given. An optional input without a default that
        is not given is left out: templates see it undefined (:class:`.inputs.NotGiven`).
        Binding inputs that are already bound changes nothing.
        Text with no UTF-8 form and nesting past a bound are refused (:mod:`.inputs`).
        """
        declared = self.spec.inputs
        values: dict[str, Any] = {}
        for name, value in given.items():
            if name not in declared:
                fix = did_you_mean(name, declared) or (
                    f"inputs of {self.name}: {', '.join(declared)}" if declared else "it takes none"
                )
                raise UsageError(f"unknown input '{name}'", fix)
            if value is None:
                continue
            expected = _INPUT_TYPES[declared[name].type]
            if not isinstance(value, expected) or (
                isinstance(value, bool) and bool not in expected
            ):
                raise UsageError(
                    f"input '{name}' should be {declared[name].type}, got {type(value).__name__}"
                )
            check_value(name, value)
            values[name] = value
        for name, spec in declared.items():
            if name in values:
                continue
            if spec.is_required:
                flag = "--prompt TEXT" if name == "prompt" else f"--input {name}=VALUE"
                raise UsageError(f"missing input '{name}'", f"pass {flag}")
            if not may_be_missing(spec):
                values[name] = spec.default
        return values

    async def run(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        engine: Engine | None = None,
        offline: bool = False,
        only: Iterable[str] | None = None,
        skip: Iterable[str] | None = None,
        **named_inputs: Any,
    ) -> RunResult:
        """Run once and return the :class:`RunResult`.

        Without ``engine``, a private one is used for this run; rate limits are still shared
        with every other run in the process. Pass an :class:`Engine` to share its HTTP session
        across many runs. ``only`` runs those nodes and what they need; ``skip`` skips those
        nodes, and the nodes after them see them as none::

            result = await wf.run(prompt="...", skip=["meta"])
            result.nodes["meta"].status  # "skipped"
        """
        # Imported here, not at the top: the language layer sits below the run layer, and
        # loading or validating a workflow must not pay for importing aiohttp. A shim until
        # this convenience moves above both layers.
        from flowengine.run.engine import Engine

        if engine is not None:
            return await engine.run(self, inputs, only=only, skip=skip, **named_inputs)
        async with Engine(offline=offline) as own:
            return await own.run(self, inputs, only=only, skip=skip, **named_inputs)

    def to_mermaid(self) -> str:
        return diagrams.to_mermaid(self.spec, self.dag)

    def to_dot(self) -> str:
        return diagrams.to_dot(self.spec, self.dag)


def checked_spec(
    source: Source,
    overrides: Mapping[str, Any] | None = None,
    prompts_dir: Path | None = None,
    folder: Path | None = None,
) -> WorkflowSpec:
    """The spec of a parsed file; raise WorkflowError if its structure is wrong.

    The error lists every structural problem and, found in the part of the file that could be
    read, every cross-reference problem too: one run reports both kinds. ``prompts_dir`` is
    where that check finds the prompt files, ``folder`` the workflow's, for schema files.
    """
    # Plain data and the spec made from it are as many objects as the file has values: a
    # paused collector spares rescanning them (100,000 models: 2.0 s of this, 0.7 s paused).
    with collector_paused():
        data = spec_data(source, overrides)
        try:
            return WorkflowSpec.model_validate(data)
        except ValidationError as exc:
            invalid = exc
    problems = [problem_from_error(source, error) for error in invalid.errors(include_url=False)]
    readable = salvage(data, invalid)
    if readable is not None:
        spec, unreadable = readable
        env = make_environment(prompts_dir)
        schemas, schema_problems = load_schemas(spec, source, folder, prompts_dir)
        problems += schema_problems
        problems += check(spec, source, env, prompts_dir, unreadable, schemas)
    raise WorkflowError(_unique(problems))


def _unique(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, str]] = set()
    kept = []
    for problem in problems:
        key = (str(problem.location), problem.message)
        if key not in seen:
            seen.add(key)
            kept.append(problem)
    return kept
