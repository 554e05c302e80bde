"""LLDB never kills the user's VM: the real ``lldb`` connected with ``pt-connect`` to QEMU booting
Debian's kernel, left in each of the ways that make LLDB 14 send its kill (``k``), and by a
closed terminal.

Each time, QEMU's process is still there, QEMU's own trace of the packets it received
(``trace-event gdbstub_io_command``) ends with the relay's detach (``D;1``) and holds no kill,
the VM runs (QEMU's ``D`` resumes it, as ``process detach`` does), PhyMemMode is 0, and the
gdbstub takes a new connection. The control: plain ``gdb-remote`` and the same end kill QEMU.
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from gdbstub import GdbStub
from qemu_guest import alive
from support import lldbrun
from support.paths import ROOT

from conftest import require_qemu

if TYPE_CHECKING:
    from qemu_guest import QemuGuest

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(not lldbrun.available(), reason="no lldb"),
]

READY = "@@READY@@"
#: The packets QEMU received, from its trace.
_RECEIVED = re.compile(r"^gdbstub_io_command Received: (.*)$", re.M)


@dataclass
class Traced:
    """A guest whose gdbstub's received packets QEMU logs to :attr:`log`."""

    guest: QemuGuest
    log: Path
    relay_log: Path

    @property
    def port(self) -> int:
        return self.guest.gdb_port

    @property
    def pid(self) -> int:
        return self.guest.pid

    def hmp(self, command: str) -> str:
        return self.guest.hmp(command)

    def mark(self) -> tuple[int, int]:
        """Where the logs are now."""
        self.relay_log.touch()
        return self.log.stat().st_size, self.relay_log.stat().st_size

    def received(self, since: int) -> list[str]:
        return _RECEIVED.findall(self.log.read_text(errors="replace")[since:])

    def relay_lines(self, since: int) -> str:
        return self.relay_log.read_text(errors="replace")[since:]


def traced(guest: QemuGuest, tmp: Path) -> Traced:
    log = tmp / "qemu-trace.log"
    t = Traced(guest, log, tmp / "relay.log")
    t.hmp(f"logfile {log}")
    t.hmp("trace-event gdbstub_io_command on")
    return t


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    """A guest of its own: a test that fails here kills QEMU, not the session's guests."""
    require_qemu()
    from qemu_guest import CONFIGS, QemuGuest

    with QemuGuest(CONFIGS["4level"]) as guest:
        yield traced(guest, tmp_path_factory.mktemp("relay-live"))


def env(t: Traced) -> dict[str, str]:
    return {**os.environ, "GDBEXT_RELAY_LOG": str(t.relay_log)}


def connect_commands(t: Traced) -> list[str]:
    return [f"pt-connect 127.0.0.1:{t.port}", "pt-info", f"script print('{READY}')"]


def check_survived(t: Traced, since: tuple[int, int], how: str) -> list[str]:
    """QEMU runs on after LLDB left; the packets QEMU received since ``since``."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "D;1" not in t.received(since[0]):
        time.sleep(0.05)
    received = t.received(since[0])
    assert alive(t.pid), how
    assert received[-1:] == ["D;1"], (how, received[-5:])
    assert not [p for p in received if p == "k" or p.startswith("vKill")], how
    assert "qSupported" in " ".join(received)  # LLDB's own packets reached QEMU
    assert t.hmp("info status").strip() == "VM status: running", how
    # The gdbstub takes a new connection and answers: stop reason, the mode LLDB found.
    t.hmp("stop")
    with GdbStub.connect(t.port, timeout=30) as stub:
        assert stub.request("?").startswith("T")
        assert stub.request("qqemu.PhyMemMode") == "0"
        stub.detach()
    t.hmp("stop")
    return received


def run_batch(t: Traced, *commands: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        lldbrun.argv(*commands),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env(t),
        timeout=300,
        check=False,
    )


def test_the_end_of_a_batch_run_detaches(vm: Traced) -> None:
    vm.hmp("stop")
    since = vm.mark()
    proc = run_batch(vm, *connect_commands(vm), "pt-walk --range 0xffffffff81000000+0x200000")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^0xffffffff81000000-0xffffffff81200000 ", proc.stdout, re.M)
    check_survived(vm, since, "lldb --batch")
    assert "LLDB sent k: answered W00" in vm.relay_lines(since[1])  # what LLDB did


def test_a_failing_batch_command_detaches(vm: Traced) -> None:
    vm.hmp("stop")
    since = vm.mark()
    proc = run_batch(vm, *connect_commands(vm), "pt-walk --bogus", "pt-info")
    assert proc.returncode == 1
    assert "error: pt-walk: unrecognized arguments: --bogus\n" in proc.stderr
    check_survived(vm, since, "a failing batch command")
    assert "LLDB sent k: answered W00" in vm.relay_lines(since[1])


def test_a_running_vm_connected_then_left_by_batch_runs_on(vm: Traced) -> None:
    """The VM runs when pt-connect connects (QEMU stops it, pt-connect's retry)."""
    vm.hmp("cont")
    since = vm.mark()
    proc = run_batch(vm, *connect_commands(vm))
    assert proc.returncode == 0, proc.stderr
    check_survived(vm, since, "lldb --batch on a running VM")


def test_the_relay_passes_lldbs_packets_unchanged(vm: Traced, tmp_path: Path) -> None:
    """What QEMU received while the commands ran is what LLDB's packet log says LLDB sent,
    packet for packet: the relay adds, drops and changes nothing on the way (its only packets
    of its own, ``D;PID`` and a PhyMemMode put back, come after LLDB left)."""
    vm.hmp("stop")
    since = vm.mark()
    log = tmp_path / "packets.log"
    commands = [
        f"log enable -f {log} gdb-remote packets",
        "pt-backend lldb --read-via stub",  # reads through the relay (the host path has few)
        "pt-walk --format qemu-tlb",
        "pt-translate $rip 0x1000",
        "pt-walk --format json --filter wx",
        "process plugin packet monitor info registers",
        "log disable gdb-remote packets",
    ]
    run = lldbrun.run(commands, port=vm.port)
    assert run.report["detached"]  # LLDB's own detach, passed on
    text = log.read_text(errors="replace")
    sent = re.findall(r"^(?!.*history\[).*send packet: \$([^#]*)#", text, re.M)
    assert len(sent) > 100
    received = vm.received(since[0])
    starts = [i for i in range(len(received)) if received[i : i + len(sent)] == sent]
    assert len(starts) == 1, (sent[:5], received[:20])
    assert received[-1].startswith("D;")  # LLDB's detach, after `log disable`


# --- LLDB on a terminal ------------------------------------------------------------------------


@dataclass
class Terminal:
    """LLDB on a pseudo-terminal of its own (its controlling terminal: closing the master end
    hangs it up, as closing a terminal window does)."""

    pid: int
    master: int
    seen: bytes = b""

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {text!r} in {self.seen.decode(errors='replace')}")
            if select.select([self.master], [], [], left)[0]:
                try:
                    chunk = os.read(self.master, 1 << 16)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"LLDB ended: {self.seen.decode(errors='replace')}")
                self.seen += chunk

    def type(self, line: str) -> None:
        os.write(self.master, line.encode() + b"\n")

    def wait(self, timeout: float = 60) -> int:
        """LLDB's wait status, draining the terminal meanwhile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return status
            with contextlib.suppress(OSError):
                if select.select([self.master], [], [], 0.1)[0]:
                    self.seen += os.read(self.master, 1 << 16)
        raise AssertionError("LLDB did not end")


@contextlib.contextmanager
def terminal(t: Traced) -> Iterator[Terminal]:
    argv = [str(lldbrun.WRAPPER)]
    for command in connect_commands(t):
        argv += ["-o", command]
    environment = env(t)
    pid, master = pty.fork()
    if pid == 0:  # the child: LLDB, the terminal's session leader
        try:
            os.chdir(ROOT)
            os.execve(argv[0], argv, environment)
        finally:
            os._exit(127)
    term = Terminal(pid, master)
    try:
        term.wait_for(f"\n{READY}")
        yield term
    finally:
        with contextlib.suppress(OSError):
            os.close(master)
        with contextlib.suppress(ChildProcessError, ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def test_quit_in_interactive_lldb_detaches(vm: Traced) -> None:
    vm.hmp("stop")
    since = vm.mark()
    with terminal(vm) as term:
        term.type("quit")
        term.wait_for("Quitting LLDB will kill one or more processes")
        term.type("y")
        status = term.wait()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, term.seen
    check_survived(vm, since, "quit")
    assert "LLDB sent k: answered W00" in vm.relay_lines(since[1])


def test_a_closed_terminal_detaches(vm: Traced) -> None:
    """The terminal hangs up: LLDB 14 dies of SIGHUP without a word to the stub (plain
    ``gdb-remote`` leaves the VM stopped, LLDB's breakpoints in it); the relay detaches."""
    vm.hmp("stop")
    since = vm.mark()
    with terminal(vm) as term:
        os.close(term.master)
        status = term.wait()
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGHUP, status
    check_survived(vm, since, "SIGHUP")
    assert "LLDB closed its connection without a detach" in vm.relay_lines(since[1])


def test_a_closed_terminal_in_the_other_phymemmode_puts_it_back(vm: Traced) -> None:
    """LLDB gone while QEMU is in PhyMemMode 1 (as in the middle of a pt-* command): the relay
    puts back the mode the session found before it detaches."""
    vm.hmp("stop")
    since = vm.mark()
    with terminal(vm) as term:
        term.type("process plugin packet send Qqemu.PhyMemMode:1")
        term.wait_for("response: OK")
        os.close(term.master)
        term.wait()
    received = check_survived(vm, since, "SIGHUP in mode 1")
    assert received[-3:] == ["Qqemu.PhyMemMode:1", "Qqemu.PhyMemMode:0", "D;1"]


def test_end_of_input_detaches(vm: Traced) -> None:
    """LLDB reading its commands from a pipe that closes (a terminal gone while SIGHUP is
    ignored, ``nohup``): LLDB quits and sends its kill."""
    vm.hmp("stop")
    since = vm.mark()
    argv = [str(lldbrun.WRAPPER)] + [a for c in connect_commands(vm) for a in ("-o", c)]
    proc = subprocess.run(
        argv, input="pt-info\n", capture_output=True, text=True, cwd=ROOT,
        env=env(vm), timeout=300, check=False,
    )  # fmt: skip
    assert READY in proc.stdout, proc.stderr
    check_survived(vm, since, "end of input")
    assert "LLDB sent k: answered W00" in vm.relay_lines(since[1])


# --- the control -------------------------------------------------------------------------------


def test_without_the_relay_lldb_kills_qemu(tmp_path: Path) -> None:
    """Plain ``gdb-remote``, the same end of a batch run: QEMU received ``k`` and is gone. (A
    guest stopped before it boots: nothing to wait for.)"""
    require_qemu()
    from qemu_guest import GuestConfig, QemuGuest

    with QemuGuest(GuestConfig(paused=True)) as guest:
        t = traced(guest, tmp_path)
        since = t.mark()
        proc = run_batch(t, f"gdb-remote 127.0.0.1:{t.port}", "register read rip")
        assert proc.returncode == 0, proc.stderr
        deadline = time.monotonic() + 30
        while alive(t.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(t.pid)
        assert t.received(since[0])[-1] == "k"
