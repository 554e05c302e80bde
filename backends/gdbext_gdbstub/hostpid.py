"""Which process on this host serves a gdbstub: the one that owns its listening TCP socket.

Nothing here talks to the stub or to QEMU, so finding the process changes nothing in it: the
stub's address (the debugger's connection, :func:`parse_address`) must be this host's
(:func:`is_local`); ``/proc/net/tcp`` and ``/proc/net/tcp6`` give the inode of the socket that
listens on its port (:func:`listening_inodes`); the process whose ``/proc/PID/fd`` holds
``socket:[INODE]`` owns it (:func:`socket_owners`). :func:`stub_pid` puts these together and
says in one line why not when it cannot (:class:`HostPathUnavailable`).

Only sockets of this host's network namespace are seen: a QEMU in another namespace (a
container) is "not found", and the live backend reads through the stub as before.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import socket
from collections.abc import Iterable

from gdbext_gdbstub.link import LiveTargetError

#: ``/proc/net/tcp`` state of a listening socket.
TCP_LISTEN = "0A"
TCP_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")
_SOCKET_LINK = re.compile(r"^socket:\[(\d+)\]$")
_PREFIXES = ("tcp:", "tcp4:", "tcp6:")


class HostPathUnavailable(LiveTargetError):
    """The guest's RAM cannot be read from this host: :attr:`reason` says why, for ``info``;
    :attr:`for_now` when the reason may be gone at the next stop (no page table yet)."""

    def __init__(self, reason: str, for_now: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.for_now = for_now


def parse_address(text: str) -> tuple[str, int] | None:
    """``(host, port)`` of a TCP address as debuggers write it (``HOST:PORT``, ``:PORT``,
    ``[::1]:PORT``, ``tcp:HOST:PORT``), else ``None`` (a serial line, a pipe).

    >>> parse_address("127.0.0.1:1234"), parse_address("tcp:[::1]:99"), parse_address(":7")
    (('127.0.0.1', 1234), ('::1', 99), ('localhost', 7))
    >>> parse_address("/dev/ttyS0"), parse_address("| qemu -gdb stdio")
    (None, None)
    """
    text = text.strip()
    for prefix in _PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        host = "localhost"
    if any(c in host for c in " /|"):
        return None
    return host, int(port)


def is_local(host: str) -> bool:
    """True when ``host`` is this host: a loopback address, ``localhost``, or an address one of
    its interfaces has (a socket can bind to it; nothing is sent).

    >>> is_local("127.0.0.1"), is_local("::1"), is_local("localhost"), is_local("192.0.2.1")
    (True, True, True, False)
    """
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    for family, _, _, _, sockaddr in infos:
        address = str(sockaddr[0])
        try:
            if ipaddress.ip_address(address.split("%")[0]).is_loopback:
                return True
        except ValueError:
            continue
        with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
            return True
    return False


def _decode_port(field: str) -> int:
    return int(field.rpartition(":")[2], 16)


def listening_inodes(port: int, tables: Iterable[str] = TCP_TABLES) -> set[int]:
    """The inodes of the sockets that listen on TCP ``port`` (any local address), from the
    kernel's ``/proc/net/tcp`` tables.

    A line is ``sl local_address rem_address st ... uid timeout inode ...``, addresses as
    ``HEXIP:HEXPORT``.
    """
    found: set[int] = set()
    for path in tables:
        try:
            with open(path, encoding="ascii") as table:
                lines = table.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != TCP_LISTEN:
                continue
            if _decode_port(fields[1]) == port and fields[9] != "0":
                found.add(int(fields[9]))
    return found


def socket_owners(inodes: set[int], proc: str = "/proc") -> list[int]:
    """The processes (sorted PIDs) with one of ``inodes``' sockets open. Processes this one may
    not look into are skipped."""
    owners: list[int] = []
    try:
        entries = os.listdir(proc)
    except OSError:
        return owners
    for entry in entries:
        if not entry.isdigit():
            continue
        fd_dir = f"{proc}/{entry}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                m = _SOCKET_LINK.match(os.readlink(f"{fd_dir}/{fd}"))
            except OSError:
                continue
            if m is not None and int(m[1]) in inodes:
                owners.append(int(entry))
                break
    return sorted(owners)


def stub_pid(address: tuple[str, int] | None) -> int:
    """The PID of the process on this host that listens on the gdbstub's ``address``.

    :raises HostPathUnavailable: the address is unknown or not this host's, no socket listens
        on its port, or its owner is not one process this one can see.
    """
    if address is None:
        raise HostPathUnavailable(
            "the gdbstub's address is unknown (not a TCP connection; in LLDB, connect with "
            "pt-connect HOST:PORT)"
        )
    host, port = address
    if not is_local(host):
        raise HostPathUnavailable(f"the gdbstub at {host}:{port} is not on this host")
    inodes = listening_inodes(port)
    if not inodes:
        raise HostPathUnavailable(f"no socket of this host listens on port {port}")
    owners = socket_owners(inodes)
    if not owners:
        raise HostPathUnavailable(
            f"no process found that owns the socket listening on port {port} (another "
            "user's, or another namespace's)"
        )
    if len(owners) > 1:
        raise HostPathUnavailable(
            f"{len(owners)} processes share the socket listening on port {port} "
            f"({', '.join(map(str, owners[:4]))})"
        )
    return owners[0]
