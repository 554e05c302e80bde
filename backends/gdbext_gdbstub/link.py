"""What the live backend needs from a debugger: the small :class:`DebuggerLink` protocol and its
errors.

The backend's logic (:mod:`gdbext_gdbstub.state`, :mod:`gdbext_gdbstub.readpath`,
:mod:`gdbext_gdbstub.phymem`) talks to the debugger only through a link, so that it runs and is
tested without a debugger and serves GDB and LLDB alike: ``gdbext_gdb.gdb_link`` implements it
with the ``gdb`` module, ``gdbext_lldb.lldb_link`` with the ``lldb`` module. A link turns every
debugger error into one of the errors below (one-line messages); ``KeyboardInterrupt`` (Ctrl-C)
passes through unchanged.
"""

from __future__ import annotations

from typing import Protocol

from gdbext.errors import GdbextError

#: The control registers a CPU state is built from.
CONTROL_REGISTERS = ("cr0", "cr3", "cr4", "efer")


class LiveTargetError(GdbextError):
    """The live target cannot do what was asked: not connected, running, a refused packet."""


class TargetLostError(LiveTargetError):
    """The connection to the target is gone (QEMU killed, gdbstub closed, GDB detached)."""


class TargetMemoryError(LiveTargetError):
    """The target refused a memory read at ``addr`` (a virtual or physical address)."""

    def __init__(self, addr: int, size: int, message: str) -> None:
        super().__init__(message)
        self.addr = addr
        self.size = size


class DebuggerLink(Protocol):
    """One debugger connection to a target (a GDB inferior's remote connection, an LLDB
    gdb-remote process), as the live backend uses it. Thread numbers are the debugger's (GDB's
    thread numbers, LLDB's thread index IDs)."""

    def read_memory(self, addr: int, size: int) -> bytes:
        """``size`` bytes at ``addr`` as the stub reads memory right now (virtual, or physical
        under PhyMemMode). :raises TargetMemoryError: the stub refused the read."""
        ...

    def packet(self, text: str) -> str:
        """Send one raw remote-protocol packet (GDB: ``maintenance packet``, LLDB: ``process
        plugin packet send``); its reply payload (``""`` when the stub does not know it)."""
        ...

    def monitor(self, command: str) -> str:
        """The output of ``monitor COMMAND``. :raises LiveTargetError: no monitor."""
        ...

    def registers(self, thread: int | None = None) -> dict[str, int]:
        """The :data:`CONTROL_REGISTERS` that the stub has, of the debugger's thread number
        ``thread`` (``None``: the selected thread), read in its innermost frame. The debugger's
        selection (thread and frame) is the same afterwards."""
        ...

    def thread_numbers(self) -> list[int]:
        """The debugger's thread numbers (QEMU: one per vCPU, thread N+1 = CPU N). Not
        asked while the target runs (GDB asks the stub)."""
        ...

    def selected_thread(self) -> int | None:
        """The selected thread's number, or ``None``."""
        ...

    def flush_cache(self) -> None:
        """Called after each PhyMemMode switch (and restore): the debugger must not serve bytes
        it cached in the other mode. GDB drops its cache (``maintenance flush dcache``); LLDB,
        which cannot drop its cache, bypasses it until the command ends."""
        ...

    def symbol_value(self, name: str) -> int | None:
        """The value of the global variable ``name`` when the debugger has symbols for it (read
        as the stub reads memory now), else ``None``."""
        ...

    def symbol_address(self, name: str) -> int | None:
        """The address of the symbol ``name`` when the debugger has symbols for it (no memory
        read), else ``None``."""
        ...

    def connected(self) -> bool:
        """False once the connection is gone."""
        ...

    def is_running(self) -> bool:
        """True while the target runs (the debugger resumed it and it has not stopped since:
        GDB's ``continue &`` or non-stop mode, LLDB's asynchronous ``process continue``).
        Nothing is sent; while it runs nothing else may be sent either (the debugger would
        refuse, or wait for a stop)."""
        ...

    def stub_address(self) -> tuple[str, int] | None:
        """The gdbstub's TCP address ``(host, port)`` as the debugger connected to it (GDB:
        the remote target's address; LLDB: where ``pt-connect`` connected), else ``None`` (a
        serial line, a pipe, unknown). Nothing is sent."""
        ...
