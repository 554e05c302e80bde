"""The live backend inside GDB: a :class:`~gdbext_gdbstub.link.DebuggerLink` over the ``gdb``
module, one :class:`~gdbext_gdbstub.state.LiveState` per GDB connection, and the events that
drop its cache.

Loaded only inside GDB (it imports ``gdb``). :func:`open_target` is the ``gdb`` backend's
``open``: it finds the selected inferior's connection, makes its state on first use and
registers that state's event handlers once (resume, stop, memory write, register write,
inferior exit, inferior call, new thread; the state is dropped when GDB removes the
connection).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import gdb

from gdbext.errors import GdbextError, UsageError
from gdbext.frontend.common import first_line
from gdbext.plugin.target import OpenRequest, Target
from gdbext.units import shown
from gdbext_gdb.naming import NAMING
from gdbext_gdbstub.hostpid import parse_address
from gdbext_gdbstub.link import (
    CONTROL_REGISTERS,
    LiveTargetError,
    TargetLostError,
    TargetMemoryError,
)
from gdbext_gdbstub.options import LiveOptions
from gdbext_gdbstub.state import LiveState

#: Connection types the backend works with: QEMU's gdbstub, KGDB, VMware all speak remote.
REMOTE_TYPES = ("remote", "extended-remote")
_RECEIVED = re.compile(r'received: "(.*)"\s*$', re.DOTALL)
#: Parts of GDB's messages that mean the connection is gone.
_LOST = (
    "remote connection closed",
    "target disconnected",
    "connection reset",
    "broken pipe",
    "end of file",
    "not connected",
    "the program is not being run",
    "no registers",
    "remote communication error",
)
_RUNNING = ("while the target is running", "selected thread is running", "thread is running")
#: Parts of GDB's messages about replies it could not parse (a stub that stopped answering in
#: time leaves GDB's and its packets out of step).
_GARBLED = ("invalid hex digit", "packet error", "bad reply", "remote failure reply")


def _message(exc: BaseException) -> str:
    """The first line of GDB's message (its later lines repeat the packet), else the error's
    type."""
    return first_line(str(exc), type(exc).__name__)


class GdbConnectionLink:
    """:class:`~gdbext_gdbstub.link.DebuggerLink` over one GDB inferior and its remote
    connection."""

    def __init__(self, inferior: gdb.Inferior) -> None:
        self._inferior = inferior
        #: GDB's threads of the inferior: asked for once (``Inferior.threads`` makes GDB ask
        #: the stub, 2-3 round trips), then kept as GDB's own list is kept: GDB asks the stub
        #: at every stop it presents and reports each thread it adds (:meth:`thread_added`);
        #: an exited thread is no longer valid.
        self._threads: list[gdb.InferiorThread] | None = None

    # --- errors ---

    def connected(self) -> bool:
        inf = self._inferior
        return inf.is_valid() and inf.connection is not None and inf.pid != 0

    def _error(self, exc: gdb.error, what: str) -> GdbextError:
        message = _message(exc)
        lowered = message.lower()
        if not self.connected() or any(m in lowered for m in _LOST):
            return TargetLostError(f"lost the connection to the target ({message})")
        if any(m in lowered for m in _RUNNING):
            return LiveTargetError(f"the target is running; interrupt it first ({message})")
        if any(m in lowered for m in _GARBLED):
            return LiveTargetError(
                f"{what}: the gdbstub's reply was garbled ({message}); if it stopped answering, "
                "reconnect with target remote"
            )
        return LiveTargetError(f"{what}: {message}")

    def _execute(self, command: str) -> str:
        try:
            out = gdb.execute(command, to_string=True)
        except gdb.error as exc:
            raise self._error(exc, command.split(" ", 2)[0]) from None
        return out or ""

    # --- DebuggerLink ---

    def read_memory(self, addr: int, size: int) -> bytes:
        try:
            return self._inferior.read_memory(addr, size).tobytes()
        except gdb.MemoryError as exc:
            if not self.connected():
                raise TargetLostError(
                    f"lost the connection to the target ({_message(exc)})"
                ) from None
            raise TargetMemoryError(addr, size, _message(exc)) from None
        except gdb.error as exc:
            raise self._error(exc, "read") from None

    def packet(self, text: str) -> str:
        out = self._execute(f"maintenance packet {text}")
        m = _RECEIVED.search(out)
        if m is None:
            raise LiveTargetError(f"no reply to {text}: {shown(out.strip()[:80])}")
        return m.group(1)

    def monitor(self, command: str) -> str:
        return self._execute(f"monitor {command}")

    def registers(self, thread: int | None = None) -> dict[str, int]:
        selected = gdb.selected_thread()
        if thread is None or (selected is not None and selected.num == thread):
            return self._read_registers()
        target = next((t for t in self._inferior.threads() if t.num == thread), None)
        if target is None:
            raise LiveTargetError(f"GDB has no thread {thread}")
        frame: gdb.Frame | None
        try:
            frame = gdb.selected_frame()
        except gdb.error:
            frame = None
        try:
            target.switch()
            return self._read_registers()
        finally:
            if selected is not None and selected.is_valid():
                selected.switch()
                if frame is not None and frame.is_valid():
                    frame.select()

    def _read_registers(self) -> dict[str, int]:
        try:
            frame = gdb.newest_frame()
        except gdb.error as exc:
            raise self._error(exc, "registers") from None
        values: dict[str, int] = {}
        for name in CONTROL_REGISTERS:
            try:
                values[name] = int(frame.read_register(name)) & ((1 << 64) - 1)
            except ValueError:
                continue  # the stub does not have this register (KGDB: no CRs)
            except gdb.error as exc:
                raise self._error(exc, f"register {name}") from None
        return values

    def thread_numbers(self) -> list[int]:
        threads = self._threads
        if threads is None:
            try:
                threads = self._threads = list(self._inferior.threads())
            except gdb.error as exc:
                raise self._error(exc, "threads") from None
        threads[:] = [t for t in threads if t.is_valid()]
        return sorted(t.num for t in threads)

    def thread_added(self, thread: gdb.InferiorThread) -> None:
        """Take in a thread GDB added (its ``new_thread`` event)."""
        if self._threads is not None and thread.inferior == self._inferior:
            self._threads.append(thread)

    def selected_thread(self) -> int | None:
        thread = gdb.selected_thread()
        return None if thread is None else thread.num

    def flush_cache(self) -> None:
        self._execute("maintenance flush dcache")

    def symbol_value(self, name: str) -> int | None:
        try:
            value = gdb.parse_and_eval(f"*(unsigned long *)&{name}")
            return int(value) & ((1 << 64) - 1)
        except (gdb.error, RuntimeError, ValueError):
            return None

    def symbol_address(self, name: str) -> int | None:
        try:
            return int(gdb.parse_and_eval(f"(unsigned long)&{name}")) & ((1 << 64) - 1)
        except (gdb.error, RuntimeError, ValueError):
            return None

    def is_running(self) -> bool:
        """The selected thread of the inferior runs (``continue &``; in all-stop mode all its
        threads run together). GDB's own thread state: nothing sent (``Inferior.threads()``
        would ask the stub for its thread list, which GDB refuses while the target runs)."""
        thread = gdb.selected_thread()
        if thread is None or not thread.is_valid() or thread.inferior != self._inferior:
            return False
        return bool(thread.is_running())

    def stub_address(self) -> tuple[str, int] | None:
        """The remote connection's ``HOST:PORT`` (GDB's ``details`` of the connection)."""
        connection = self._inferior.connection if self._inferior.is_valid() else None
        details = getattr(connection, "details", None)
        return parse_address(details) if isinstance(details, str) else None


# --- one state per connection ----------------------------------------------------------------

#: The state of each GDB connection the backend was opened on (keyed by GDB's object).
_STATES: dict[Any, LiveState] = {}
#: Event registries and handlers connected for each state (disconnected with the connection).
_HANDLERS: dict[Any, list[tuple[Any, Callable[[Any], None]]]] = {}


def _describe(connection: Any) -> str:
    details = getattr(connection, "details", None) or getattr(connection, "description", "")
    return f"{connection.type} {details}".strip()


def _watch(connection: Any, state: LiveState) -> None:
    """Connect ``state``'s handlers to GDB's events (once per connection)."""
    if connection in _HANDLERS:
        return
    events = gdb.events

    def drop(_event: Any) -> None:
        state.invalidate()

    def exited(event: Any) -> None:
        inferior = getattr(event, "inferior", None)
        if inferior is None or not inferior.is_valid() or inferior.connection in (None, connection):
            state.invalidate()

    def removed(event: Any) -> None:
        if getattr(event, "connection", None) is connection:
            forget(connection)

    handlers: list[tuple[Any, Callable[[Any], None]]] = [
        (events.cont, drop),
        (events.stop, lambda _event: state.stopped()),
        (events.memory_changed, drop),
        (events.register_changed, lambda _event: state.registers_changed()),
        (events.inferior_call, drop),
        (events.exited, exited),
    ]
    link = state.link
    if isinstance(link, GdbConnectionLink):
        handlers.append((events.new_thread, lambda event: link.thread_added(event.inferior_thread)))
    removed_registry = getattr(events, "connection_removed", None)
    if removed_registry is not None:
        handlers.append((removed_registry, removed))
    for registry, handler in handlers:
        registry.connect(handler)
    _HANDLERS[connection] = handlers


def forget(connection: Any) -> None:
    """Drop the state of ``connection`` and disconnect its handlers."""
    state = _STATES.pop(connection, None)
    if state is not None:
        state.invalidate()
    for registry, handler in _HANDLERS.pop(connection, []):
        registry.disconnect(handler)


def state_for(inferior: gdb.Inferior) -> LiveState:
    """The state of ``inferior``'s connection, made (and watched) on first use."""
    connection = inferior.connection
    if connection is None or inferior.pid == 0:
        raise UsageError(
            "the gdb backend needs a live target: connect GDB first (target remote HOST:PORT)"
        )
    if connection.type not in REMOTE_TYPES:
        raise UsageError(
            f"the gdb backend reads a remote target (QEMU's gdbstub, KGDB), not a "
            f"{connection.type} one"
        )
    state = _STATES.get(connection)
    if state is None:
        state = LiveState(GdbConnectionLink(inferior), _describe(connection), NAMING)
        _STATES[connection] = state
    _watch(connection, state)
    return state


def open_target(request: OpenRequest) -> Target:
    """The ``gdb`` backend's ``open``: the target of the selected inferior's connection."""
    options = LiveOptions.from_request(request, NAMING)
    return state_for(gdb.selected_inferior()).open(options)
