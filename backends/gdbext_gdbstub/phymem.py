"""QEMU's PhyMemMode, switched on for reads and restored afterwards.

QEMU's gdbstub reads memory as virtual addresses of the selected vCPU unless
``Qqemu.PhyMemMode:1`` switched it to physical addresses. The mode is global in QEMU and
survives reconnects, so nothing may assume it is 0: :class:`ModeBracket` queries it
(``qqemu.PhyMemMode``), switches to the mode a read needs, and puts the previous one back when
the outermost bracket exits, also on errors and on Ctrl-C (``KeyboardInterrupt``).

A bracket is re-entrant and lazy: entering it sends nothing; the first read that needs a mode
sends one query and at most one switch, and the exit at most one restore. The debugger's memory
cache is flushed after each switch, so it never serves bytes read in the other mode.

>>> from types import SimpleNamespace
>>> sent = []
>>> mode = {"value": 0}
>>> def packet(text):
...     sent.append(text)
...     if text == QUERY:
...         return str(mode["value"])
...     mode["value"] = int(text.rpartition(":")[2])
...     return "OK"
>>> link = SimpleNamespace(packet=packet, flush_cache=lambda: None, connected=lambda: True)
>>> bracket = ModeBracket(PhyMemMode(link), link)
>>> with bracket.scope():
...     with bracket.scope():
...         bracket.ensure(1)
...     bracket.ensure(1)
>>> sent, mode["value"]
(['qqemu.PhyMemMode', 'Qqemu.PhyMemMode:1', 'Qqemu.PhyMemMode:0'], 0)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from gdbext.errors import GdbextError
from gdbext_gdbstub.link import LiveTargetError, TargetLostError

QUERY = "qqemu.PhyMemMode"
SET = "Qqemu.PhyMemMode:{}"


class _PacketLink(Protocol):
    def packet(self, text: str) -> str: ...

    def flush_cache(self) -> None: ...

    def connected(self) -> bool: ...


def _short(reply: str) -> str:
    """A reply for an error message: quoted, at most 40 characters."""
    return repr(reply if len(reply) <= 40 else reply[:37] + "...")


class PhyMemMode:
    """The ``qqemu.PhyMemMode`` packets of one connection."""

    def __init__(self, link: _PacketLink) -> None:
        self._link = link

    def query(self) -> int | None:
        """The stub's mode (0 virtual, 1 physical), or ``None`` if it has no PhyMemMode."""
        reply = self._link.packet(QUERY)
        if reply in ("0", "1"):
            return int(reply)
        if reply == "" or reply.startswith("E"):
            return None
        raise LiveTargetError(
            f"unexpected reply {_short(reply)} to {QUERY} (the gdbstub's replies are out of step; "
            "reconnect with target remote)"
        )

    def set(self, mode: int) -> None:
        """Switch the stub to ``mode``. :raises LiveTargetError: the stub refused."""
        packet = SET.format(mode)
        reply = self._link.packet(packet)
        if reply != "OK":
            why = _short(reply) if reply else "not supported"
            raise LiveTargetError(f"the gdbstub refused {packet} ({why})")

    def supported(self) -> bool:
        """True if the stub answers the query and accepts a switch (to the mode it is in, so
        that probing changes nothing)."""
        current = self.query()
        if current is None:
            return False
        try:
            self.set(current)
        except TargetLostError:
            raise
        except LiveTargetError:
            return False
        return True


@dataclass
class BracketStats:
    """Packets a bracket sent, for tests and benchmarks."""

    queries: int = 0
    switches: int = 0
    restores: int = 0


class ModeBracket:
    """Re-entrant scope that holds the stub in the mode reads need and restores it after."""

    def __init__(self, phymem: PhyMemMode, link: _PacketLink) -> None:
        self._phymem = phymem
        self._link = link
        #: How many scopes are open.
        self.depth = 0
        #: The mode found when the outermost scope first needed one (None: not queried yet).
        self._previous: int | None = None
        #: The mode the stub is in as far as this bracket knows.
        self._current: int | None = None
        #: A switch was attempted in this scope (restore even if it failed half-way).
        self._switched = False
        #: The mode the last outermost scope could not put back (the stub stopped answering,
        #: or refused), else None: a debugger that reconnects can put it back then.
        self.unrestored: int | None = None
        self.stats = BracketStats()

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Bracket a command: the previous mode is back when the outermost scope exits.

        A failing restore is reported only when the command itself succeeded; otherwise the
        command's own error (or ``KeyboardInterrupt``) is the one that propagates.
        """
        self.depth += 1
        try:
            yield
        except BaseException:
            self.depth -= 1
            if self.depth == 0:
                self._restore(quiet=True)
            raise
        self.depth -= 1
        if self.depth == 0:
            self._restore(quiet=False)

    def ensure(self, wanted: int | None) -> None:
        """Put the stub in mode ``wanted`` (``None``: any mode) for the rest of the scope."""
        if wanted is None or self._current == wanted:
            return
        if self.depth <= 0:
            raise AssertionError("ModeBracket.ensure outside a scope")
        if self._previous is None:
            self.stats.queries += 1
            found = self._phymem.query()
            if found is None:
                raise LiveTargetError("the gdbstub has no PhyMemMode (qqemu.PhyMemMode)")
            self._previous = self._current = found
            if found == wanted:
                return
        self._switched = True
        self.stats.switches += 1
        self._phymem.set(wanted)
        self._current = wanted
        self._link.flush_cache()

    def _restore(self, quiet: bool) -> None:
        previous, switched = self._previous, self._switched
        self._previous = self._current = None
        self._switched = False
        if previous is None or not switched:
            return
        try:
            self._put_back(previous)
            self.unrestored = None
        except GdbextError as exc:
            self.unrestored = previous
            if quiet or isinstance(exc, TargetLostError) or not self._link.connected():
                return  # the command's own error wins; a lost target has no mode to restore
            raise LiveTargetError(f"could not restore PhyMemMode to {previous}: {exc}") from None

    def _put_back(self, previous: int) -> None:
        self.stats.restores += 1
        try:
            self._phymem.set(previous)
        except KeyboardInterrupt:
            # Ctrl-C pressed again while restoring: try once more, then let it through.
            try:
                self._phymem.set(previous)
            finally:
                self._link.flush_cache()
            raise
        self._link.flush_cache()
