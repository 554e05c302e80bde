"""``pt-connect HOST:PORT``: connect LLDB to a gdbstub, also when the VM is running.

LLDB 14's ``gdb-remote`` fails every second time against a *running* QEMU: QEMU stops the VM
when a debugger connects and sends an unsolicited stop reply, which LLDB takes for the answer to
its first handshake packet ("failed to get reply to handshake packet"). The failed attempt
leaves the VM stopped, so a second attempt succeeds. :func:`connect` retries on exactly that
error, a few times, and reports anything else at once.

It also raises ``plugin.process.gdb-remote.packet-timeout`` to :data:`PACKET_TIMEOUT` seconds
(never lowers it): QEMU's monitor answers some commands slowly under TCG (``info tlb`` of a
big guest, ``info mtree``), and LLDB's default of 5 s is short on a loaded machine.

Loaded only inside LLDB (it imports ``lldb``).
"""

from __future__ import annotations

import time

import lldb

from gdbext.errors import UsageError
from gdbext.session import Writer
from gdbext_gdb.link import LiveTargetError
from gdbext_lldb.lldb_link import live_process, remember_address

PACKET_TIMEOUT_SETTING = "plugin.process.gdb-remote.packet-timeout"
#: Seconds LLDB waits for a reply to a packet, at least.
PACKET_TIMEOUT = 10
#: Connection attempts when the handshake fails (a running VM fails one in two).
ATTEMPTS = 4
#: Seconds between attempts.
RETRY_DELAY = 0.05
_HANDSHAKE = "handshake"


def raise_packet_timeout(debugger: lldb.SBDebugger) -> None:
    """Make LLDB wait at least :data:`PACKET_TIMEOUT` seconds for a reply."""
    name = debugger.GetInstanceName()
    values = debugger.GetInternalVariableValue(PACKET_TIMEOUT_SETTING, name)
    try:
        current = int(values.GetStringAtIndex(0)) if values.GetSize() else 0
    except ValueError:
        current = 0
    if current < PACKET_TIMEOUT:
        debugger.SetInternalVariable(PACKET_TIMEOUT_SETTING, str(PACKET_TIMEOUT), name)


def _first_line(text: str | None) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip().removeprefix("error:").strip()
    return "failed"


def connect(debugger: lldb.SBDebugger, address: str, out: Writer) -> None:
    """``gdb-remote ADDRESS`` in ``debugger``, retried while the handshake fails; LLDB's report
    of the stop goes to ``out``.

    :raises UsageError: the selected target is already connected, or no address was given.
    :raises LiveTargetError: the connection failed (one line, LLDB's reason).
    """
    if not address or any(c.isspace() for c in address):
        raise UsageError("pt-connect takes one argument, [HOST:]PORT (QEMU's -gdb tcp::PORT)")
    if live_process(debugger) is not None:
        raise UsageError(
            "pt-connect: LLDB is already connected; 'process detach' first (which resumes the VM)"
        )
    raise_packet_timeout(debugger)
    interpreter = debugger.GetCommandInterpreter()
    error = ""
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(RETRY_DELAY)
        result = lldb.SBCommandReturnObject()
        interpreter.HandleCommand(f"gdb-remote {address}", result, False)
        if result.Succeeded():
            process = debugger.GetSelectedTarget().GetProcess()
            if process.IsValid():
                remember_address(debugger, process, address)
            out.write(str(result.GetOutput() or ""))
            return
        error = _first_line(result.GetError())
        if _HANDSHAKE not in error:
            break
    raise LiveTargetError(f"pt-connect {address}: {error}")
