"""The LLDB backend's connection to QEMU's gdbstub, in the real ``lldb`` against QEMU booting
Debian's kernel: ``pt-connect`` to a running VM, two vCPUs and QEMU killed mid-command, a
gdbstub gone between commands or that stops answering, ``pt-backend lldb`` on a detached
target, Ctrl-C in a live command; the mode and LLDB's cache are back each time.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support import lldbrun
from support.debuggers import (
    wait_for_stderr,
)
from support.lldblive import ENTRY_ADDR, QUERY, mode_of, words_at
from support.paths import ROOT

if TYPE_CHECKING:
    from qemu_guest import QemuGuest

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(not lldbrun.available(), reason="no lldb"),
]

#: A command that reads all of a 128 MiB guest's RAM through the stub (more than 5 s): the
#: e820 scan with a root outside RAM, so that no kernel image is found to search first.
FULL_SCAN = "pt-heap --memmap e820 --cr3 0x40000000"
#: The tests of a stub that dies, stalls or is interrupted in the middle of a command read
#: through it (the host path would end the scan before anything happens).
VIA_STUB = "pt-backend lldb --read-via stub"


def test_pt_connect_connects_to_a_running_vm(qemu_guest: Callable[[str], QemuGuest]) -> None:
    """LLDB 14's ``gdb-remote`` fails on a running QEMU (the VM's stop reply comes first);
    ``pt-connect`` retries and connects every time."""
    guest = qemu_guest("4level")
    guest.cont()
    time.sleep(0.2)
    plain = subprocess.run(
        lldbrun.argv(f"gdb-remote 127.0.0.1:{guest.gdb_port}", "process detach"),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert "handshake" in plain.stderr  # the control: the pitfall is real
    for _ in range(5):
        guest.cont()
        time.sleep(0.2)
        assert guest.hmp("info status").strip() == "VM status: running"
        run = lldbrun.run(["pt-info"], port=guest.gdb_port)
        assert run.results[0].ok and "paging:    4-level" in run.outputs()[0]
        assert run.report["detached"]


def test_two_vcpus_then_qemu_killed_mid_command_is_one_clean_error(tmp_path: Path) -> None:
    """Two vCPUs are LLDB threads 1 and 2 (``--cpu 1`` is thread 2's CR3). QEMU killed while
    ``pt-heap --memmap e820`` scans RAM (:data:`FULL_SCAN`): one line, and LLDB answers the next
    commands."""
    from qemu_guest import GuestConfig, QemuGuest

    from conftest import require_qemu

    require_qemu()
    with QemuGuest(GuestConfig(cpu="qemu64", smp=2)) as guest:
        guest.stop()
        regs = [
            int(m, 16) for m in re.findall(r"CR3=([0-9a-f]{16})", guest.hmp("info registers -a"))
        ]
        text = guest.gva2gpa(0xFFFFFFFF81000000)
        assert text is not None
        commands = [
            VIA_STUB,
            "pt-info",
            "pt-translate --cpu 1 0xffffffff81000000",
            FULL_SCAN,
            "pt-walk",
            "script print('alive')",
        ]
        with tempfile.TemporaryDirectory() as tmp:
            command, out = lldbrun.driver_argv(commands, Path(tmp), port=guest.gdb_port)
            proc = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT
            )
            seen = wait_for_stderr(proc, b"pt-heap: ", 120)
            os.kill(guest.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate(timeout=120)
            done = subprocess.CompletedProcess(command, proc.returncode, stdout.decode(), "")
            run = lldbrun.collect(out, done)
    _, info, translate, heap, walk, alive = run.results
    assert "vCPUs:       2 (LLDB threads 1-2; CPU N is thread N+1)" in info.out
    assert len(regs) == 2
    cpu1 = info.out.split("cpu 1:\n", 1)[1]
    assert cpu1.startswith("  paging:") and f"cr3:       0x{regs[1]:x}\n" in cpu1
    assert translate.ok and f"0xffffffff81000000 -> 0x{text:x} " in translate.out
    print(heap.err, walk.err)
    assert not heap.ok and heap.err.count("\n") == 1, heap.err
    assert "lost the connection" in heap.err or "needs a live target" in heap.err, heap.err
    assert not walk.ok and walk.err.count("\n") == 1, walk.err
    assert alive.ok
    assert "Traceback" not in stdout.decode() + (seen + stderr).decode()


def test_a_gdbstub_gone_between_commands_is_one_line_not_cached_output(
    qemu_guest: Callable[[str], QemuGuest], tmp_path: Path
) -> None:
    """QEMU's gdbstub goes away while LLDB waits (``gdbserver none``; a killed QEMU alike):
    LLDB 14 keeps the process "stopped", so without asking the stub the next command would print
    the tables cached at that stop as if nothing happened. It is one line, for every command."""
    guest = qemu_guest("4level")
    guest.stop()
    ready, go = tmp_path / "ready", tmp_path / "go"
    walk = "pt-walk --range 0xffffffff81000000+0x200000"
    commands = [
        walk,
        f"script open({str(ready)!r}, 'w').close()",
        f"script import os, time; [time.sleep(0.05) for _ in range(2400) "
        f"if not os.path.exists({str(go)!r})]",
        walk,
        "pt-info",
    ]
    command, out = lldbrun.driver_argv(commands, tmp_path, port=guest.gdb_port)
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        guest.hmp("gdbserver none")
        go.touch()
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        guest.hmp(f"gdbserver tcp:127.0.0.1:{guest.gdb_port}")
    run = lldbrun.collect(out, subprocess.CompletedProcess(command, proc.returncode, stdout, ""))
    first, _, _, again, info = run.results
    assert first.ok  # after the Linux layout line (VMCOREINFO found live: labels on)
    assert "\n0xffffffff81000000-0xffffffff81200000 " in "\n" + first.out, first.out
    gone = "error: lost the connection to the target (the gdbstub is gone)\n"
    assert (again.ok, again.out, again.err) == (False, "", gone)
    assert (info.ok, info.out, info.err) == (False, "", gone)
    assert "Traceback" not in stdout + stderr
    after = lldbrun.run(["pt-info"], port=guest.gdb_port)  # the guest serves the next tests
    assert after.results[0].ok


def test_pt_backend_lldb_and_a_detached_target(qemu_guest: Callable[[str], QemuGuest]) -> None:
    """``pt-backend lldb`` selects this debugger's connection; ``pt-connect`` while connected
    is refused; once LLDB detached, every command is one line saying what to do, and LLDB goes
    on."""
    guest = qemu_guest("4level")
    guest.stop()
    needs = (
        "error: the lldb backend needs a live target: connect LLDB first (pt-connect HOST:PORT, "
        "or gdb-remote HOST:PORT)\n"
    )
    again = f"pt-connect 127.0.0.1:{guest.gdb_port}"
    run = lldbrun.run(
        [
            "pt-backend lldb",
            "pt-backend",
            again,
            "process detach",
            "pt-walk",
            "pt-translate 0x1000",
        ],
        port=guest.gdb_port,
    )
    selected, listing, connected, detach, walk, translate = run.results
    assert (connected.ok, connected.err) == (
        False,
        "error: pt-connect: LLDB is already connected; 'process detach' first (which resumes "
        "the VM)\n",
    )
    assert selected.out == f"backend lldb: gdb-remote 127.0.0.1:{guest.gdb_port}\n"
    assert "* lldb " in listing.out
    assert re.search(r"^selected: lldb --debugger \d+$", listing.out, re.M), listing.out
    assert detach.ok
    assert (walk.ok, walk.err, translate.ok, translate.err) == (False, needs, False, needs)
    assert "Traceback" not in run.proc.stdout + run.proc.stderr


def test_ctrl_c_in_a_live_command_restores_the_mode_and_the_cache(
    qemu_guest: Callable[[str], QemuGuest],
) -> None:
    """SIGINT while ``pt-heap --memmap e820`` scans RAM through the stub (:data:`FULL_SCAN`; in
    PhyMemMode, LLDB's memory cache bypassed): one line, and both are put back. The progress
    line before it comes after 5 s: stderr is a pipe."""
    guest = qemu_guest("4level")
    guest.stop()
    with tempfile.TemporaryDirectory() as tmp:
        command, out = lldbrun.driver_argv([VIA_STUB, FULL_SCAN], Path(tmp), port=guest.gdb_port)
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
        seen = wait_for_stderr(proc, b"pt-heap: 5 s", 120)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
        run = lldbrun.collect(out, subprocess.CompletedProcess(command, proc.returncode, "", ""))
    _, heap = run.results
    text = (seen + stderr).decode()
    assert "pt-heap: interrupted\n" in text and "Traceback" not in text + stdout.decode()
    assert heap.memory_cache == "false"
    assert run.report["detached"]
    guest.stop()
    after = lldbrun.run([QUERY], port=guest.gdb_port)
    assert mode_of(after.outputs()[0]) == "0"


STALL_PLUGIN = """
import os, signal
from gdbext_lldb import lldb_link

read_memory = lldb_link.LldbProcessLink.read_memory

def stalling_read(self, addr, size):
    # QEMU stops answering right after the command switched to PhyMemMode 1.
    lldb_link.LldbProcessLink.read_memory = read_memory
    os.kill({pid}, signal.SIGSTOP)
    return read_memory(self, addr, size)

lldb_link.LldbProcessLink.read_memory = stalling_read
"""


def test_a_gdbstub_that_stops_answering_costs_one_packet_timeout(
    qemu_guest: Callable[[str], QemuGuest], tmp_path: Path
) -> None:
    """QEMU stopped (SIGSTOP) in the middle of a command, in PhyMemMode 1: the command fails
    after LLDB's packet timeout with one line, the next ones at once (LLDB's replies are out of
    step for good: a register read would get a memory read's bytes), nothing hangs; after
    ``process detach`` the next ``pt-connect`` puts the mode back before LLDB reads anything."""
    guest = qemu_guest("4level")
    guest.stop()
    root = guest.cr3() & ENTRY_ADDR
    text = guest.gva2gpa(0xFFFFFFFF81000000)
    assert text is not None
    text_words = words_at(guest, "x", 0xFFFFFFFF81000000)[:2]
    plugin = tmp_path / "stall.py"
    plugin.write_text(STALL_PLUGIN.format(pid=guest.pid))
    mark = "@@mark@@"
    script = tmp_path / "commands.lldb"
    script.write_text(
        "\n".join(
            [
                f"command script import {plugin}",
                VIA_STUB,
                "script import time; t = time.monotonic()",
                "pt-walk",
                f"script print('{mark}', round(time.monotonic() - t, 1)); t = time.monotonic()",
                "pt-info",
                f"script print('{mark}', round(time.monotonic() - t, 1))",
                f"script import os, signal; os.kill({guest.pid}, signal.SIGCONT)",
                "process detach",
                f"pt-connect 127.0.0.1:{guest.gdb_port}",
                f"script print('{mark}')",
                "x/1i $pc",
                "memory read -s8 -fx -c2 0xffffffff81000000",
                "pt-walk --has 0xffffffff81000000",
                QUERY,
                "process detach",
            ]
        )
        + "\n"
    )
    try:
        proc = subprocess.run(
            lldbrun.argv(
                "settings set plugin.process.gdb-remote.packet-timeout 2",
                f"pt-connect 127.0.0.1:{guest.gdb_port}",
                f"command source -e false {script}",
            ),
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
            check=False,
        )
    finally:
        os.kill(guest.pid, signal.SIGCONT)
    stalled = (
        f"error: the gdbstub did not answer a read of 0x{root:x} in 2 s (QEMU stopped or hung?); "
        "LLDB's replies are out of step from there on: reconnect ('process detach', then "
        "pt-connect HOST:PORT)"
    )
    assert proc.stderr.splitlines() == [stalled, stalled]
    timings = re.findall(rf"^{mark} (\S+)$", proc.stdout, re.M)
    assert 1.8 <= float(timings[0]) < 4 and float(timings[1]) < 0.5, timings
    after = proc.stdout.split(f"{mark}\n")[-1]
    # The mode was put back before LLDB read the instruction at $pc: virtual bytes, not zeros.
    assert "PhyMemMode put back to 0 (the last connection stopped answering in mode 1)" in (
        proc.stdout
    )
    # (The stop is usually in the kernel, but a user process may be running: any address.)
    assert re.search(r"^->  0x[0-9a-f]+: [0-9a-f]{2}", after, re.M), after
    assert not re.search(r": 00 00 +addb", after)
    # The kernel's text, read virtually, is what the monitor read before (not RAM's zeros).
    assert re.findall(r"0x[0-9a-f]{16}", after.split("0xffffffff81000000: ", 1)[1])[:2] == (
        text_words
    ), after
    assert re.search(rf"^0xffffffff81000000-0x[0-9a-f]+ .* r-x kern G +-> 0x{text:x}$", after, re.M)
    assert mode_of(after) == "0"
    assert "Traceback" not in proc.stdout + proc.stderr
