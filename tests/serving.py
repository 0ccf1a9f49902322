"""What the tests of `flowengine serve` share: small workflows and a server on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from flowengine import Engine, Workflow
from flowengine.web.app import Server, create_app

#: One llm node answering the prompt, and one after it (so a run has a middle).
TWO_STEPS = """\
version: 1
name: {name}
description: Answers, then polishes the answer.
inputs:
  prompt: {{type: string, description: The question}}
  tone: {{type: string, default: plain}}
providers:
  local: {{base_url: "{url}", retry: {{attempts: 1}}}}
defaults: {{provider: local}}
models:
  first: {{id: model-first}}
  second: {{id: model-second}}
nodes:
  draft: {{type: llm, model: first, template: "{{{{ prompt }}}} ({{{{ tone }}}})"}}
  polish: {{type: llm, model: second, needs: [draft], template: "Polish: {{{{ draft }}}}"}}
"""


def write_workflow(folder: Path, name: str = "steps", url: str = "http://127.0.0.1:9/v1") -> Path:
    """A two-step workflow file whose provider is at ``url`` (by default nothing listens)."""
    path = folder / f"{name}.yaml"
    path.write_text(TWO_STEPS.format(name=name, url=url))
    return path


def load(*paths: Path) -> dict[str, Workflow]:
    return {wf.name: wf for wf in map(Workflow.load, paths)}


@asynccontextmanager
async def client(
    workflows: dict[str, Workflow], *, offline: bool = True, **options: Any
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """aiohttp's test client of a server over a fresh engine; closing it shuts the server down."""
    app = create_app(workflows, Engine(offline=offline), **options)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


@asynccontextmanager
async def listening(
    workflows: dict[str, Workflow], *, offline: bool = True, **options: Any
) -> AsyncIterator[tuple[str, list[str]]]:
    """A real server on a free port of 127.0.0.1: its address, and the paths it answered."""
    app = create_app(workflows, Engine(offline=offline), **options)
    answered: list[str] = []

    async def count(request: web.Request, _: web.StreamResponse) -> None:
        answered.append(request.path)

    app.on_response_prepare.append(count)
    server = Server(app)
    address = await server.start("127.0.0.1", 0)
    try:
        yield address, answered
    finally:
        await server.stop()


def parse_events(text: str) -> list[dict[str, Any]]:
    """Server-sent events as ``{"id", "event", "data"}``; comments left out."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            events.append(
                {
                    "id": fields.get("id"),
                    "event": fields.get("event"),
                    "data": json.loads(fields["data"]),
                }
            )
    return events
