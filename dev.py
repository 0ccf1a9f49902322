#!/usr/bin/env python3
"""Set up a virtual environment for this checkout and run things in it.

    python3 dev.py demo        run the critique workflow (offline when no API key is set)
    python3 dev.py test        lint, format check, type check, and the whole test suite
    python3 dev.py flowengine ARGS...   any flowengine command

The environment lives in .venv/ and is reinstalled only when pyproject.toml changes (or the
version in flowengine/__init__.py, which the package's metadata is read from).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".flowengine-installed"


#: What each command needs besides the package: the demo nothing, the tests their tools and
#: the optional backends they test (Redis, Ray).
EXTRAS = {"demo": (), "flowengine": (), "test": ("test", "redis", "ray")}


def ensure_env(extras: tuple[str, ...] = ()) -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be started by an older python3
        sys.exit(f"flowengine needs Python 3.11 or newer; this is {sys.version.split()[0]}")
    want = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + _version_line().encode()
    ).hexdigest()
    have = STAMP.read_text().split() if STAMP.exists() else []
    if have[:1] == [want] and set(extras) <= set(have[1:]) and (BIN / "flowengine").exists():
        return
    if not (BIN / "python").exists():
        print("setting up .venv ...", file=sys.stderr)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if have[:1] == [want]:  # the same project: keep what is installed, add what is asked
        extras = tuple(sorted({*extras, *have[1:]}))
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    spec = f"{ROOT}[{','.join(extras)}]" if extras else str(ROOT)
    subprocess.run([*pip, "-e", spec], check=True)
    STAMP.write_text(" ".join([want, *extras]))


def _version_line() -> str:
    init = (ROOT / "flowengine" / "__init__.py").read_text(encoding="utf-8")
    return next((line for line in init.splitlines() if line.startswith("__version__")), "")


def run(*args: str) -> int:
    return subprocess.run([str(BIN / args[0]), *args[1:]], cwd=ROOT).returncode


def test(extra: list[str]) -> int:
    for step in (
        ("ruff", "check", "flowengine", "tests", "benchmarks", "dev.py"),
        ("ruff", "format", "--check", "flowengine", "tests", "benchmarks", "dev.py"),
        ("mypy",),
    ):
        print("$", " ".join(step), file=sys.stderr, flush=True)
        if code := run(*step):
            return code
    print("$ pytest", " ".join(extra), file=sys.stderr, flush=True)
    return run("pytest", *extra)


def demo(extra: list[str]) -> int:
    args = ["flowengine", "run", "workflows/critique.yaml", "--format", "text"]
    if "--prompt" not in extra:
        args += ["--prompt", "Explain quantum computing"]
    if not os.environ.get("OPENROUTER_API_KEY") and "--offline" not in extra:
        print(
            "OPENROUTER_API_KEY is not set: running offline (deterministic stand-in answers)",
            file=sys.stderr,
        )
        args.append("--offline")
    return run(*args, *extra)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    ensure_env(EXTRAS.get(command, ()))
    if command == "test":
        return test(rest)
    if command == "demo":
        return demo(rest)
    if command == "flowengine":
        return run("flowengine", *rest)
    print(f"unknown command {command!r}; use demo, test or flowengine", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
