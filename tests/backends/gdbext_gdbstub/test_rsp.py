"""The ``gdbstub`` backend without QEMU: the protocol's framing against a peer on a real socket
(:class:`support.rsppeer.RspPeer`, QEMU's framing over the simulator's memory), the VM left as
found, and one clean error for a stub that hangs, closes, or is not a gdbstub."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from support.fakestub import FakeStub, stub_for
from support.fakestub import sim as sim  # the fixture
from support.rsppeer import REGNUMS, RspPeer

from gdbext.cli import main
from gdbext.cpu import CpuState
from gdbext.frontend.commands import WalkOptions, walk
from gdbext.plugin.target import OpenRequest, Target
from gdbext.x86.records import LeafRun
from gdbext_gdbstub import plugin as gdbstub_plugin
from gdbext_gdbstub.connection import open_connection
from gdbext_gdbstub.link import LiveTargetError, TargetLostError
from gdbext_gdbstub.plugin import open_gdbstub
from gdbext_gdbstub.rsp import decode, request_packet


def leaves(target: Target) -> list[list[object]]:
    scope = target.command_scope
    with scope() if scope is not None else contextlib.nullcontext():
        return [list(r) for r in walk(target, WalkOptions()).runs() if type(r) is LeafRun]


# --- framing ----------------------------------------------------------------------------------


def test_replies_are_unescaped_and_run_lengths_expanded() -> None:
    assert decode(b"}\x03}\x04}]") == "#$}"  # 0x23 ^ 0x20, 0x24 ^ 0x20, 0x7d ^ 0x20
    assert decode(b"0* 1") == "00001"  # " " is 32: 3 more
    assert decode(b"ab*!") == "a" + "b" * 5  # "!" is 33: 4 more


def test_requests_are_framed_with_their_checksum() -> None:
    assert request_packet("m1000,8") == b"$m1000,8#" + b"%02x" % (sum(b"m1000,8") & 0xFF)
    with pytest.raises(ValueError):
        request_packet("a#b")


# --- the target over the protocol ------------------------------------------------------------


def test_a_walk_over_the_protocol_is_the_simulators(sim: Target) -> None:
    stub = stub_for(sim)
    with RspPeer(stub) as peer:
        target = open_gdbstub(OpenRequest(peer.address, {}))
        try:
            assert leaves(target) == leaves(sim)
            got, want = target.cpu(0), sim.cpus[0]
            assert (got.cr0, got.cr3, got.cr4, got.efer) == (
                want.cr0,
                want.cr3,
                want.cr4,
                want.efer,
            )
            assert target.read_path == "PhyMemMode"
        finally:
            assert target.close is not None
            target.close()
    assert stub.mode == 0  # PhyMemMode put back
    # registers by the description's numbers (its commented-out register is not counted)
    assert {f"p{n:x}" for n in REGNUMS.values()} <= set(peer.received)


def test_each_cpu_has_its_own_registers(sim: Target) -> None:
    cpus = [CpuState(0x80050033, 0x1000 * (i + 1), 0x6F0, 0xD01) for i in range(3)]
    stub = stub_for(sim)
    stub.cpus = cpus
    with RspPeer(stub) as peer:
        target = open_gdbstub(OpenRequest(peer.address, {}))
        try:
            assert [target.cpu(i).cr3 for i in range(3)] == [0x1000, 0x2000, 0x3000]
            assert "3 (gdbstub threads 1-3" in target.details["vCPUs"]
        finally:
            assert target.close is not None
            target.close()
    hg = [p for p in peer.received if p.startswith("Hg")]
    assert hg == ["Hgp1.1", "Hgp1.2", "Hgp1.1", "Hgp1.3", "Hgp1.1"]  # back to the selected CPU


def test_reads_are_split_into_packets_of_2_KiB(sim: Target) -> None:
    with RspPeer(stub_for(sim)) as peer:
        conn = open_connection(peer.address, timeout=5)
        conn.link.packet("Qqemu.PhyMemMode:1")
        data = conn.link.read_memory(0x1000, 5000)
        conn.link.packet("Qqemu.PhyMemMode:0")
        conn.close()
    assert data == sim.mapper.read(0x1000, 5000)
    assert [p for p in peer.received if p.startswith("m")] == [
        "m1000,800",
        "m1800,800",
        "m2000,388",
    ]


def test_monitor_output_is_the_O_packets_joined(sim: Target) -> None:
    stub = stub_for(sim)
    with RspPeer(stub) as peer:
        conn = open_connection(peer.address, timeout=5)
        text = conn.link.monitor("info mtree -f")
        conn.close()
    assert text == stub.monitor("info mtree -f")
    assert len(text) > 2 * 200  # several O packets


def test_a_bad_checksum_is_asked_for_again(sim: Target) -> None:
    with RspPeer(stub_for(sim)) as peer:
        conn = open_connection(peer.address, timeout=5)
        peer.corrupt_next = True
        assert conn.link.packet("qqemu.PhyMemMode") == "0"
        conn.close()


def test_ctrl_c_mid_request_leaves_the_next_reply_in_step(sim: Target) -> None:
    """The reply a Ctrl-C left coming is taken in before the next request (the PhyMemMode
    restore must read its own reply). With acks, a late reply comes before the next request's
    ``+`` and is told apart by that; without (``QStartNoAckMode``), only by taking it in."""
    with RspPeer(stub_for(sim), delays={"m": 0.3}) as peer:
        conn = open_connection(peer.address, timeout=5)
        conn.client.acks = False  # the peer's "+" are then ignored, as repeated acks
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()  # a real Ctrl-C
        with pytest.raises(KeyboardInterrupt):
            conn.link.read_memory(0x1000, 8)
        assert conn.link.packet("qqemu.PhyMemMode") == "0"
        conn.close()


# --- the VM as found --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("on_connect", "form", "running", "detach"),
    [
        ("T02thread:01;", "p1.{}", True, "D;1"),  # QEMU stopped a running VM: detach resumes
        (None, "p1.{}", False, None),  # already paused: only close
        ("T02thread:01;", "{:02x}", True, "D"),  # not in multiprocess mode: plain D
    ],
)
def test_close_detaches_only_a_vm_the_connection_stopped(
    sim: Target, on_connect: str | None, form: str, running: bool, detach: str | None
) -> None:
    with RspPeer(stub_for(sim), on_connect=on_connect, thread_form=form) as peer:
        conn = open_connection(peer.address, timeout=5)
        assert conn.was_running is running
        conn.close()
        time.sleep(0.05)
    assert [p for p in peer.received if p.startswith(("D", "k", "c", "vCont"))] == (
        [detach] if detach else []
    )


# --- errors -----------------------------------------------------------------------------------


def test_a_stub_that_does_not_answer_is_one_error_within_the_timeout(sim: Target) -> None:
    with RspPeer(stub_for(sim), replies={"qSupported:xmlRegisters=i386": None}) as peer:
        started = time.monotonic()
        with pytest.raises(LiveTargetError, match=r"did not answer .*qSupported.* within 0.5 s"):
            open_connection(peer.address, timeout=0.5)
        assert time.monotonic() - started < 2


def test_a_stub_that_closes_mid_read_is_the_target_lost(sim: Target) -> None:
    with RspPeer(stub_for(sim), close_on=lambda p: p.startswith("m")) as peer:
        conn = open_connection(peer.address, timeout=5)
        with pytest.raises(TargetLostError, match="connection closed"):
            conn.link.read_memory(0x1000, 8)
        assert not conn.open
        with pytest.raises(TargetLostError):
            conn.link.packet("?")
        conn.close()


@pytest.mark.parametrize("banner", [b"HTTP/1.0 400 Bad Request\r\n\r\n", b"SSH-2.0-OpenSSH\r\n"])
def test_a_peer_that_is_not_a_gdbstub_is_one_error(sim: Target, banner: bytes) -> None:
    with RspPeer(stub_for(sim), banner=banner) as peer, pytest.raises(LiveTargetError):
        open_connection(peer.address, timeout=2)


def test_the_command_line_says_one_line_for_a_stub_that_is_not_there() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens on it
    proc = subprocess.run(
        [sys.executable, "-m", "gdbext.cli", "walk", "--backend", "gdbstub", f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        f"gdbext: cannot connect to the gdbstub at 127.0.0.1:{port}: Connection refused\n"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--backend", "gdbstub"], "needs the stub's HOST:PORT"),
        (["--backend", "gdbstub", "localhost"], "HOST:PORT, not localhost"),
        (["--backend", "gdbstub", "a:1", "--address", "b:2"], "two addresses given"),
        (["--backend", "gdbstub", "a:1", "--stub-timeout", "0"], "--stub-timeout takes seconds"),
        (["--backend", "sim", "a:1"], "takes none"),
    ],
)
def test_bad_addresses_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["info", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and message in err and err.count("\n") == 1


def test_stdout_has_only_gdbexts_output(sim: Target) -> None:
    """pwntools' logging and terminal handling stay out of the command line's output."""
    stub = stub_for(sim)
    with RspPeer(stub, on_connect="T02thread:01;") as peer:
        proc = subprocess.run(
            [sys.executable, "-m", "gdbext.cli", "translate", "--backend", "gdbstub",
             peer.address, "0x0"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.stderr == ""
    assert proc.stdout.startswith("0x0000000000000000: 0x0 is not mapped")
    assert "[x]" not in proc.stdout and "[+]" not in proc.stdout and "\x1b" not in proc.stdout


def test_on_a_terminal_pwntools_leaves_it_alone(sim: Target) -> None:
    """On a terminal too (where ``import pwn`` would take it over): nothing but gdbext's line,
    no escape sequence, and the terminal's modes as they were."""
    import pty
    import termios

    with RspPeer(stub_for(sim)) as peer:
        controller, terminal = pty.openpty()
        before = termios.tcgetattr(terminal)
        proc = subprocess.run(
            [sys.executable, "-m", "gdbext.cli", "translate", "--backend", "gdbstub",
             peer.address, "0x0"],
            stdin=terminal, stdout=terminal, stderr=terminal, timeout=60, check=False,
        )  # fmt: skip
        after = termios.tcgetattr(terminal)
        os.close(terminal)
        output = b""
        with contextlib.suppress(OSError):
            while chunk := os.read(controller, 65536):
                output += chunk
        os.close(controller)
    assert proc.returncode == 1  # 0x0 is not mapped: exit status 1
    assert output.startswith(b"0x0000000000000000: 0x0 is not mapped") and b"\x1b" not in output
    assert before == after


def test_a_fake_stub_without_phymem_reads_through_monitor_xp(sim: Target) -> None:
    stub: FakeStub = stub_for(sim, has_phymem=False)
    with RspPeer(stub) as peer:
        target = open_gdbstub(OpenRequest(None, {"address": peer.address}))
        try:
            assert target.read_path == "monitor xp"
            assert leaves(target) == leaves(sim)
        finally:
            assert target.close is not None
            target.close()


def test_a_stub_that_closed_the_connection_is_dialled_again(sim: Target) -> None:
    """An open connection is reused by the next open of the same address, unless the stub
    closed it meanwhile (QEMU quit, or another QEMU took the port): then a new one is made."""
    with RspPeer(stub_for(sim)) as peer:
        request = OpenRequest(None, {"address": peer.address})
        first = open_gdbstub(request)
        again = open_gdbstub(request)
        assert peer.sessions == 1
        peer.hang_up()
        # The end reaches the client's socket when the kernel delivers it: at once on an idle
        # loopback, a moment later on a loaded machine. The held connection notices it.
        held, _ = gdbstub_plugin._OPEN[peer.address]
        deadline = time.monotonic() + 10
        while held.open and time.monotonic() < deadline:
            time.sleep(0.01)
        third = open_gdbstub(request)
        assert peer.sessions == 2
        try:
            assert leaves(third) == leaves(sim)
        finally:
            for target in (first, again, third):
                assert target.close is not None
                target.close()
