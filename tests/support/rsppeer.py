"""A gdbstub on a real socket, in a thread: QEMU's framing (acks, no ``QStartNoAckMode``, a
stop reply sent on its own when a connection stops a "running" VM) over a
:class:`support.fakestub.FakeStub`'s memory, registers and monitor, for the ``gdbstub``
backend's tests without QEMU.

:class:`RspPeer` serves one connection at a time; ``replies`` overrides any packet's reply
(a string, or ``None`` for no reply at all: a stub that hangs), ``close_on`` closes the
connection when that packet arrives (QEMU killed mid-command).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from gdbext_gdbstub.link import LiveTargetError, TargetMemoryError
from gdbext_gdbstub.rsp import checksum
from support.fakestub import FakeStub

#: QEMU's x86-64 description, cut down: the commented-out registers are not numbered.
TARGET_XML = (
    '<?xml version="1.0"?><target><architecture>i386:x86-64</architecture>'
    '<xi:include href="core.xml"/></target>'
)
CORE_XML = (
    '<feature name="org.gnu.gdb.i386.core">'
    + "".join(f'<reg name="r{i}" bitsize="64"/>' for i in range(16))
    + '<reg name="rip" bitsize="64"/><reg name="eflags" bitsize="32"/>'
    + '<!--reg name="ss_base" bitsize="64"/-->'
    + '<reg name="fs_base" bitsize="64"/><reg name="cr0" bitsize="64"/>'
    + '<reg name="cr2" bitsize="64"/><reg name="cr3" bitsize="64"/>'
    + '<reg name="cr4" bitsize="64"/><reg name="efer" bitsize="64"/></feature>'
)
#: The number of each control register in :data:`CORE_XML`.
REGNUMS = {"cr0": 19, "cr3": 21, "cr4": 22, "efer": 23}


def frame(data: str) -> bytes:
    raw = data.encode("latin-1")
    return b"$%s#%02x" % (raw, checksum(raw))


@dataclass
class RspPeer:
    stub: FakeStub
    #: A stop reply sent on connecting (QEMU's ``T02`` when it stops a running VM).
    on_connect: str | None = None
    #: The thread-id form: ``"p1.{}"`` (multiprocess) or ``"{:02x}"``.
    thread_form: str = "p1.{}"
    replies: dict[str, str | None] = field(default_factory=dict)
    close_on: Callable[[str], bool] | None = None
    #: Bytes sent before anything (a peer that is not a gdbstub), then the connection closes.
    banner: bytes | None = None
    #: Every packet received, in order.
    received: list[str] = field(default_factory=list)
    #: Seconds to wait before answering packets that start with a key (a slow stub).
    delays: dict[str, float] = field(default_factory=dict)
    #: Corrupt the checksum of the next reply once (the client must ask again with ``-``).
    corrupt_next: bool = False
    port: int = 0
    #: Connections served so far.
    sessions: int = 0
    _server: socket.socket | None = None
    _conn: socket.socket | None = None
    _hg: int = 1

    def __enter__(self) -> RspPeer:
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        self.port = server.getsockname()[1]
        self._server = server
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()

    def hang_up(self) -> None:
        """Close the connection being served (the stub quits; the peer goes on listening)."""
        if self._conn is not None:
            self._conn.shutdown(socket.SHUT_RDWR)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        assert self._server is not None
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self.sessions += 1
            self._conn = conn
            with conn, contextlib.suppress(OSError):
                self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        if self.banner is not None:
            conn.sendall(self.banner)
            return
        if self.on_connect is not None:
            conn.sendall(frame(self.on_connect))
        for packet in self._packets(conn):
            self.received.append(packet)
            conn.sendall(b"+")
            if self.close_on is not None and self.close_on(packet):
                return
            for prefix, seconds in self.delays.items():
                if packet.startswith(prefix):
                    time.sleep(seconds)
            for reply in self._answer(packet):
                data = frame(reply)
                if self.corrupt_next:
                    self.corrupt_next = False
                    conn.sendall(data[:-2] + b"00")
                    if not self._nacked(conn):
                        return
                conn.sendall(data)

    @staticmethod
    def _nacked(conn: socket.socket) -> bool:
        return conn.recv(1) == b"-"

    def _packets(self, conn: socket.socket) -> Iterator[str]:
        buf = bytearray()
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                return
            buf += chunk
            pos = 0  # the packets taken are dropped once per chunk, not once per packet
            while True:
                start = buf.find(b"$", pos)
                end = buf.find(b"#", start + 1) if start >= 0 else -1
                if end < 0 or len(buf) < end + 3:
                    break
                yield buf[start + 1 : end].decode("latin-1")
                pos = end + 3
            del buf[:pos]

    def _answer(self, packet: str) -> list[str]:
        if packet in self.replies:
            reply = self.replies[packet]
            return [] if reply is None else [reply]
        stub = self.stub
        tid = self.thread_form.format(stub.selected)
        if packet.startswith("qSupported"):
            return ["PacketSize=1000;qXfer:features:read+;vContSupported+;multiprocess+"]
        if packet == "?":
            return [f"T05thread:{tid};"]
        if packet.startswith("qXfer:features:read:"):
            annex = packet.split(":")[3]
            text = {"target.xml": TARGET_XML, "core.xml": CORE_XML}.get(annex)
            offset, length = (int(v, 16) for v in packet.rsplit(":", 1)[1].split(","))
            if text is None:
                return ["E00"]
            part = text[offset : offset + length]
            return [("l" if offset + length >= len(text) else "m") + part]
        if packet == "qfThreadInfo":
            return ["m" + ",".join(self.thread_form.format(i + 1) for i in range(len(stub.cpus)))]
        if packet == "qsThreadInfo":
            return ["l"]
        if packet.startswith("Hg"):
            self._hg = int(packet.rpartition(".")[2] or packet[2:], 16)
            return ["OK"]
        if packet.startswith("p"):
            number = int(packet[1:], 16)
            regs = stub.registers(self._hg)
            name = next((n for n, r in REGNUMS.items() if r == number), None)
            value = regs.get(name, 0) if name else 0
            return [value.to_bytes(8, "little").hex()]
        if packet.startswith("m"):
            addr, size = (int(v, 16) for v in packet[1:].split(","))
            if size > 2048:
                return ["E22"]
            try:
                return [stub.read_memory(addr, size).hex()]
            except TargetMemoryError:
                return ["E14"]
        if packet.startswith("qRcmd,"):
            try:
                out = stub.monitor(bytes.fromhex(packet[6:]).decode())
            except LiveTargetError as exc:
                out = str(exc) + "\r\n"
            chunks = [out[i : i + 200] for i in range(0, len(out), 200)]
            return ["O" + c.encode().hex() for c in chunks] + ["OK"]
        if packet.startswith(("qqemu", "Qqemu")):
            return [stub.packet(packet)]
        if packet.startswith("D"):
            return ["OK"]
        return [""]
