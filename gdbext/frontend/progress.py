"""Progress of a long command in a debugger: a line every second (every 5 s into a log).

The session (:class:`gdbext.session.Session`) wraps a command's target and output so that
reads and written chunks :meth:`~Ticker.tick`; a tick past the interval reports
:func:`progress_line`. A report is not part of the command's result.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gdbext.frontend.command import Writer
    from gdbext.mapper import PhysMapper

#: Seconds a command runs before progress is reported, and between two reports.
PROGRESS_AFTER = 1.0
#: The same when the reports go to a file or a pipe (a batch log), not to a terminal.
PROGRESS_AFTER_NOT_A_TERMINAL = 5.0
#: A progress report, as :func:`progress_line` writes it: the command, the leaves found so far
#: (when the command counts them), the whole seconds since it started. A report is not part of
#: the command's result; this is how a reader of a log (or a test) tells it from an error.
PROGRESS_LINE = re.compile(
    r"(?P<command>[$\w-]+): (?:(?P<leaves>\d+) leaves so far, )?(?P<seconds>\d+) s "
    r"\(Ctrl-C interrupts\)"
)


def progress_line(command: str, seconds: float, leaves: int | None = None) -> str:
    """One progress report (``pt-walk: 12345 leaves so far, 3 s (Ctrl-C interrupts)``), the
    format :data:`PROGRESS_LINE` matches."""
    done = "" if leaves is None else f"{leaves} leaves so far, "
    return f"{command}: {done}{seconds:.0f} s (Ctrl-C interrupts)"


def progress_after(fd: int = 2) -> float:
    """:data:`PROGRESS_AFTER` if ``fd`` (where the front end reports progress) is a terminal,
    else :data:`PROGRESS_AFTER_NOT_A_TERMINAL`: a log gets at most one line per 5 s."""
    try:
        return PROGRESS_AFTER if os.isatty(fd) else PROGRESS_AFTER_NOT_A_TERMINAL
    except OSError:
        return PROGRESS_AFTER_NOT_A_TERMINAL


class Ticker:
    """Progress of one command: :meth:`tick` (often) reports at most once per interval."""

    def __init__(
        self,
        name: str,
        clock: Callable[[], float],
        after: float,
        report: Callable[[str], None] | None,
    ) -> None:
        self.name = name
        self.result: object = None
        self._clock = clock
        self._after = after
        self._report = report
        self._start = clock()
        self._next = self._start + after

    def observe(self, result: object) -> None:
        """The command's result (a walk's counts its leaves while it streams)."""
        self.result = result

    def tick(self) -> None:
        if self._report is None:
            return
        now = self._clock()
        if now < self._next:
            return
        self._next = now + self._after
        stats = getattr(self.result, "stats", None)
        leaves = stats["leaves"] if isinstance(stats, dict) else None
        self._report(progress_line(self.name, now - self._start, leaves))


class TickingMapper:
    """A mapper that ticks the command's progress on every read (reads are where live walks
    spend their time); everything else is the wrapped mapper's."""

    def __init__(self, inner: PhysMapper, tick: Callable[[], None]) -> None:
        self._inner = inner
        self._tick = tick

    def read(self, paddr: int, size: int) -> bytes:
        self._tick()
        return self._inner.read(paddr, size)

    def write(self, paddr: int, data: bytes) -> None:
        self._inner.write(paddr, data)

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


class TickingWriter:
    """A writer that ticks progress on every chunk (rendering many lines takes time too)."""

    def __init__(self, out: Writer, ticker: Ticker) -> None:
        self._out = out
        self._ticker = ticker

    def write(self, text: str) -> object:
        self._ticker.tick()
        return self._out.write(text)
