"""A connection of the ``gdbstub`` backend: the socket (a pwntools tube), the handshake, and
the VM left as it was found.

QEMU's gdbstub stops the VM when a client connects. When it stopped a running VM it sends a
stop reply on its own (``T02``, SIGINT), before it acknowledges the client's first packet; a
VM that was already paused sends nothing (and ``?`` answers ``T05`` either way; measured on
QEMU 7.2). :func:`open_connection` remembers which, and :meth:`GdbstubConnection.close` detaches
(``D``: QEMU resumes the VM) only if the VM was running; a paused VM stays paused when the
socket closes without ``D``. Nothing here sends ``k`` or ``c``, or writes memory.

pwntools is imported on the first connection, quietly: its tube logs nothing (the tube's
level is above every message it has), and importing :mod:`pwnlib.tubes.remote` neither takes
over the terminal nor reads the command line's arguments (only ``import pwn`` does).
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field

from gdbext.errors import UsageError
from gdbext.units import shown
from gdbext_gdbstub.hostpid import parse_address
from gdbext_gdbstub.link import LiveTargetError
from gdbext_gdbstub.rsp import RspClient, Transport
from gdbext_gdbstub.rsp_link import RspLink

#: Seconds the stub may take to answer one packet (``--stub-timeout``).
DEFAULT_TIMEOUT = 10.0
#: What the client asks of the stub in ``qSupported``: the x86 register description (what
#: GDB sends; no multiprocess, which QEMU would keep on for later clients).
FEATURES = "qSupported:xmlRegisters=i386"
_STOP = re.compile(r"[ST]([0-9a-fA-F]{2})")
#: The signal of a stop reply that says the connection interrupted a running VM.
SIGINT = 2


def stub_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[V6]:PORT`` for an IPv6 address, ``:PORT`` for this host) as a host
    and a port, as :func:`~gdbext_gdbstub.hostpid.parse_address` reads it.

    >>> stub_address("127.0.0.1:1234"), stub_address("[::1]:1")
    (('127.0.0.1', 1234), ('::1', 1))
    """
    found = parse_address(text)
    if found is None:
        raise UsageError(f"the gdbstub's address is HOST:PORT, not {shown(text)}")
    return found


def dial(host: str, port: int, timeout: float) -> Transport:
    """A pwntools tube connected to ``host:port``, silent."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:
        raise LiveTargetError(
            f"cannot connect to the gdbstub at {host}:{port}: no answer within {timeout:g} s"
        ) from None
    except OSError as exc:
        raise LiveTargetError(
            f"cannot connect to the gdbstub at {host}:{port}: {exc.strerror or exc}"
        ) from None
    # One small packet after another (an ack, then a request): without NODELAY each waits
    # for the peer's delayed ACK, 40 ms a request.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    from pwnlib.tubes.remote import remote

    # "critical": above every message a tube logs (its connects, closes and errors).
    tube: Transport = remote(host, port, sock=sock, timeout=timeout, level="critical")
    return tube


@dataclass
class GdbstubConnection:
    """One connection: the link the live state reads through, and how the VM was found."""

    address: str
    client: RspClient
    link: RspLink
    #: True when connecting stopped a running VM: :meth:`close` resumes it.
    was_running: bool
    #: The stop reply to ``?``.
    stop_reply: str
    features: dict[str, str] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        """The connection is still open: what the stub sent since the last request is taken
        in (:meth:`RspClient.poll`), so a stub that closed it (QEMU quit, or another took its
        port) is noticed before the connection is used again."""
        return self.client.poll()

    def close(self) -> None:
        """Leave the VM as it was found: detach (QEMU resumes it) if it was running, else
        only close the socket (it stays paused)."""
        client = self.client
        if not client.open:
            return
        try:
            if self.was_running:
                self._detach()
        finally:
            client.close()

    def _detach(self) -> None:
        # A stub in multiprocess mode (thread ids "pPID.TID"; QEMU keeps the mode a client
        # once asked for) wants the process: "D;PID".
        m = re.search(r"thread:p([0-9a-fA-F]+)\.", self.stop_reply)
        forms = [f"D;{m[1]}", "D"] if m else ["D", "D;1"]
        for form in forms:
            reply = self.client.request(form)
            if reply == "OK":
                return
        raise LiveTargetError(
            f"the gdbstub at {self.address} refused to detach ({shown(reply)}): the VM it "
            "stopped stays paused (resume it with the monitor's cont)"
        )


def handshake(client: RspClient, address: str) -> GdbstubConnection:
    """``qSupported``, ``QStartNoAckMode`` when offered, ``?``: the connection, with how the
    VM was found."""
    reply = client.request(FEATURES)
    features: dict[str, str] = {}
    for item in reply.split(";"):
        name, sep, value = item.partition("=")
        if sep:
            features[name] = value
        elif item:
            features[item[:-1] if item[-1] in "+-?" else item] = item[-1]
    stopped = [p for p in client.unsolicited if _STOP.match(p)]
    client.unsolicited.clear()
    if features.get("QStartNoAckMode") == "+" and client.request("QStartNoAckMode") == "OK":
        client.acks = False
    stop = client.request("?")
    m = _STOP.match(stop)
    if m is None:
        raise LiveTargetError(
            f"the gdbstub at {address} answered ? with {shown(stop[:40])}, not a stop reply "
            "(no stopped target behind it)"
        )
    signals = [int(s[1:3], 16) for s in stopped] + [int(m[1], 16)]
    link = RspLink(client, stop, stub_address(address))
    return GdbstubConnection(address, client, link, signals[0] == SIGINT, stop, features)


def open_connection(address: str, timeout: float = DEFAULT_TIMEOUT) -> GdbstubConnection:
    """Connect to the gdbstub at ``address`` (``HOST:PORT``): one error (no traceback) for a
    refused connection, a peer that is not a gdbstub, or one that does not answer in time."""
    host, port = stub_address(address)
    client = RspClient(dial(host, port, timeout), address, timeout)
    try:
        return handshake(client, address)
    except BaseException:
        client.close()
        raise
