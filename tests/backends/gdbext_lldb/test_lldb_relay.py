"""The relay ``pt-connect`` puts between LLDB and the gdbstub (``gdbext_lldb.relay``), against
fake peers: the test plays LLDB on one socket and the stub on the other.

Framing (packets split anywhere, escapes and run lengths untouched, bad checksums), bytes passed
both ways unchanged, a kill answered as QEMU answers it and turned into QEMU's detach (``D;PID``
once the multiprocess extension is agreed, as QEMU refuses a bare ``D`` then), the detach when
LLDB goes away without one (and not after its handshake only), what the relay puts back first
(a running VM, a switched PhyMemMode), and the relay as a process of its own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gdbext_lldb import relay
from gdbext_lldb.relay import Framer, Session, Unit, frame

TIMEOUT = 10.0


def test_framer_splits_anywhere_and_keeps_the_bytes() -> None:
    stream = (
        b"+$QStartNoAckMode#b0-\x03"
        + frame(b'm}]*"0,4')  # an escape and a run length: untouched
        + b"$k#00"  # a wrong checksum
        + frame(b"vKill;1")
    )
    for size in (1, 2, 3, 7, len(stream)):
        framer = Framer()
        units: list[Unit] = []
        for at in range(0, len(stream), size):
            units += framer.feed(stream[at : at + size])
        assert b"".join(u.raw for u in units) == stream
        packets = [(u.data, u.valid) for u in units if u.data is not None]
        assert packets == [
            (b"QStartNoAckMode", True),
            (b'm}]*"0,4', True),
            (b"k", False),
            (b"vKill;1", True),
        ]
        assert framer.pending == b""


def test_framer_holds_an_incomplete_packet_and_gives_up_on_a_huge_one() -> None:
    framer = Framer(limit=16)
    assert framer.feed(b"+$m0,4#") == [Unit(b"+")]
    assert framer.pending == b"$m0,4#"
    assert framer.feed(b"f") == []
    assert framer.feed(b"f+") == [Unit(b"$m0,4#ff", b"m0,4"), Unit(b"+")]
    assert Unit(b"$m0,4#ff", b"m0,4").valid is False and Unit(frame(b"m0,4"), b"m0,4").valid
    assert framer.feed(b"$" + b"a" * 20) == [Unit(b"$" + b"a" * 20)]  # no '#': plain bytes


def test_kill_packets() -> None:
    assert relay.is_kill(b"k") and relay.is_kill(b"vKill;a") and relay.is_kill(b"vKill")
    assert not relay.is_kill(b"kk") and not relay.is_kill(b"vKillx")
    assert (relay.kill_reply(b"k"), relay.kill_reply(b"vKill;1")) == (b"W00", b"OK")


# --- a session between two fake peers ----------------------------------------------------


@dataclass
class Peer:
    """One end of a socket pair, read packet by packet."""

    sock: socket.socket
    framer: Framer = field(default_factory=Framer)
    units: list[Unit] = field(default_factory=list)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def packet(self, data: bytes) -> None:
        self.sock.sendall(frame(data))

    def read(self, count: int = 1) -> list[Unit]:
        """The next ``count`` units."""
        while len(self.units) < count:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError(f"closed after {self.units}")
            self.units += self.framer.feed(chunk)
        out, self.units = self.units[:count], self.units[count:]
        return out

    def next_packet(self) -> bytes:
        while True:
            (unit,) = self.read()
            if unit.data is not None:
                return unit.data

    def raw(self, size: int) -> bytes:
        """Exactly ``size`` bytes as they came."""
        data = b"".join(u.raw for u in self.units)
        self.units = []
        while len(data) < size:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
        return data

    def closed(self) -> bool:
        """The other side closed (after whatever is still unread, dropped)."""
        while True:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                return True


@dataclass
class Pair:
    lldb: Peer
    stub: Peer
    session: Session
    outcome: list[str]
    thread: threading.Thread
    lines: list[str]

    def end(self) -> str:
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive()
        return self.outcome[0]


@pytest.fixture
def pair() -> Iterator[Pair]:
    lldb_end, down = socket.socketpair()
    up, stub_end = socket.socketpair()
    for s in (lldb_end, stub_end):
        s.settimeout(TIMEOUT)
    lines: list[str] = []
    session = Session(down, up, lines.append, reply_timeout=2.0)
    outcome: list[str] = []

    def run() -> None:
        try:
            outcome.append(session.run())
        finally:
            down.close()
            up.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield Pair(Peer(lldb_end), Peer(stub_end), session, outcome, thread, lines)
    lldb_end.close()
    stub_end.close()
    thread.join(TIMEOUT)


def handshake(p: Pair, multiprocess: bool = True) -> None:
    """LLDB 14's first exchanges with QEMU 7.2 (ack mode: QEMU has no QStartNoAckMode)."""
    first = b"+" + frame(b"QStartNoAckMode")
    p.lldb.send(first)
    assert p.stub.raw(len(first)) == first
    p.stub.send(b"+" + frame(b""))
    assert p.lldb.raw(5) == b"+$#00"
    features = b"qSupported:xmlRegisters=i386;multiprocess+"
    p.lldb.send(b"+" + frame(features))
    assert p.stub.next_packet() == features
    reply = b"PacketSize=1000;multiprocess+" if multiprocess else b"PacketSize=1000"
    p.stub.send(b"+" + frame(reply))
    assert p.lldb.next_packet() == reply
    p.lldb.send(b"+" + frame(b"qC"))
    assert p.stub.next_packet() == b"qC"
    p.stub.send(b"+" + frame(b"QCp01.01"))
    assert p.lldb.next_packet() == b"QCp01.01"
    p.lldb.send(b"+")
    assert p.stub.raw(1) == b"+"


def test_bytes_pass_both_ways_unchanged(pair: Pair) -> None:
    handshake(pair)
    down = b"+" + frame(b'm}]*"0,4') + b"\x03" + b"-" + frame(b"Qqemu.PhyMemMode:1")
    pair.lldb.send(down)
    assert pair.stub.raw(len(down)) == down
    up = b"+" + frame(b"0* ") + b"+" + frame(b"T02thread:p01.01;") + frame(b"O" + b"41" * 3000)
    pair.stub.send(up)
    assert pair.lldb.raw(len(up)) == up
    pair.lldb.send(frame(b"k")[:3])  # a kill split anywhere is still one
    time.sleep(0.05)
    pair.lldb.send(frame(b"k")[3:])
    assert pair.lldb.raw(8) == b"+" + frame(b"W00")
    assert pair.stub.next_packet() == b"D;1"


def test_a_kill_is_answered_as_qemu_does_and_becomes_a_detach(pair: Pair) -> None:
    handshake(pair)
    pair.lldb.send(frame(b"k"))
    # What QEMU answers (acknowledgement, then "exited with status 0"), from the relay.
    assert pair.lldb.raw(8) == b"+$W00#b7"
    assert pair.stub.next_packet() == b"D;1"  # QEMU refuses a bare D under multiprocess
    pair.stub.send(b"+" + frame(b"OK"))
    assert pair.stub.read(1) == [Unit(b"+")]  # the relay acknowledges QEMU's reply
    pair.lldb.send(b"+")
    pair.lldb.sock.close()
    assert pair.end() == "killed"
    assert pair.session.detached and pair.session.killed == b"k"
    assert pair.stub.closed()


def test_vkill_and_no_multiprocess_and_a_refused_detach(pair: Pair) -> None:
    handshake(pair, multiprocess=False)
    pair.lldb.send(frame(b"vKill;1"))
    assert pair.lldb.raw(7) == b"+$OK#9a"
    assert pair.stub.next_packet() == b"D"
    pair.stub.send(b"+" + frame(b"E22"))  # then the other form
    assert pair.stub.next_packet() == b"D;1"
    pair.stub.send(b"+" + frame(b"OK"))
    pair.lldb.sock.close()
    assert pair.end() == "killed"
    assert pair.lines[-1] == "sent D;1: OK"


def test_a_kill_with_a_bad_checksum_passes_through_for_the_stub_to_drop(pair: Pair) -> None:
    handshake(pair)
    pair.lldb.send(b"$k#00")
    assert pair.stub.raw(5) == b"$k#00"
    assert pair.session.killed is None


def test_no_ack_mode_is_followed(pair: Pair) -> None:
    pair.lldb.send(b"+" + frame(b"QStartNoAckMode"))
    pair.stub.next_packet()
    pair.stub.send(b"+" + frame(b"OK"))
    assert pair.lldb.raw(7) == b"+$OK#9a"
    pair.lldb.send(b"+" + frame(b"qC"))
    pair.stub.next_packet()
    pair.stub.send(frame(b"QCp03.01"))
    pair.lldb.next_packet()
    pair.lldb.send(frame(b"k"))
    assert pair.lldb.raw(7) == b"$W00#b7"  # no acknowledgement
    assert pair.stub.next_packet() == b"D"
    pair.stub.send(frame(b"E22"))
    assert pair.stub.next_packet() == b"D;3"  # the PID the stub named
    pair.stub.send(frame(b"OK"))
    assert pair.stub.closed()  # no acknowledgement of the reply either
    assert pair.stub.units == []
    pair.lldb.sock.close()
    assert pair.end() == "killed"


def test_lldb_gone_without_a_detach_is_detached(pair: Pair) -> None:
    handshake(pair)
    pair.lldb.sock.close()
    assert pair.stub.next_packet() == b"D;1"
    pair.stub.send(b"+" + frame(b"OK"))
    assert pair.end() == "closed"
    assert pair.session.detached


def test_lldb_gone_during_the_handshake_is_not_a_session(pair: Pair) -> None:
    """LLDB 14 against a running QEMU: the VM's stop reply answers its first packet, LLDB
    gives up (pt-connect tries again): the relay sends nothing of its own."""
    pair.lldb.send(b"+" + frame(b"QStartNoAckMode"))
    pair.stub.send(frame(b"T02thread:01;") + b"+" + frame(b""))
    pair.lldb.read(2)
    pair.lldb.send(b"+")
    pair.lldb.sock.close()
    assert pair.end() == "handshake"
    assert pair.stub.raw(100) == b"+" + frame(b"QStartNoAckMode") + b"+"


def test_lldb_detached_itself(pair: Pair) -> None:
    handshake(pair)
    pair.lldb.send(frame(b"D;0000000000000001"))
    assert pair.stub.next_packet() == b"D;0000000000000001"
    pair.stub.send(b"+" + frame(b"OK"))
    pair.lldb.read(2)
    pair.lldb.send(b"+")
    pair.lldb.sock.close()
    assert pair.end() == "detached"
    assert pair.stub.raw(100) == b"+"  # LLDB's acknowledgement; no packet of the relay's


def test_lldbs_detach_out_of_step_is_still_its_detach(pair: Pair) -> None:
    """After a reply that timed out, LLDB's replies are out of step: its detach is answered by
    a late read's reply. The relay sends no second detach (QEMU 7.2 dropped its gdbstub after
    one)."""
    handshake(pair)
    pair.lldb.send(frame(b"m1000,4"))
    pair.stub.next_packet()
    pair.lldb.send(frame(b"D;0000000000000001"))
    assert pair.stub.next_packet() == b"D;0000000000000001"
    pair.stub.send(b"+" + frame(b"00000000") + b"+" + frame(b"OK"))
    pair.lldb.sock.close()
    assert pair.end() == "detached"
    assert pair.stub.raw(1 << 20) == b""  # nothing more, then closed


def test_a_running_vm_is_stopped_before_the_detach(pair: Pair) -> None:
    """QEMU drops a packet that comes while the VM runs (it only stops the VM)."""
    handshake(pair)
    pair.lldb.send(frame(b"vCont;c"))
    assert pair.stub.next_packet() == b"vCont;c"
    pair.stub.send(b"+")
    pair.lldb.sock.close()
    assert pair.stub.read(1) == [Unit(b"\x03")]
    pair.stub.send(frame(b"T02thread:p01.01;"))
    assert pair.stub.read(1) == [Unit(b"+")]
    assert pair.stub.next_packet() == b"D;1"
    pair.stub.send(b"+" + frame(b"OK"))
    assert pair.end() == "closed"


def test_a_switched_phymemmode_is_put_back_and_a_late_reply_skipped(pair: Pair) -> None:
    """LLDB died in the middle of a pt-* command: mode 1, a read unanswered."""
    handshake(pair)
    for request, reply in ((b"qqemu.PhyMemMode", b"0"), (b"Qqemu.PhyMemMode:1", b"OK")):
        pair.lldb.send(frame(request))
        assert pair.stub.next_packet() == request
        pair.stub.send(b"+" + frame(reply))
        assert pair.lldb.next_packet() == reply
    pair.lldb.send(frame(b"m1000,4"))
    assert pair.stub.next_packet() == b"m1000,4"
    pair.lldb.sock.close()
    time.sleep(0.1)
    pair.stub.send(b"+" + frame(b"00000000"))  # the read's reply, late
    assert pair.stub.next_packet() == b"Qqemu.PhyMemMode:0"
    pair.stub.send(b"+" + frame(b"OK"))
    assert pair.stub.next_packet() == b"D;1"
    pair.stub.send(b"+" + frame(b"OK"))
    assert pair.end() == "closed"


def test_a_mode_put_back_by_lldb_is_left_alone(pair: Pair) -> None:
    handshake(pair)
    exchanges = (
        (b"qqemu.PhyMemMode", b"1"),
        (b"Qqemu.PhyMemMode:0", b"OK"),
        (b"Qqemu.PhyMemMode:1", b"OK"),
    )
    for request, reply in exchanges:
        pair.lldb.send(frame(request))
        pair.stub.next_packet()
        pair.stub.send(b"+" + frame(reply))
        pair.lldb.next_packet()
    pair.lldb.send(frame(b"k"))
    assert pair.stub.next_packet() == b"D;1"


def test_a_stub_that_does_not_answer_the_detach_is_left(pair: Pair) -> None:
    handshake(pair)
    pair.lldb.sock.close()
    assert pair.stub.next_packet() == b"D;1"
    assert pair.end() == "closed"  # after the reply timeout (2 s here)
    assert pair.lines[-1] == "detaching failed: the gdbstub did not answer"


def test_the_stub_closing_closes_lldbs_side(pair: Pair) -> None:
    handshake(pair)
    pair.stub.sock.close()
    assert pair.lldb.closed()
    assert pair.end() == "stub closed"


# --- the relay as a process ----------------------------------------------------------------


class FakeStub:
    """A listening gdbstub that records each connection's packets, answers ``OK`` to ``D``
    (acknowledged) and ``QCp01.01`` to ``qC``, and nothing else; ``quit`` closes the
    connection (the stub going away)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections: list[list[bytes]] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            packets: list[bytes] = []
            self.connections.append(packets)
            threading.Thread(target=self._talk, args=(conn, packets), daemon=True).start()

    @staticmethod
    def _talk(conn: socket.socket, packets: list[bytes]) -> None:
        framer = Framer()
        with conn:
            while chunk := conn.recv(1 << 16):
                for unit in framer.feed(chunk):
                    if unit.data is None:
                        continue
                    packets.append(unit.data)
                    if unit.data == b"quit":
                        return
                    reply = {b"qC": b"QCp01.01"}.get(unit.data, b"")
                    if unit.data[:1] == b"D":
                        reply = b"OK"
                    conn.sendall(b"+" + frame(reply))

    def close(self) -> None:
        self.server.close()


def test_the_relay_process_outlives_a_handshake_and_detaches_on_a_kill() -> None:
    """``start`` runs the relay in a session of its own; a connection that ends in the
    handshake is followed by another, on a new connection to the stub; the kill becomes a
    detach and the relay exits."""
    stub = FakeStub()
    try:
        started = relay.start(f"127.0.0.1:{stub.port}")
        pid = started.process.pid
        assert os.getsid(pid) == pid != os.getsid(0)
        with socket.create_connection(("127.0.0.1", started.port), TIMEOUT) as first:
            first.sendall(b"+" + frame(b"QStartNoAckMode"))
            first.recv(100)
        with socket.create_connection(("127.0.0.1", started.port), TIMEOUT) as lldb:
            lldb.settimeout(TIMEOUT)
            peer = Peer(lldb)
            peer.packet(b"qC")
            assert peer.next_packet() == b"QCp01.01"
            with pytest.raises(ConnectionRefusedError):  # a session: nobody else gets in
                socket.create_connection(("127.0.0.1", started.port), TIMEOUT).close()
            peer.packet(b"k")
            assert peer.next_packet() == b"W00"
        assert started.process.wait(TIMEOUT) == 0
        assert stub.connections == [[b"QStartNoAckMode"], [b"qC", b"D"]]
    finally:
        stub.close()


@pytest.mark.parametrize(
    ("last", "ended_by_lldb"), [(b"D", True), (b"k", True), (None, True), (b"quit", False)]
)
def test_the_relay_exits_saying_who_ended_the_session(
    last: bytes | None, ended_by_lldb: bool
) -> None:
    """LLDB's detach, its kill, its closing without either end the session on LLDB's side (the
    connection is over: ``pt-connect`` need not wait for LLDB's state); the stub going away
    does not. A relay still serving has not ended."""
    stub = FakeStub()
    try:
        started = relay.start(f"127.0.0.1:{stub.port}")
        with socket.create_connection(("127.0.0.1", started.port), TIMEOUT) as lldb:
            lldb.settimeout(TIMEOUT)
            peer = Peer(lldb)
            peer.packet(b"qC")
            assert peer.next_packet() == b"QCp01.01"
            assert not started.ended_by_lldb()
            if last is not None:
                peer.packet(last)
                if last == b"quit":
                    started.process.wait(TIMEOUT)  # before LLDB's side closes
                else:
                    peer.next_packet()
        started.process.wait(TIMEOUT)
        assert started.ended_by_lldb() is ended_by_lldb
    finally:
        stub.close()


STARTER = """
import sys, time
sys.path.insert(0, {backends!r})
from gdbext_lldb import relay
started = relay.start({address!r})
print(started.port, flush=True)
time.sleep(60)
"""


def test_the_relay_survives_the_hangup_that_ends_its_starter() -> None:
    """A closed terminal hangs up LLDB's process group: the relay, started from it, still
    detaches when LLDB's connection closes."""
    stub = FakeStub()
    backends = str(Path(relay.__file__).resolve().parent.parent)
    code = STARTER.format(backends=backends, address=f"127.0.0.1:{stub.port}")
    starter = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, start_new_session=True
    )
    try:
        assert starter.stdout is not None
        port = int(starter.stdout.readline())
        lldb = socket.create_connection(("127.0.0.1", port), TIMEOUT)
        lldb.settimeout(TIMEOUT)
        Peer(lldb).packet(b"qC")
        os.killpg(starter.pid, signal.SIGHUP)
        assert starter.wait(TIMEOUT) == -signal.SIGHUP
        assert Peer(lldb).next_packet() == b"QCp01.01"
        lldb.close()  # LLDB gone without a detach
        deadline = time.monotonic() + TIMEOUT
        while sum(map(len, stub.connections)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stub.connections == [[b"qC", b"D"]]
    finally:
        starter.kill()
        starter.wait()
        stub.close()


def test_start_reports_a_stub_it_cannot_reach() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening
        with pytest.raises(
            relay.RelayError, match=r"^cannot connect to the gdbstub: Connection refused$"
        ):
            relay.start(f"127.0.0.1:{port}")
