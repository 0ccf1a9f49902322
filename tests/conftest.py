"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent

# Property tests draw the same examples on every run, so that the suite passes or fails the
# same way on every machine. HYPOTHESIS_PROFILE=explore draws new ones, and more of them.
settings.register_profile("deterministic", derandomize=True, database=None)
settings.register_profile("explore", max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


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
