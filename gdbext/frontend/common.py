"""What the GDB and the LLDB front ends share, with no debugger in it.

Each adapter (:mod:`gdbext_gdb.gdb_commands`, :mod:`gdbext_lldb.lldb_commands`) only speaks its
debugger: it reads the debugger's own setting, evaluates a word, raises or reports an error the
debugger's way, and passes those bits in here. Everything else about a front end (how an error
becomes one line, when output is coloured, which backend is the default on a gdbstub connection,
what to say when there is none) is decided once, in this module, so both debuggers print the same
bytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

from gdbext.errors import GdbextError

if TYPE_CHECKING:  # the links use the text helpers without loading the session
    from gdbext.plugin.host import Host
    from gdbext.session import Selection, Session

#: All 64 bits (a value a debugger evaluated is shown as an unsigned 64-bit word).
U64 = (1 << 64) - 1

H = TypeVar("H")


@dataclass
class FrontEnd(Generic[H]):
    """What an adapter's ``install`` registered: the session its commands share, and the
    debugger's handles of what it registered (GDB: the command and function objects, which must
    stay referenced; LLDB: the command names)."""

    session: Session
    registered: list[H] = field(default_factory=list)


def one_line(text: str) -> str:
    """``text``'s non-empty lines, stripped and joined with ``"; "`` (a front end shows every
    failure on one line)."""
    return "; ".join(part.strip() for part in str(text).splitlines() if part.strip())


def first_line(text: str | None, default: str, prefix: str = "") -> str:
    """The first non-empty line of ``text``, stripped and without ``prefix`` (a debugger's
    ``error:``), else ``default``: a debugger's message whose first line says it all."""
    for line in (text or "").splitlines():
        line = line.strip()
        if line:
            return line.removeprefix(prefix).strip()
    return default


def hex_word(value: int) -> str:
    """``value`` as the word a command is given in its place: hex, as an unsigned 64-bit
    number (``$rsp`` evaluated)."""
    return f"0x{int(value) & U64:x}"


def evaluated(words: Sequence[str], evaluate: Callable[[str], str]) -> list[str]:
    """``words`` with each word that starts with ``$`` replaced by ``evaluate(word)`` (the
    debugger's evaluation of a register, variable or expression), the others as typed."""
    return [evaluate(w) if w.startswith("$") else w for w in words]


def colour_wanted(debugger_colours: bool) -> bool:
    """Colour only where the debugger would colour its own output (``debugger_colours``: GDB's
    ``set style enabled``, LLDB's ``use-color``), standard output is a terminal, and the
    terminal type is not ``dumb``."""
    return debugger_colours and os.isatty(1) and os.environ.get("TERM", "dumb") != "dumb"


def failure_line(
    name: str, exc: BaseException, debugger_errors: tuple[type[BaseException], ...] = ()
) -> str | None:
    """The one line command ``name`` shows for an expected failure ``exc``: a
    :class:`~gdbext.errors.GdbextError` as its message, Ctrl-C as ``NAME: interrupted``, an
    ``OSError`` or one of ``debugger_errors`` (the debugger's own read or connection errors) as
    ``NAME: message``; None for anything else (each adapter decides what an unexpected error
    shows)."""
    if isinstance(exc, GdbextError):
        return one_line(str(exc))
    if isinstance(exc, KeyboardInterrupt):
        return f"{name}: interrupted"
    if isinstance(exc, (*debugger_errors, OSError)):
        return f"{name}: {one_line(str(exc))}"
    return None


def no_backend_hint(connect: str, backend: str) -> str:
    """What to do when no backend is selected: ``connect`` is the debugger's command that
    connects to a gdbstub (its live ``backend`` is then the default)."""
    return (
        f"connect to a gdbstub ({connect} HOST:PORT) for backend '{backend}', or select one: "
        "pt-backend NAME [ARGS], e.g. pt-backend core FILE"
    )


def remote_default(
    host: Host, backend: str, connected: bool, options: Mapping[str, str] | None = None
) -> Selection | None:
    """The default backend: the debugger's live ``backend`` while it is ``connected`` to a
    gdbstub (its options unset, but for ``options``: LLDB names its debugger), else None."""
    if not connected:
        return None
    from gdbext.plugin.target import OpenRequest
    from gdbext.session import Selection  # here: see TYPE_CHECKING above

    info = host.backends().get(backend)
    chosen: dict[str, str | None] = {}
    if info is not None:
        chosen = {opt.name: None for opt in info.options}
    chosen.update(options or {})
    return Selection(backend, OpenRequest(None, chosen), "connected to a remote target")
