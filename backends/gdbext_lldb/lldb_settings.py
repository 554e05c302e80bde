"""LLDB's settings as gdbext reads and sets them, and the packet timeout it raises when loaded.

Loading gdbext raises ``plugin.process.gdb-remote.packet-timeout`` to :data:`PACKET_TIMEOUT`
seconds (:func:`raise_packet_timeout`, never lowering it; a value set afterwards stays): QEMU's
monitor answers some commands slowly under TCG (``info tlb`` of a big guest, ``info mtree``),
and LLDB's default of 5 s is short on a loaded machine. LLDB takes the value when it connects.

A module of its own, importing no connection code, so that loading gdbext into LLDB does not
load what only ``pt-connect`` and a live target need.

Loaded only inside LLDB (it imports ``lldb``).
"""

from __future__ import annotations

import lldb

from gdbext.frontend.common import first_line
from gdbext_gdbstub.link import LiveTargetError

#: How long LLDB waits for a packet's reply (seconds).
PACKET_TIMEOUT_SETTING = "plugin.process.gdb-remote.packet-timeout"
#: Seconds LLDB waits for a reply to a packet, at least.
PACKET_TIMEOUT = 10


def error_line(text: str | None, default: str = "unknown error") -> str:
    """The first non-empty line of LLDB's error ``text`` without its ``error:`` prefix (LLDB's
    later lines repeat the command), else ``default``."""
    return first_line(text, default, "error:")


def setting(debugger: lldb.SBDebugger, name: str) -> str | None:
    """The value of LLDB's setting ``name`` in ``debugger`` (None when LLDB has none)."""
    values = debugger.GetInternalVariableValue(name, debugger.GetInstanceName())
    return str(values.GetStringAtIndex(0)) if values.GetSize() else None


def set_setting(debugger: lldb.SBDebugger, name: str, value: str) -> None:
    """``settings set NAME VALUE`` in ``debugger``. :raises LiveTargetError: LLDB refused."""
    error = debugger.SetInternalVariable(name, value, debugger.GetInstanceName())
    if error.Fail():
        raise LiveTargetError(f"settings set {name} {value}: {error_line(error.GetCString())}")


def raise_packet_timeout(debugger: lldb.SBDebugger) -> None:
    """Make LLDB wait at least :data:`PACKET_TIMEOUT` seconds for a reply."""
    try:
        current = int(setting(debugger, PACKET_TIMEOUT_SETTING) or 0)
    except ValueError:
        current = 0
    if current < PACKET_TIMEOUT:
        set_setting(debugger, PACKET_TIMEOUT_SETTING, str(PACKET_TIMEOUT))
