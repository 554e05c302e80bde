"""The GDB remote serial protocol's packet layer, over any byte stream (a pwntools tube).

A packet is ``$DATA#CK``, ``CK`` the modulo-256 sum of ``DATA`` in two hex digits. Until
``QStartNoAckMode`` is agreed each side acknowledges every packet it receives with ``+`` (``-``
asks for it again). In replies, ``}`` escapes the next byte (XOR 0x20) and ``X*N`` repeats
``X`` ``ord(N) - 29`` more times (run-length encoding). Monitor commands (``qRcmd``) answer
with ``O``-packets of hex-encoded output, then ``OK``.

:class:`RspClient` sends one request at a time and reads its reply. Every receive has a
deadline: a stub that does not answer is one :class:`~gdbext_gdbstub.link.LiveTargetError`
(the connection is then closed: its replies would be out of step), a closed connection a
:class:`~gdbext_gdbstub.link.TargetLostError`. Packets the stub sends before acknowledging a
request (QEMU's stop reply when a connection stops a running VM) are kept in
:attr:`RspClient.unsolicited`.

>>> request_packet("qSupported")
b'$qSupported#37'
>>> decode(b"0* }]")  # "0" then 3 more, then an escaped "}"
'0000}'
"""

from __future__ import annotations

import contextlib
import time
from typing import Protocol

from gdbext.units import shown
from gdbext_gdbstub.link import LiveTargetError, TargetLostError

#: Characters a packet's data may not hold unescaped.
SPECIAL = frozenset("$#}*")
#: How often a packet is sent again when the stub answers ``-`` (a bad checksum).
RETRIES = 3


class Transport(Protocol):
    """A byte stream: what the client needs of a pwntools tube."""

    def send(self, data: bytes) -> None: ...

    def recv(self, numb: int = ..., timeout: float = ...) -> bytes:
        """Up to ``numb`` bytes; ``b""`` after ``timeout`` seconds without any.
        :raises EOFError: the peer closed the connection."""
        ...

    def close(self) -> None: ...


def checksum(data: bytes) -> int:
    """The checksum of a packet's data.

    >>> hex(checksum(b"k"))
    '0x6b'
    """
    return sum(data) & 0xFF


def frame(data: bytes) -> bytes:
    """``data`` as a packet (escaped already, if it needs to be).

    >>> frame(b"D;1")
    b'$D;1#b0'
    """
    return b"$%s#%02x" % (data, checksum(data))


def request_packet(text: str) -> bytes:
    """A request as a packet: requests are ASCII and hex, nothing in them to escape."""
    if SPECIAL.intersection(text):
        raise ValueError(f"packet needs escaping: {text!r}")
    return frame(text.encode("latin-1"))


def decode(data: bytes) -> str:
    """A reply's data with escapes and run lengths undone (as text, one char a byte)."""
    if b"}" not in data and b"*" not in data:
        return data.decode("latin-1")  # most replies (QEMU's are hex, never compressed)
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        c = data[i]
        if c == 0x7D and i + 1 < n:  # "}": escaped byte
            out.append(data[i + 1] ^ 0x20)
            i += 2
        elif c == 0x2A and out and i + 1 < n:  # "*": repeat the previous byte
            out += bytes([out[-1]]) * (data[i + 1] - 29)
            i += 2
        else:
            out.append(c)
            i += 1
    return out.decode("latin-1")


class RspClient:
    """One connection to a gdbstub, a request at a time.

    :param transport: the connected byte stream (closed by :meth:`close`).
    :param peer: the stub's address, for messages (``127.0.0.1:1234``).
    :param timeout: seconds a reply may take.
    """

    def __init__(self, transport: Transport, peer: str, timeout: float) -> None:
        self._io = transport
        self.peer = peer
        self.timeout = timeout
        self.acks = True
        self._buf = bytearray()
        self._closed = False
        #: Why the connection was closed (for the messages of later requests).
        self._lost: str | None = None
        #: A request was sent and its reply has not come yet.
        self._awaiting = False
        #: Packets the stub sent on its own, before acknowledging a request.
        self.unsolicited: list[str] = []

    # --- state ---

    @property
    def open(self) -> bool:
        return not self._closed

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(OSError, EOFError):
                self._io.close()

    def poll(self) -> bool:
        """Take in, without waiting, what the stub sent since the last request (it is read as
        it would have been at the next one); whether the connection is still open. A stub that
        closed it (QEMU quit, or was started again on the same port) leaves it closed."""
        if self._closed:
            return False
        try:
            self._buf += self._io.recv(65536, timeout=0)
        except EOFError:
            self._gone("connection closed")
        except OSError as exc:
            self._gone(exc.strerror or str(exc))
        return not self._closed

    def _gone(self, why: str) -> TargetLostError:
        self._lost = self._lost or why
        self.close()
        return TargetLostError(f"lost the connection to the gdbstub at {self.peer} ({why})")

    # --- bytes ---

    def _fill(self, deadline: float, waiting_for: str) -> None:
        """Read more bytes into the buffer before ``deadline``."""
        if self._closed:
            raise TargetLostError(
                f"lost the connection to the gdbstub at {self.peer} ({self._lost or 'closed'})"
            )
        left = deadline - time.monotonic()
        try:
            chunk = self._io.recv(65536, timeout=max(left, 0.001)) if left > 0 else b""
        except EOFError:
            raise self._gone("connection closed") from None
        except OSError as exc:
            raise self._gone(exc.strerror or str(exc)) from None
        if not chunk:
            self._lost = f"no reply to {waiting_for} within {self.timeout:g} s"
            self.close()  # a late reply would answer the next request
            raise LiveTargetError(
                f"the gdbstub at {self.peer} did not answer {waiting_for} within {self.timeout:g} s"
            )
        self._buf += chunk

    def _send(self, data: bytes) -> None:
        if self._closed:
            raise TargetLostError(
                f"lost the connection to the gdbstub at {self.peer} ({self._lost or 'closed'})"
            )
        try:
            self._io.send(data)
        except EOFError:
            raise self._gone("connection closed") from None
        except OSError as exc:
            raise self._gone(exc.strerror or str(exc)) from None

    def _next(self, deadline: float, waiting_for: str) -> str | bytes:
        """The next thing the stub sent: ``b"+"``/``b"-"`` (an acknowledgement) or a packet's
        decoded data (acknowledged, in ack mode)."""
        while True:
            buf = self._buf
            while buf and buf[0] not in b"+-$%":
                del buf[0]  # noise between packets (QEMU sends none)
            if buf and buf[0] in b"+-":
                ack = bytes(buf[:1])
                del buf[0]
                return ack
            end = buf.find(b"#")
            if buf and end >= 0 and len(buf) >= end + 3:
                body, check = bytes(buf[1:end]), bytes(buf[end + 1 : end + 3])
                notification = buf[0] == 0x25  # "%": asynchronous, never acknowledged
                del buf[: end + 3]
                try:
                    good = int(check, 16) == checksum(body)
                except ValueError:
                    good = False
                if notification:
                    continue
                if not good:
                    if self.acks:
                        self._send(b"-")
                        continue
                    raise LiveTargetError(
                        f"the gdbstub at {self.peer} sent a packet with a bad checksum"
                    )
                if self.acks:
                    self._send(b"+")
                return decode(body)
            self._fill(deadline, waiting_for)

    # --- requests ---

    def request(self, text: str) -> str:
        """Send ``text`` as a packet and return the reply's data."""
        return self._exchange(text)[-1]

    def _exchange(self, text: str, more: bool = False) -> list[str]:
        """Send one packet; its reply (``more``: every ``O`` packet, then the final one).

        Interrupted (Ctrl-C) before its reply came, it first takes that reply in, so that the
        next request (the PhyMemMode restore) reads its own."""
        try:
            return self._exchange_once(text, more)
        except KeyboardInterrupt:
            self._take_late_reply(more)
            raise

    def _take_late_reply(self, more: bool) -> None:
        """Read and drop the reply an interrupted request still has coming (closing the
        connection if that is interrupted too, or does not come in time)."""
        if not self._awaiting or self._closed:
            return
        self._awaiting = False
        deadline = time.monotonic() + self.timeout
        try:
            while True:
                got = self._next(deadline, "an interrupted request")
                if isinstance(got, str) and not (more and got.startswith("O") and got != "OK"):
                    return
        except KeyboardInterrupt:
            self._lost = "interrupted twice"
            self.close()
            raise
        except LiveTargetError:
            self.close()  # lost, or no reply in time: the next request says so

    def _exchange_once(self, text: str, more: bool) -> list[str]:
        packet = request_packet(text)
        what = shown(text if len(text) <= 40 else text[:37] + "...")
        deadline = time.monotonic() + self.timeout
        self._send(packet)
        self._awaiting = True
        if self.acks:
            tries = 0
            while True:
                got = self._next(deadline, what)
                if got == b"+":
                    break
                if got == b"-":
                    tries += 1
                    if tries > RETRIES:
                        raise LiveTargetError(
                            f"the gdbstub at {self.peer} refused {what} {RETRIES} times"
                        )
                    self._send(packet)
                elif isinstance(got, str):
                    self.unsolicited.append(got)
        replies: list[str] = []
        while True:
            got = self._next(deadline, what)
            if isinstance(got, bytes):
                continue  # an acknowledgement the stub repeated
            replies.append(got)
            if not (more and got.startswith("O") and got != "OK"):
                self._awaiting = False
                return replies
            deadline = time.monotonic() + self.timeout  # output keeps coming

    def monitor(self, command: str) -> tuple[str, str]:
        """Run ``monitor COMMAND`` (``qRcmd``): its output and the final reply (``OK``,
        ``""`` when the stub has no monitor, ``Exx``)."""
        replies = self._exchange("qRcmd," + command.encode().hex(), more=True)
        output = "".join(
            bytes.fromhex(r[1:]).decode(errors="replace") for r in replies[:-1] if _is_hex(r[1:])
        )
        return output, replies[-1]

    def send_only(self, text: str) -> None:
        """Send a packet whose reply is not awaited (``D`` when closing): acknowledged in ack
        mode, else as sent."""
        self._send(request_packet(text))


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True
