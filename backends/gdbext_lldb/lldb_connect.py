"""``pt-connect HOST:PORT``: connect LLDB to a gdbstub, also when the VM is running.

LLDB 14's ``gdb-remote`` fails every second time against a *running* QEMU: QEMU stops the VM
when a debugger connects and sends an unsolicited stop reply, which LLDB takes for the answer to
its first handshake packet ("failed to get reply to handshake packet"). The failed attempt
leaves the VM stopped, so a second attempt succeeds. :func:`connect` retries on exactly that
error when it comes at once (a few times), and reports anything else at once: a handshake that
timed out is a peer that does not answer (not a gdbstub, or a stopped QEMU), and trying again
would only wait again.

LLDB does not connect to the stub itself but to a relay :func:`connect` starts for it
(:mod:`gdbext_lldb.relay`, a process of its own): LLDB 14 kills the process it is connected to
when it quits, and a kill ends QEMU; the relay turns it into a detach, and detaches too when
LLDB goes away without one. Each connection has its own relay, which exits with it.

Loading gdbext raises LLDB's packet timeout (:mod:`gdbext_lldb.lldb_settings`).

A connection that stopped answering in the middle of a command may have left QEMU in the other
PhyMemMode (see :mod:`gdbext_lldb.lldb_link`): the next ``pt-connect`` to the same place puts
the mode back first, on a connection of its own (:func:`raw_stub`).

Loaded only inside LLDB (it imports ``lldb``).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO

import lldb

from gdbext.errors import UsageError
from gdbext.frontend.command import Writer
from gdbext_gdbstub.link import LiveTargetError
from gdbext_gdbstub.phymem import QUERY, SET
from gdbext_lldb.lldb_link import (
    forget_left_mode,
    left_mode,
    live_process,
    place,
    remember_address,
)
from gdbext_lldb.lldb_settings import PACKET_TIMEOUT, PACKET_TIMEOUT_SETTING, error_line, setting
from gdbext_lldb.relay import RelayError
from gdbext_lldb.relay import start as start_relay

#: Seconds ``pt-connect`` waits for the end of a connection LLDB has just detached (its relay
#: exits moments after ``process detach`` returned) before it says LLDB is still connected.
SETTLE = 1.0
#: Connection attempts when the handshake fails (a running VM fails one in two).
ATTEMPTS = 4
#: Seconds between attempts.
RETRY_DELAY = 0.05
#: A failed handshake that took longer than this (seconds) timed out: no retry.
QUICK_FAILURE = 1.0
_HANDSHAKE = "handshake"


def connect(debugger: lldb.SBDebugger, address: str, out: Writer) -> None:
    """``gdb-remote`` in ``debugger`` to a relay to ``ADDRESS``, retried while the handshake
    fails; LLDB's report of the stop goes to ``out``. When the last connection there stopped
    answering in the middle of a command, QEMU is still in the PhyMemMode that command switched
    to, where LLDB's own reads would be physical: the mode from before is put back first
    (:func:`_put_mode_back`).

    :raises UsageError: the selected target is already connected, or no address was given.
    :raises LiveTargetError: the connection failed (one line, LLDB's reason).
    """
    if not address or any(c.isspace() for c in address):
        raise UsageError("pt-connect takes one argument, [HOST:]PORT (QEMU's -gdb tcp::PORT)")
    if live_process(debugger, SETTLE) is not None:
        raise UsageError(
            "pt-connect: LLDB is already connected; 'process detach' first (which resumes the VM)"
        )
    note = ""
    left = left_mode(debugger, address)
    if left is not None:
        note = _put_mode_back(debugger, address, left)
    try:
        relay = start_relay(place(address))
    except RelayError as exc:
        raise LiveTargetError(f"pt-connect {address}: {exc}") from None
    try:
        report = _gdb_remote(debugger, address, f"127.0.0.1:{relay.port}")
    except BaseException:
        relay.stop()
        raise
    process = debugger.GetSelectedTarget().GetProcess()
    if process.IsValid():
        remember_address(debugger, process, address, relay)
    out.write(report + note)


def _gdb_remote(debugger: lldb.SBDebugger, address: str, via: str) -> str:
    """``gdb-remote VIA`` (the relay to ``address``), tried again while the handshake fails;
    LLDB's output."""
    interpreter = debugger.GetCommandInterpreter()
    error = ""
    for attempt in range(ATTEMPTS):
        if attempt:
            time.sleep(RETRY_DELAY)
        result = lldb.SBCommandReturnObject()
        started = time.monotonic()
        interpreter.HandleCommand(f"gdb-remote {via}", result, False)
        if result.Succeeded():
            return str(result.GetOutput() or "")
        error = error_line(result.GetError(), "failed")
        if _HANDSHAKE not in error or time.monotonic() - started > QUICK_FAILURE:
            break
    raise LiveTargetError(f"pt-connect {address}: {error}")


def _put_mode_back(debugger: lldb.SBDebugger, address: str, mode: int) -> str:
    """Put QEMU's PhyMemMode back to ``mode`` on a connection of its own, before LLDB connects
    and reads anything (LLDB would cache, and show, bytes read in the other mode); a line
    saying what was done."""
    try:
        timeout = float(setting(debugger, PACKET_TIMEOUT_SETTING) or PACKET_TIMEOUT)
        with raw_stub(address, timeout) as request:
            found = request(QUERY)
            put_back = found in ("0", "1") and found != str(mode)
            if put_back and request(SET.format(mode)) != "OK":
                raise ValueError(f"the gdbstub refused {SET.format(mode)}")
    except (OSError, ValueError) as exc:
        return f"PhyMemMode could not be put back to {mode} ({exc})\n"
    forget_left_mode(debugger, address)
    if not put_back:
        return ""
    return (
        f"PhyMemMode put back to {mode} (the last connection stopped answering in mode {found})\n"
    )


@contextlib.contextmanager
def raw_stub(address: str, timeout: float) -> Iterator[Callable[[str], str]]:
    """A connection of its own to the gdbstub at ``address`` ([HOST:]PORT): a function that
    sends one remote-protocol packet and returns its reply (a stop reply QEMU sends when a
    debugger connects to a running VM is skipped). :raises OSError: no connection or reply."""
    host, _, port = place(address).rpartition(":")
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock:
        stream = sock.makefile("rb")

        def request(packet: str) -> str:
            body = packet.encode()
            sock.sendall(b"$%s#%02x" % (body, sum(body) & 0xFF))
            while True:
                reply = _read_packet(stream)
                sock.sendall(b"+")
                if not reply.startswith((b"T", b"S")):
                    return reply.decode(errors="replace")

        yield request


def _read_packet(stream: BinaryIO) -> bytes:
    """The next ``$DATA#CK`` packet's data from ``stream`` (acknowledgements skipped)."""
    while (c := stream.read(1)) != b"$":
        if not c:
            raise ConnectionError("the gdbstub closed the connection")
    data = bytearray()
    while (c := stream.read(1)) != b"#":
        if not c:
            raise ConnectionError("the gdbstub closed the connection")
        data += c
    stream.read(2)
    return bytes(data)
