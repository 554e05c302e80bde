"""The ``pt-*`` commands and the ``$pt_phys``/``$pt_virt`` functions in GDB.

A thin adapter: GDB splits the arguments, :class:`gdbext.session.Session` does the rest. The
command base class turns every expected failure (a :class:`~gdbext.errors.GdbextError`, a
``gdb.error`` or ``OSError`` from a backend, Ctrl-C) into a one-line ``gdb.GdbError``, so GDB
never shows a Python traceback for bad input, a detached target or a lost connection.

Loaded by ``gdbext/gdbinit.py`` (it imports ``gdb``); :func:`install` registers everything once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import gdb

from gdbext.errors import GdbextError
from gdbext.host import Host
from gdbext.session import BACKEND_COMMAND, COMMANDS, Selection, Session, progress_after
from gdbext.target import OpenRequest

#: The live backend (helper G1's plugin), the default on a remote connection.
GDB_BACKEND = "gdb"
#: ``gdb.TargetConnection.type`` values of a gdbstub connection.
REMOTE_TYPES = ("remote", "extended-remote")
NO_BACKEND_HINT = (
    "connect to a gdbstub (target remote HOST:PORT) for backend 'gdb', or select one: "
    "pt-backend NAME [ARGS], e.g. pt-backend core FILE"
)
U64 = (1 << 64) - 1

T = TypeVar("T")


class GdbOut:
    """GDB's standard output as a writer: whole chunks through ``gdb.write``."""

    def write(self, text: str) -> None:
        gdb.write(text)


def _report_progress(line: str) -> None:
    gdb.write(line + "\n", gdb.STDERR)
    gdb.flush(gdb.STDERR)


def colour_wanted() -> bool:
    """Colour only as GDB would style its own output: ``set style enabled on``, standard output
    a terminal, and a terminal type that is not ``dumb``."""
    try:
        enabled = bool(gdb.parameter("style enabled"))
    except RuntimeError:
        return False
    return enabled and os.isatty(1) and os.environ.get("TERM", "dumb") != "dumb"


def _one_line(text: str) -> str:
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def guarded(name: str, call: Callable[[], T]) -> T:
    """``call()``, with every expected failure as a one-line ``gdb.GdbError``."""
    try:
        return call()
    except gdb.GdbError:
        raise
    except GdbextError as exc:
        raise gdb.GdbError(_one_line(str(exc))) from None
    except KeyboardInterrupt:
        raise gdb.GdbError(f"{name}: interrupted") from None
    except gdb.error as exc:  # gdb.MemoryError too: a detached target, a lost connection
        raise gdb.GdbError(f"{name}: {_one_line(str(exc))}") from None
    except OSError as exc:
        raise gdb.GdbError(f"{name}: {_one_line(str(exc))}") from None


def evaluate(word: str) -> str:
    """A word that starts with ``$`` (a register, a convenience variable or function) as GDB
    evaluates it, in hex: ``pt-translate $rsp``, ``pt-walk --cr3 $cr3``."""
    try:
        return f"0x{int(gdb.parse_and_eval(word)) & U64:x}"
    except gdb.error as exc:
        raise gdb.error(f"{word}: {exc}") from None


def remote_default(host: Host) -> Selection | None:
    """Backend ``gdb`` while the selected inferior is connected to a gdbstub, else None."""
    connection = gdb.selected_inferior().connection
    if connection is None or connection.type not in REMOTE_TYPES:
        return None
    backends = host.backends()
    info = backends.get(GDB_BACKEND)
    options: dict[str, str | None] = {}
    if info is not None:
        options = {opt.name: None for opt in info.options}
    return Selection(GDB_BACKEND, OpenRequest(None, options), "connected to a remote target")


class PtCommand(gdb.Command):
    """A ``pt-*`` command: its help is the session's (argparse usage and options); words that
    start with ``$`` are evaluated by GDB (see :func:`evaluate`)."""

    def __init__(self, name: str, session: Session) -> None:
        self.__doc__ = session.help(name)
        super().__init__(name, gdb.COMMAND_DATA)
        self._name = name
        self._session = session

    def invoke(self, argument: str, from_tty: bool) -> None:
        self.dont_repeat()
        guarded(self._name, lambda: self._run(gdb.string_to_argv(argument)))

    def _run(self, argv: list[str]) -> None:
        words = [evaluate(w) if w.startswith("$") else w for w in argv]
        self._session.run(self._name, words, GdbOut(), colour=colour_wanted())

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
        vaddr = guarded("$pt_phys", lambda: _one_address("$pt_phys", "VADDR", args))
        paddr = guarded("$pt_phys", lambda: self._session.phys(vaddr))
        return _u64(paddr)


class PtVirt(gdb.Function):
    """$pt_virt(PADDR): the first virtual address (lowest, in walk order) that maps PADDR in the
    page table of the selected thread's vCPU on the selected backend; the walk stops at the
    first hit."""

    def __init__(self, session: Session) -> None:
        super().__init__("pt_virt")
        self._session = session

    def invoke(self, *args: gdb.Value) -> gdb.Value:
        paddr = guarded("$pt_virt", lambda: _one_address("$pt_virt", "PADDR", args))
        vaddr = guarded("$pt_virt", lambda: self._session.virt(paddr))
        return _u64(vaddr)


def _one_address(name: str, what: str, args: tuple[gdb.Value, ...]) -> int:
    if len(args) != 1:
        raise gdb.GdbError(f"{name} takes one argument, {what}")
    return int(args[0]) & U64


def _u64(value: int) -> gdb.Value:
    return gdb.Value(value).cast(gdb.lookup_type("unsigned long long"))


@dataclass
class FrontEnd:
    """What :func:`install` registered."""

    session: Session
    commands: list[gdb.Command]
    functions: list[gdb.Function]


_installed: FrontEnd | None = None


def install() -> FrontEnd:
    """Create the session and register the commands and functions; once per GDB (sourcing
    ``gdbinit.py`` again returns what the first time registered)."""
    global _installed
    if _installed is None:
        host = Host.create()
        session = Session(
            host,
            default=lambda: remote_default(host),
            no_backend_hint=NO_BACKEND_HINT,
            live_backends=(GDB_BACKEND,),
            progress=_report_progress,
            progress_after=progress_after(),
        )
        cmds: list[gdb.Command] = [PtCommand(name, session) for name in COMMANDS]
        cmds.append(PtBackendCommand(BACKEND_COMMAND, session))
        _installed = FrontEnd(session, cmds, [PtPhys(session), PtVirt(session)])
    return _installed


def installed() -> FrontEnd | None:
    """The front end :func:`install` registered, if any (tests reach the session through it)."""
    return _installed
