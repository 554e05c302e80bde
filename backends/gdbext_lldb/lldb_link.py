"""The live backend inside LLDB: a link over one LLDB ``gdb-remote`` process, one
:class:`~gdbext_gdbstub.state.LiveState` per process, and the ``lldb`` backend's ``open``.

Loaded only inside LLDB (it imports ``lldb``). Every line of the backend's logic is shared
with GDB's (:mod:`gdbext_gdbstub`: read paths, PhyMemMode bracket, RAM, per-stop cache,
prefetch); this module only speaks LLDB:

- raw packets go through ``process plugin packet send`` and monitor commands through ``process
  plugin packet monitor`` (never a raw ``qRcmd``: its ``O`` packets would put LLDB's replies out
  of step), each run with an explicit execution context for the process, so that they work from
  inside another command;
- LLDB's memory cache survives a PhyMemMode switch and there is no call that drops it, so after
  a switch the link bypasses it (``target.process.disable-memory-cache``) until the command
  ends, then puts the user's setting back: nothing read in the other mode is cached or served;
- control registers come from the SB API (``cr0 cr3 cr4 efer`` of the thread's innermost frame,
  no change of selection); vCPU N is LLDB thread index N+1;
- Ctrl-C: LLDB 14 does not raise ``KeyboardInterrupt`` in a Python command; the link asks the
  command interpreter (``WasInterrupted``) before each read and raises it itself. LLDB then
  refuses every command until the interrupted one ends, so the packets that put PhyMemMode back
  go through a short-lived helper debugger's interpreter, on the same process;
- the table pages are cached for one stop: dropped when the process's stop ID moves (LLDB 14
  has no resume event for Python). Control registers are read again for every command (a
  ``register write`` fires nothing either; LLDB's own register cache makes that cheap). A
  memory write made through LLDB at the same stop is seen from the next stop on;
- LLDB 14 does not notice a stub that went away (QEMU killed): the process stays "stopped" and
  LLDB serves what it cached. Each command first sends :data:`ALIVE_PROBE` (well under a
  millisecond); a stub that answered it before and answers nothing now is gone;
- a stub that stops answering (QEMU stopped with SIGSTOP, hung): LLDB waits the packet timeout,
  then goes on as if the packet had an empty reply (or a read failed), and the late replies put
  every later reply out of step (a register read gets a memory read's bytes). The link notices
  the timeout (an exchange that failed after about the packet timeout), sends nothing more on
  that connection and says to reconnect; so a command waits one packet timeout at most.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import lldb

from gdbext.errors import UsageError
from gdbext.frontend.common import U64
from gdbext.plugin.target import OpenRequest, Target
from gdbext.units import shown
from gdbext_gdbstub.hostpid import parse_address
from gdbext_gdbstub.link import (
    CONTROL_REGISTERS,
    LiveTargetError,
    TargetLostError,
    TargetMemoryError,
)
from gdbext_gdbstub.options import LiveOptions
from gdbext_gdbstub.state import LiveState
from gdbext_lldb.lldb_settings import PACKET_TIMEOUT_SETTING, error_line, set_setting, setting
from gdbext_lldb.naming import NAMING
from gdbext_lldb.relay import RelayProcess

#: LLDB's process plugin for QEMU's gdbstub, KGDB and other remote stubs.
REMOTE_PLUGIN = "gdb-remote"
MEMORY_CACHE_SETTING = "target.process.disable-memory-cache"
#: A failed exchange that took this share of the packet timeout timed out.
TIMED_OUT_SHARE = 0.9
#: What ``process plugin packet`` prints for an empty reply, and for none in time alike.
_NO_REPLY = "error: UNIMPLEMENTED"
#: A packet gdbstubs answer (the current thread: QEMU, KGDB, gdbserver), sent once a command to
#: notice a stub that went away.
ALIVE_PROBE = "qC"
NEEDS_TARGET = (
    "the lldb backend needs a live target: connect LLDB first "
    "(pt-connect HOST:PORT, or gdb-remote HOST:PORT)"
)
_RESPONSE = re.compile(r"^response: (.*)$", re.M)
#: What ``process plugin packet monitor`` prints after the monitor's own output.
_MONITOR_TAIL = re.compile(r"  packet: qRcmd,[0-9a-fA-F]*\nresponse: (.*)\n(?:.*\n)*?\Z")
#: Parts of LLDB's read errors that mean the stub is gone. LLDB 14 does not notice a closed
#: connection by itself: the process stays "stopped" and every packet fails or answers nothing.
_LOST = ("failed to send packet", "connection", "not connected", "broken pipe")
#: Process states in which there is no connection any more.
_GONE = (
    lldb.eStateInvalid,
    lldb.eStateUnloaded,
    lldb.eStateDetached,
    lldb.eStateExited,
)


class LldbProcessLink:
    """:class:`~gdbext_gdbstub.link.DebuggerLink` over one LLDB process of the ``gdb-remote``
    plugin.

    :param debugger: the LLDB session the process belongs to (its command interpreter runs the
        packet commands; its settings hold the memory-cache switch).
    :param process: the process (QEMU: one thread per vCPU).
    """

    def __init__(
        self, debugger: lldb.SBDebugger, process: lldb.SBProcess, address: str | None = None
    ) -> None:
        self._debugger = debugger
        self._process = process
        #: Where ``pt-connect`` connected (the gdbstub's ``HOST:PORT``; LLDB itself talks to the
        #: relay), else None.
        self._address = address
        #: The user's memory-cache setting while the link bypasses the cache (else None).
        self._saved_cache: str | None = None
        #: Why the connection is unusable (a read failed as only a lost connection makes it
        #: fail, the stub went away, a reply timed out: see :meth:`_timed_out`), or None.
        self._gone: str | None = None
        #: The stub answered :data:`ALIVE_PROBE` (so no answer later means it is gone).
        self._answers_probe = False
        # LLDB takes the packet timeout when it connects: the setting now is the nearest.
        try:
            self._timeout = float(setting(debugger, PACKET_TIMEOUT_SETTING) or 0)
        except ValueError:
            self._timeout = 0.0

    # --- errors ---

    def connected(self) -> bool:
        process = self._process
        return self._gone is None and bool(process.IsValid()) and process.GetState() not in _GONE

    def check_usable(self) -> None:
        """:raises TargetLostError: the connection is known to be unusable (a reply timed out
        on it, and its replies are out of step for good; or the stub is gone)."""
        if self._gone is not None:
            raise TargetLostError(self._gone)

    def check_alive(self) -> None:
        """Once a command: LLDB 14 keeps a process whose stub went away (QEMU killed) "stopped"
        and serves what it cached, so ask the stub something. A stub that answered
        :data:`ALIVE_PROBE` before and answers nothing now is gone.

        :raises TargetLostError: it is gone, or a reply timed out on this connection.
        """
        self.check_usable()
        try:
            reply = self.packet(ALIVE_PROBE)
        except TargetLostError:
            raise
        except LiveTargetError:
            reply = ""
        if reply:
            self._answers_probe = True
        elif self._answers_probe:
            self._gone = "lost the connection to the target (the gdbstub is gone)"
            raise TargetLostError(self._gone)

    def _timed_out(self, started: float, what: str) -> bool:
        """True, and the connection marked unusable, when an exchange started at ``started``
        (``time.monotonic()``) that failed waited about the packet timeout for its reply."""
        waited = time.monotonic() - started
        if self._timeout <= 0 or waited < TIMED_OUT_SHARE * self._timeout:
            return False
        self._gone = (
            f"the gdbstub did not answer {what} in {waited:.0f} s (QEMU stopped or hung?); "
            "LLDB's replies are out of step from there on: reconnect ('process detach', then "
            "pt-connect HOST:PORT)"
        )
        return True

    def _running(self) -> bool:
        return bool(self._process.GetState() == lldb.eStateRunning)

    def is_running(self) -> bool:
        """The process runs (asynchronous ``process continue``); LLDB's state, nothing sent."""
        return self._running()

    def _error(self, message: str, what: str) -> LiveTargetError:
        if self._gone is not None:
            return TargetLostError(self._gone)
        if not self.connected():
            return TargetLostError(f"lost the connection to the target ({message})")
        if self._running():
            return LiveTargetError(
                f"the target is running; interrupt it first (process interrupt) ({message})"
            )
        return LiveTargetError(f"{what}: {message}")

    def _command(self, command: str, what: str) -> str:
        """Run an LLDB command on this process; its output. :raises LiveTargetError: it
        failed (``what`` names it in the message), or got no reply in time."""
        if not self.connected():
            raise self._error("not connected", what)  # nothing more is sent on a dead link
        context = lldb.SBExecutionContext(self._process)
        result = lldb.SBCommandReturnObject()
        interpreter = self._debugger.GetCommandInterpreter()
        started = time.monotonic()
        if not interpreter.WasInterrupted():
            interpreter.HandleCommand(command, context, result, False)
        else:
            # After Ctrl-C LLDB refuses every command until the running one ends, but the
            # PhyMemMode must still be put back: a helper debugger's interpreter runs the
            # command on this process (its own interpreter is not interrupted).
            helper = lldb.SBDebugger.Create(False)
            try:
                helper.GetCommandInterpreter().HandleCommand(command, context, result, False)
            finally:
                lldb.SBDebugger.Destroy(helper)
        if not result.Succeeded():
            self._timed_out(started, what)
            raise self._error(error_line(result.GetError()), what)
        out = str(result.GetOutput() or "")
        if _NO_REPLY in out and self._timed_out(started, what):
            raise TargetLostError(str(self._gone))
        return out

    def _check_interrupt(self) -> None:
        if self._debugger.GetCommandInterpreter().WasInterrupted():
            raise KeyboardInterrupt

    # --- DebuggerLink ---

    def read_memory(self, addr: int, size: int) -> bytes:
        self._check_interrupt()
        self.check_usable()
        error = lldb.SBError()
        started = time.monotonic()
        data = self._process.ReadMemory(addr, size, error)
        if error.Fail() or data is None:
            message = error_line(error.GetCString(), f"cannot read 0x{addr:x}")
            if self._timed_out(started, f"a read of 0x{addr:x}"):
                raise TargetLostError(str(self._gone))
            if any(marker in message.lower() for marker in _LOST):
                self._gone = f"lost the connection to the target ({message})"
            if not self.connected() or self._running():
                raise self._error(message, "read")
            raise TargetMemoryError(addr, size, message)
        return bytes(data)

    def packet(self, text: str) -> str:
        out = self._command(f"process plugin packet send {text}", text)
        m = _RESPONSE.search(out)
        if m is None:
            raise LiveTargetError(f"no reply to {text}: {shown(out.strip()[:80])}")
        return m.group(1)

    def monitor(self, command: str) -> str:
        out = self._command(f"process plugin packet monitor {command}", f"monitor {command}")
        m = _MONITOR_TAIL.search(out)
        if m is None:
            raise LiveTargetError(f"monitor {command}: no reply ({shown(out.strip()[-80:])})")
        reply = m.group(1)
        if reply == "":
            raise LiveTargetError("the gdbstub has no monitor (qRcmd)")
        if reply != "OK":
            raise LiveTargetError(f"monitor {command}: the gdbstub answered {shown(reply[:40])}")
        return out[: m.start()].replace("\r\n", "\n")

    def registers(self, thread: int | None = None) -> dict[str, int]:
        process = self._process
        if thread is None:
            sbthread = process.GetSelectedThread()
        else:
            sbthread = process.GetThreadByIndexID(thread)
        if not sbthread.IsValid():
            if not self.connected() or self._running():
                raise self._error("no thread", "registers")
            raise LiveTargetError(f"LLDB has no thread {thread}")
        frame = sbthread.GetFrameAtIndex(0)
        if not frame.IsValid():
            raise self._error("no frame", "registers")
        values: dict[str, int] = {}
        for name in CONTROL_REGISTERS:
            register = frame.FindRegister(name)
            if not register.IsValid():
                continue  # the stub does not have this register (KGDB: no CRs)
            error = lldb.SBError()
            value = register.GetValueAsUnsigned(error, 0)
            if error.Fail():
                raise self._error(error_line(error.GetCString()), f"register {name}")
            values[name] = int(value) & U64
        return values

    def thread_numbers(self) -> list[int]:
        process = self._process
        return sorted(
            int(process.GetThreadAtIndex(i).GetIndexID()) for i in range(process.GetNumThreads())
        )

    def selected_thread(self) -> int | None:
        thread = self._process.GetSelectedThread()
        return int(thread.GetIndexID()) if thread.IsValid() else None

    def flush_cache(self) -> None:
        """Bypass LLDB's memory cache until :meth:`end_bypass` (LLDB cannot drop it)."""
        if self._saved_cache is None:
            self._saved_cache = setting(self._debugger, MEMORY_CACHE_SETTING) or "false"
            set_setting(self._debugger, MEMORY_CACHE_SETTING, "true")

    def end_bypass(self) -> None:
        """Put the user's memory-cache setting back (the command is over). Never fails: a
        setting that does not go back leaves the cache bypassed, which is only slower."""
        saved, self._saved_cache = self._saved_cache, None
        if saved is not None:
            with contextlib.suppress(LiveTargetError):
                set_setting(self._debugger, MEMORY_CACHE_SETTING, saved)

    def symbol_address(self, name: str) -> int | None:
        target = self._process.GetTarget()
        found = target.FindSymbols(name)
        for i in range(found.GetSize()):
            symbol = found.GetContextAtIndex(i).GetSymbol()
            if not symbol.IsValid():
                continue
            addr = symbol.GetStartAddress().GetLoadAddress(target)
            if addr != lldb.LLDB_INVALID_ADDRESS:
                return int(addr) & U64
        return None

    def stub_address(self) -> tuple[str, int] | None:
        """The gdbstub's address as ``pt-connect`` was given it (plain ``gdb-remote`` leaves
        it unknown: LLDB's API does not tell where a process is connected)."""
        return None if self._address is None else parse_address(place(self._address))

    def symbol_value(self, name: str) -> int | None:
        addr = self.symbol_address(name)
        if addr is None:
            return None
        error = lldb.SBError()
        value = self._process.ReadUnsignedFromMemory(addr, 8, error)
        return None if error.Fail() else int(value) & U64


# --- one state per process -------------------------------------------------------------------


@dataclass
class _Connection:
    """The backend's state for one LLDB process, and the stop it was last used at."""

    link: LldbProcessLink
    state: LiveState
    stop_id: int
    #: Where ``pt-connect`` connected it (``HOST:PORT`` as typed), if it did.
    address: str | None = None


#: The state of each process the backend was opened on, by (debugger ID, process unique ID).
_STATES: dict[tuple[int, int], _Connection] = {}
#: What ``pt-connect`` connected each process to (``HOST:PORT``, for descriptions) and the
#: relay it connected through (which exits when LLDB closes the connection).
_URLS: dict[tuple[int, int], tuple[str, RelayProcess]] = {}
#: The PhyMemMode a connection that stopped answering mid-command left QEMU in the wrong
#: mode for, by (debugger ID, address): the next ``pt-connect`` there puts it back.
_LEFT_MODES: dict[tuple[int, str], int] = {}


def _key(debugger: lldb.SBDebugger, process: lldb.SBProcess) -> tuple[int, int]:
    return int(debugger.GetID()), int(process.GetUniqueID())


def remember_address(
    debugger: lldb.SBDebugger, process: lldb.SBProcess, address: str, relay: RelayProcess
) -> None:
    """Note where ``process`` is connected (``pt-connect``), for ``info``, and through which
    relay (see :func:`process_gone`)."""
    _URLS[_key(debugger, process)] = (address, relay)


def process_gone(debugger: lldb.SBDebugger, process: lldb.SBProcess, settle: float = 0.0) -> bool:
    """Whether ``process`` has no connection any more.

    LLDB changes a process's state when its event is delivered, moments after ``process
    detach`` returned; a ``pt-connect`` connection is over at once when its relay has exited
    because LLDB ended the session (LLDB closes it within the detach, the relay exits
    moments later: ``settle`` is how many seconds to wait for that). A stub that went away is
    not this: LLDB still holds the process, and the link says the stub is gone.
    """
    if not process.IsValid() or process.GetState() in _GONE:
        return True
    known = _URLS.get(_key(debugger, process))
    return known is not None and known[1].ended_by_lldb(settle)


def place(address: str) -> str:
    """A gdbstub's ``[HOST:]PORT`` as ``HOST:PORT`` (``gdb-remote PORT`` is the local host's).

    >>> place("1234"), place("localhost:1234"), place("10.0.0.2:1234")
    ('127.0.0.1:1234', '127.0.0.1:1234', '10.0.0.2:1234')
    """
    host, _, port = address.rpartition(":")
    if host in ("", "localhost"):
        host = "127.0.0.1"
    return f"{host}:{port}"


def left_mode(debugger: lldb.SBDebugger, address: str) -> int | None:
    """The PhyMemMode to put back at ``address``: a connection there stopped answering in the
    middle of a command, in the other mode (see :func:`forget_left_mode`); else None."""
    return _LEFT_MODES.get((int(debugger.GetID()), place(address)))


def forget_left_mode(debugger: lldb.SBDebugger, address: str) -> None:
    """The mode at ``address`` is as it should be again."""
    _LEFT_MODES.pop((int(debugger.GetID()), place(address)), None)


def _forget_gone(debugger_id: int, live: int) -> None:
    """Drop the states of ``debugger_id``'s processes other than ``live`` (reconnected)."""
    for key in [k for k in _STATES if k[0] == debugger_id and k[1] != live]:
        del _STATES[key]
        _URLS.pop(key, None)


def state_for(
    debugger: lldb.SBDebugger, process: lldb.SBProcess
) -> tuple[LiveState, LldbProcessLink]:
    """The state of ``process`` and its link, made on first use; its cache is dropped when the
    process stopped again since the state was last used."""
    key = _key(debugger, process)
    _forget_gone(key[0], key[1])
    stop_id = int(process.GetStopID())
    conn = _STATES.get(key)
    if conn is None:
        address = _URLS[key][0] if key in _URLS else None
        link = LldbProcessLink(debugger, process, address)
        description = f"{REMOTE_PLUGIN} {address}" if address else REMOTE_PLUGIN
        conn = _Connection(link, LiveState(link, description, NAMING), stop_id, address)
        _STATES[key] = conn
    elif conn.stop_id != stop_id:
        if process.GetState() == lldb.eStateRunning:
            conn.state.stopped()  # it stopped again since: the registers read are not its last
        else:
            conn.state.invalidate()
        conn.stop_id = stop_id
    else:
        conn.state.forget_cpus()  # `register write cr3 ...` at the same stop
    return conn.state, conn.link


def debugger_of(request: OpenRequest) -> lldb.SBDebugger:
    """The LLDB session the request names (option ``debugger``, an ``SBDebugger`` ID), else
    the one running the Python code (``lldb.debugger``: LLDB sets it for ``script`` and for
    scripts it runs), so that ``gdbext.open(backend="lldb")`` needs no ID."""
    text = request.options.get("debugger")
    if text is None:
        current = getattr(lldb, "debugger", None)
        if current is not None and current.IsValid():
            return current
        raise UsageError(
            "the lldb backend needs --debugger ID (the pt-* commands in LLDB give their own)"
        )
    try:
        debugger = lldb.SBDebugger.FindDebuggerWithID(int(text, 0))
    except ValueError:
        raise UsageError(f"--debugger: not a debugger ID: {shown(text)}") from None
    if not debugger.IsValid():
        raise UsageError(f"--debugger {text}: LLDB has no such debugger")
    return debugger


def live_process(debugger: lldb.SBDebugger, settle: float = 0.0) -> lldb.SBProcess | None:
    """The selected target's process when it is a live ``gdb-remote`` connection, else None
    (``settle``: see :func:`process_gone`)."""
    process = debugger.GetSelectedTarget().GetProcess()
    if process_gone(debugger, process, settle):
        return None
    if process.GetPluginName() != REMOTE_PLUGIN:
        return None
    return process


def open_target(request: OpenRequest) -> Target:
    """The ``lldb`` backend's ``open``: the selected target of the debugger the request names."""
    options = LiveOptions.from_request(request, NAMING)
    debugger = debugger_of(request)
    process = debugger.GetSelectedTarget().GetProcess()
    if process_gone(debugger, process):
        raise UsageError(NEEDS_TARGET)
    plugin = process.GetPluginName()
    if plugin != REMOTE_PLUGIN:
        raise UsageError(
            f"the lldb backend reads a {REMOTE_PLUGIN} target (QEMU's gdbstub, KGDB), not a "
            f"{plugin} one"
        )
    state, link = state_for(debugger, process)
    if link.is_running():
        link.check_usable()  # nothing is sent while it runs; the host path checks QEMU itself
    else:
        link.check_alive()
    target = state.open(options)
    conn = _STATES[_key(debugger, process)]
    return dataclasses.replace(target, command_scope=lambda: _command_scope(debugger, conn))


@contextlib.contextmanager
def _command_scope(debugger: lldb.SBDebugger, conn: _Connection) -> Iterator[None]:
    """The PhyMemMode bracket of one command; when it closes, LLDB's memory cache is used
    again as the user had it. A mode the bracket could not put back because the stub stopped
    answering is noted for the next ``pt-connect`` to the same place."""
    bracket = conn.state.bracket
    try:
        with bracket.scope():
            yield
    finally:
        if bracket.depth == 0:
            conn.link.end_bypass()
            left = bracket.unrestored
            if left is not None and conn.address and not conn.link.connected():
                _LEFT_MODES[int(debugger.GetID()), place(conn.address)] = left
