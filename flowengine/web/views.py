"""HTML from templates: one Jinja environment that escapes every value it is given.

Model answers, prompts, inputs and node ids are data: they reach a page only through ``{{ }}``
with autoescape on, so that ``<script>`` in an answer shows as text. No template marks data
``|safe``, and no data is ever rendered as a template.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from flowengine.web.run_view import plain

TEMPLATES = Path(__file__).resolve().parent / "templates"
#: The web UI's files; the report's stylesheet is one of them, so both look alike.
STATIC = Path(__file__).resolve().parent / "static"


def seconds(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 0.01:
        return f"{value * 1000:.1f} ms"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def money(value: float | None) -> str:
    return "–" if value is None else f"${value:.6f}"


def number(value: float | int | None, digits: int = 2) -> str:
    if value is None:
        return "–"
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.0f}%"


@cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader([TEMPLATES, STATIC]),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(seconds=seconds, money=money, number=number, percent=percent, plain=plain)
    return env


def render(template: str, **context: Any) -> str:
    """``template`` (a file under templates/) rendered with ``context``, every value escaped."""
    return environment().get_template(template).render(**context)
