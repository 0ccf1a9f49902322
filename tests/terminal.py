"""A command on a real pseudo-terminal, and the screen it draws, for tests of what a person sees.

:class:`Screen` is a small VT100 screen: it keeps the text, follows the cursor and line erasing
that rich's live displays use, ignores colours, and raises on any other control sequence, so
that a test never passes by misreading a screen it cannot draw. :func:`run_on_terminal` starts
a command with its stdin and stderr on a pseudo-terminal of a given size, feeds what it draws to
a Screen, and calls ``watch`` with the screen after each read.
"""

from __future__ import annotations

import codecs
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

# CSI (ESC [ params final), OSC (ESC ] ... BEL or ESC \), or a lone ESC and one character.
_ESCAPE = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")
_PARTIAL = re.compile(r"\x1b(\[[0-?]*[ -/]*|\][^\x07\x1b]*\x1b?)?$")


class Screen:
    """What a terminal of ``columns`` x ``lines`` shows after the text fed to it."""

    def __init__(self, columns: int, lines: int) -> None:
        self.columns, self.lines = columns, lines
        self.rows = [[" "] * columns for _ in range(lines)]
        self.row = self.col = 0
        self.pending = ""

    def feed(self, text: str) -> None:
        text, self.pending = self.pending + text, ""
        partial = _PARTIAL.search(text)
        if partial and partial.group(0):
            text, self.pending = text[: partial.start()], partial.group(0)
        at = 0
        for match in _ESCAPE.finditer(text):
            self._text(text[at : match.start()])
            self._escape(match.group(1))
            at = match.end()
        self._text(text[at:])

    def text(self) -> str:
        """The screen's lines, without trailing blanks or blank lines at the end."""
        return "\n".join("".join(row).rstrip() for row in self.rows).rstrip("\n")

    def _text(self, text: str) -> None:
        for char in text:
            if char == "\r":
                self.col = 0
            elif char == "\n":
                self._line_feed()
            elif char == "\b":
                self.col = max(self.col - 1, 0)
            elif char == "\x07":
                pass
            elif char < " ":
                raise AssertionError(f"control character {char!r} the screen cannot draw")
            else:
                if self.col >= self.columns:  # auto-wrap, as xterm does
                    self.col = 0
                    self._line_feed()
                self.rows[self.row][self.col] = char
                self.col += 1

    def _line_feed(self) -> None:
        if self.row == self.lines - 1:
            self.rows = [*self.rows[1:], [" "] * self.columns]
        else:
            self.row += 1

    def _escape(self, body: str) -> None:
        if body.startswith("]"):
            return  # a window title or a hyperlink: nothing on the screen
        if not body.startswith("["):
            raise AssertionError(f"escape sequence ESC {body!r} the screen cannot draw")
        params, final = body[1:-1], body[-1]
        if params.startswith("?") and final in "hl" and params[1:] in ("25", "7"):
            return  # the cursor shown or hidden, auto-wrap: nothing to draw
        numbers = [int(n) if n else 0 for n in params.split(";")] if params else []
        n = numbers[0] if numbers else 0
        if final == "m":
            return  # colours and styles
        if final == "A":
            self.row = max(self.row - max(n, 1), 0)
        elif final == "B":
            self.row = min(self.row + max(n, 1), self.lines - 1)
        elif final == "C":
            self.col = min(self.col + max(n, 1), self.columns - 1)
        elif final == "D":
            self.col = max(self.col - max(n, 1), 0)
        elif final == "G":
            self.col = min(max(n, 1) - 1, self.columns - 1)
        elif final == "K":
            self._erase_line(n)
        else:
            raise AssertionError(f"escape sequence ESC {body!r} the screen cannot draw")

    def _erase_line(self, mode: int) -> None:
        row = self.rows[self.row]
        start, end = {0: (self.col, self.columns), 1: (0, self.col + 1), 2: (0, self.columns)}[mode]
        row[start:end] = [" "] * (end - start)


@dataclass
class Finished:
    returncode: int
    screen: Screen
    stdout: str


def run_on_terminal(
    args: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str],
    watch: Callable[[Screen, subprocess.Popen[bytes]], None] | None = None,
    columns: int = 120,
    lines: int = 40,
    timeout: float = 60.0,
) -> Finished:
    """Run ``args`` with stdin and stderr on a pseudo-terminal, stdout piped apart."""
    main, side = pty.openpty()
    fcntl.ioctl(side, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
    environ = {k: v for k, v in env.items() if not k.startswith(("TTY_", "FORCE_", "NO_COLOR"))}
    environ.update(TERM="xterm-256color", COLUMNS=str(columns), LINES=str(lines))
    with subprocess.Popen(
        list(args), cwd=cwd, env=environ, stdin=side, stdout=subprocess.PIPE, stderr=side
    ) as process:
        os.close(side)
        screen = Screen(columns, lines)
        try:
            stdout = _pump(main, screen, process, watch, time.monotonic() + timeout)
            process.wait(timeout=timeout)
        finally:
            os.close(main)
            if process.poll() is None:
                process.kill()
    return Finished(process.returncode, screen, stdout)


def _pump(
    fd: int,
    screen: Screen,
    process: subprocess.Popen[bytes],
    watch: Callable[[Screen, subprocess.Popen[bytes]], None] | None,
    deadline: float,
) -> str:
    """Feed what the command draws to ``screen`` until both its terminal and its stdout
    close; return what it wrote on stdout."""
    assert process.stdout is not None
    out = process.stdout.fileno()
    decoder = codecs.getincrementaldecoder("utf-8")()
    open_fds, stdout = {fd, out}, bytearray()
    while open_fds:
        assert time.monotonic() < deadline, f"no end in time; the screen:\n{screen.text()}"
        ready, _, _ = select.select(list(open_fds), [], [], 0.05)
        for ready_fd in ready:
            try:
                data = os.read(ready_fd, 65536)
            except OSError:  # EIO: every process holding the terminal's other side closed it
                data = b""
            if not data:
                open_fds.discard(ready_fd)
            elif ready_fd == out:
                stdout += data
            else:
                screen.feed(decoder.decode(data))
                if watch is not None:
                    watch(screen, process)
    return stdout.decode()
