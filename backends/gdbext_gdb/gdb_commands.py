"""The ``pt-*`` commands and the ``$pt_phys``/``$pt_virt`` functions in GDB.

A thin adapter: GDB splits the arguments, :class:`gdbext.session.Session` does the rest. The
command base class turns every expected failure (a :class:`~gdbext.errors.GdbextError`, a
``gdb.error`` or ``OSError`` from a backend, Ctrl-C) into a one-line ``gdb.GdbError``, so GDB
never shows a Python traceback for bad input, a detached target or a lost connection.

Loaded by ``gdbext/gdbinit.py`` (it imports ``gdb``); :func:`install` registers everything once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import gdb

from gdbext.errors import GdbextError
from gdbext.frontend.common import (
    U64,
    FrontEnd,
    colour_wanted,
    evaluated,
    failure_line,
    hex_word,
    no_backend_hint,
    remote_default,
)
from gdbext.frontend.progress import progress_after
from gdbext.plugin.host import Host
from gdbext.session import BACKEND_COMMAND, Session
from gdbext_gdb import gdb_symbols

#: The live backend (helper G1's plugin), the default on a remote connection.
GDB_BACKEND = "gdb"
#: ``gdb.TargetConnection.type`` values of a gdbstub connection.
REMOTE_TYPES = ("remote", "extended-remote")

T = TypeVar("T")


class GdbOut:
    """GDB's standard output as a writer: whole chunks through ``gdb.write``."""

    def write(self, text: str) -> None:
        gdb.write(text)


def _report_progress(line: str) -> None:
    gdb.write(line + "\n", gdb.STDERR)
    gdb.flush(gdb.STDERR)


def _style_enabled() -> bool:
    """GDB's ``set style enabled`` (off where GDB has no such setting)."""
    try:
        return bool(gdb.parameter("style enabled"))
    except RuntimeError:
        return False


def as_gdb_error(name: str, call: Callable[[], T]) -> T:
    """``call()``, with every expected failure (:func:`gdbext.frontend.common.failure_line`,
    ``gdb.error`` among them) raised as a one-line ``gdb.GdbError``, which GDB prints without a
    traceback. GDB's way: a failure is an exception GDB catches (LLDB's adapter writes it into
    the command's result instead); anything else is a bug and keeps its traceback."""
    try:
        return call()
    except gdb.GdbError:
        raise
    # gdb.error covers gdb.MemoryError too: a detached target, a lost connection.
    except (GdbextError, KeyboardInterrupt, gdb.error, OSError) as exc:
        raise gdb.GdbError(failure_line(name, exc, (gdb.error,))) from None


def gdb_value(word: str) -> str:
    """A word that starts with ``$`` (a register, a convenience variable or function) as GDB
    evaluates it (``gdb.parse_and_eval``), in hex: ``pt-translate $rsp``, ``pt-walk --cr3
    $cr3``."""
    try:
        return hex_word(int(gdb.parse_and_eval(word)))
    except gdb.error as exc:
        raise gdb.error(f"{word}: {exc}") from None


def _remote_connected() -> bool:
    """The selected inferior is connected to a gdbstub."""
    connection = gdb.selected_inferior().connection
    return connection is not None and connection.type in REMOTE_TYPES


class PtCommand(gdb.Command):
    """A ``pt-*`` command: its help is the session's (argparse usage and options); words that
    start with ``$`` are evaluated by GDB (see :func:`gdb_value`)."""

    def __init__(self, name: str, session: Session) -> None:
        self.__doc__ = session.help(name)
        super().__init__(name, gdb.COMMAND_DATA)
        self._name = name
        self._session = session

    def invoke(self, argument: str, from_tty: bool) -> None:
        self.dont_repeat()
        as_gdb_error(self._name, lambda: self._run(gdb.string_to_argv(argument)))

    def _run(self, argv: list[str]) -> None:
        words = evaluated(argv, gdb_value)
        self._session.run(self._name, words, GdbOut(), colour=colour_wanted(_style_enabled()))

    def complete(self, text: str, word: str | None) -> object:
        try:
            completion = self._session.complete(self._name, text)
        except Exception:  # completion must never disturb the prompt
            return []
        if word is None:
            # The first call chooses how GDB splits words: as file names (at spaces) for a
            # file, else at GDB's usual characters ('-' among them).
            return gdb.COMPLETE_FILENAME if completion.filename else []
        # GDB breaks words at '-' too: complete the tail of the word it replaces.
        typed = completion.word
        if not typed.endswith(word):
            return []
        cut = len(typed) - len(word)
        return [c[cut:] for c in completion.candidates]


class PtBackendCommand(PtCommand):
    """``pt-backend [NAME [SOURCE] [OPTIONS]]`` (words as typed)."""

    def _run(self, argv: list[str]) -> None:
        self._session.backend(argv, GdbOut())


class PtPhys(gdb.Function):
    """$pt_phys(VADDR): the physical address VADDR translates to, through the page table of the
    selected thread's vCPU on the selected backend (pt-backend); an error names the level where
    the walk stopped."""

    def __init__(self, session: Session) -> None:
        super().__init__("pt_phys")
        self._session = session

    def invoke(self, *args: gdb.Value) -> gdb.Value:
        vaddr = as_gdb_error("$pt_phys", lambda: _one_address("$pt_phys", "VADDR", args))
        paddr = as_gdb_error("$pt_phys", lambda: self._session.phys(vaddr))
        return _u64(paddr)


class PtVirt(gdb.Function):
    """$pt_virt(PADDR): the first virtual address (lowest, in walk order) that maps PADDR in the
    page table of the selected thread's vCPU on the selected backend; the walk stops at the
    first hit."""

    def __init__(self, session: Session) -> None:
        super().__init__("pt_virt")
        self._session = session

    def invoke(self, *args: gdb.Value) -> gdb.Value:
        paddr = as_gdb_error("$pt_virt", lambda: _one_address("$pt_virt", "PADDR", args))
        vaddr = as_gdb_error("$pt_virt", lambda: self._session.virt(paddr))
        return _u64(vaddr)


def _one_address(name: str, what: str, args: tuple[gdb.Value, ...]) -> int:
    if len(args) != 1:
        raise gdb.GdbError(f"{name} takes one argument, {what}")
    return int(args[0]) & U64


def _u64(value: int) -> gdb.Value:
    return gdb.Value(value).cast(gdb.lookup_type("unsigned long long"))


_installed: FrontEnd[object] | None = None


def install() -> FrontEnd[object]:
    """Create the session and register the commands and functions; once per GDB (sourcing
    ``gdbinit.py`` again returns what the first time registered)."""
    global _installed
    if _installed is None:
        host = Host.create()
        session = Session(
            host,
            default=lambda: remote_default(host, GDB_BACKEND, _remote_connected()),
            no_backend_hint=no_backend_hint("target remote", GDB_BACKEND),
            live_backends=(GDB_BACKEND,),
            progress=_report_progress,
            progress_after=progress_after(),
            symbols=gdb_symbols.current_symbols,
        )
        cmds: list[object] = [PtCommand(name, session) for name in session.commands()]
        cmds.append(PtBackendCommand(BACKEND_COMMAND, session))
        _installed = FrontEnd(session, [*cmds, PtPhys(session), PtVirt(session)])
    return _installed


def installed() -> FrontEnd[object] | None:
    """The front end :func:`install` registered, if any (tests reach the session through it)."""
    return _installed
