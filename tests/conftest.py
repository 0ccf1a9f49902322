"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.fakeserver import FakeServer, ThreadedServer, run_in_thread

ROOT = Path(__file__).resolve().parent.parent

# Property tests draw the same examples on every run and never fail for being slow, so that the
# suite passes or fails the same way on every machine, however busy. HYPOTHESIS_PROFILE=explore
# draws new examples, and more of them.
_STEADY = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("deterministic", derandomize=True, database=None, **_STEADY)
settings.register_profile("explore", max_examples=1000, **_STEADY)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    """A FakeServer on 127.0.0.1 for this test (a module may define its own, set up otherwise)."""
    async with FakeServer() as srv:
        yield srv


@pytest.fixture
def threaded_server() -> Iterator[ThreadedServer]:
    """A FakeServer on its own thread, for code that runs its own event loop (the CLI)."""
    handle = run_in_thread()
    yield handle
    handle.stop()


@pytest.fixture
def in_repo_root(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test from the repository root, so relative paths match the ones users type."""
    monkeypatch.chdir(ROOT)
    return ROOT


@pytest.fixture(autouse=True)
def private_database(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every test gets its own cache and run records, never the repository's .flowengine/."""
    path = tmp_path_factory.mktemp("db") / "flowengine.db"
    monkeypatch.setenv("FLOWENGINE_DB", str(path))
    return path


@pytest.fixture(autouse=True)
def isolated_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a test registers (providers, node kinds) or reads of entry points ends with it."""
    from flowengine import plugins

    for name in ("_REGISTERED", "_LOADED"):
        table = getattr(plugins, name)
        monkeypatch.setattr(plugins, name, {group: dict(found) for group, found in table.items()})
    monkeypatch.setattr(plugins, "_ENTRY_POINTS", {})


def require_program(name: str) -> str:
    """The path of a system program a test drives for real (``chromium``, ``redis-server``).

    Missing, the test is skipped with how to install it; but where FLOWENGINE_TESTS_REQUIRE
    names the program (or says ``all``), as ``.ci/run`` does, a missing program fails the test,
    so that a test run never passes by skipping what it was meant to check.
    """
    found = shutil.which(name)
    if found:
        return found
    required = os.environ.get("FLOWENGINE_TESTS_REQUIRE", "").replace(",", " ").split()
    message = f"{name} is not installed (Debian: apt-get install {name})"
    if name in required or "all" in required:
        pytest.fail(message)
    pytest.skip(message)
