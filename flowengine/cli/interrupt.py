"""Ctrl-C and SIGTERM for the commands that run an event loop: the work stops once, cleanly.

``asyncio.run`` turns the first Ctrl-C into a cancellation, but raises KeyboardInterrupt on the
second wherever the loop happens to be: inside a task's step or a callback. A user who presses
Ctrl-C twice while the run is saving what finished then gets "Unclosed client session", and
now and then a loop that waits forever for a task whose step was cut off (both seen with two
SIGINTs 0-50 ms apart during a fanout). Here the loop itself takes the signals: the first
cancels the work, whose own cleanup then runs to its end (the run's record, the engine's
close); later ones are ignored, as that cleanup is bounded and what it saves is what the user
asked to keep.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class Interrupted(Exception):
    """The work was stopped by Ctrl-C or SIGTERM, after its cleanup ran."""


def run_interruptibly(work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``asyncio.run(work())``, where the first Ctrl-C or SIGTERM cancels the work; Interrupted
    once it has unwound. Ctrl-C stays ignored afterwards, so that the command's last words
    (a partial result, a summary) are not cut off.

    ``work`` makes the coroutine inside the loop: one made before would never be awaited if
    Ctrl-C came while the loop was being set up.
    """
    stopped: list[bool] = []
    signals = _signals()  # before the runner puts its own SIGINT handler in place
    try:
        with asyncio.Runner() as runner:
            runner.get_loop()  # made first, so that nothing but the loop comes between
            return runner.run(_guarded(work, signals, stopped))
    finally:
        if stopped:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


async def _guarded(
    work: Callable[[], Coroutine[Any, Any, T]], signals: list[signal.Signals], stopped: list[bool]
) -> T:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None

    def stop() -> None:
        if not stopped:
            stopped.append(True)
            task.cancel()

    # The handlers stay until the loop closes, which removes them: a signal while the runner
    # shuts down then finds the work done, and changes nothing.
    for sig in signals:
        # Not available off the main thread or on Windows: Python's own handling stays.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop)
    try:
        return await work()
    except asyncio.CancelledError:
        if stopped:
            raise Interrupted from None
        raise


def _signals() -> list[signal.Signals]:
    """SIGTERM, and SIGINT unless the process was started with it ignored (a shell's
    background job is, so that Ctrl-C at the terminal leaves it running)."""
    found = [signal.SIGTERM] if hasattr(signal, "SIGTERM") else []
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        found.append(signal.SIGINT)
    return found
