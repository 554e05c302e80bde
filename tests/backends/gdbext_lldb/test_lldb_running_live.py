"""A VM that runs while the real ``lldb`` reads it (asynchronous ``process continue``): the host
path reads QEMU's memory with no packet sent (LLDB's own ``gdb-remote packets`` log), ``pt-info``
says it runs, and the bytes equal what QEMU's monitor shows once the VM is paused (``xp``,
``x``); QEMU says the VM ran meanwhile (``info status``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support import lldbrun
from support.gdblive import parse_xp

if TYPE_CHECKING:
    from qemu_guest import QemuGuest

pytestmark = [pytest.mark.qemu, pytest.mark.skipif(not lldbrun.available(), reason="no lldb")]

#: The kernel's text (no KASLR in the 4-level guest): it does not change while the VM runs.
TEXT = 0xFFFFFFFF81000000
SIZE = 0x10000
WAIT = 60


def u64_bytes(text: str) -> bytes:
    values = [int(line.split()[1], 16) for line in text.splitlines() if " 0x" in line]
    return b"".join(v.to_bytes(8, "little") for v in values)


def test_lldb_reads_a_running_vm_through_the_host_path_without_a_packet(
    qemu_guest: Callable[[str], QemuGuest], tmp_path: Path
) -> None:
    guest = qemu_guest("4level")
    guest.stop()
    text_paddr = guest.gva2gpa(TEXT)
    assert text_paddr is not None
    running_bin, log = tmp_path / "running.bin", tmp_path / "packets.log"
    control = tmp_path / "control.log"
    looked, seen = tmp_path / "looked", tmp_path / "seen"
    state = "script print('STATE', lldb.debugger.GetSelectedTarget().GetProcess().GetState())"
    commands = [
        "pt-info",
        "script lldb.debugger.SetAsync(True)",
        "process continue",
        "script import time; time.sleep(0.5)",
        f"log enable -f {log} gdb-remote packets",
        "pt-info",
        f"pt-read --phys 0x{text_paddr:x} {SIZE} --format raw -o {running_bin}",
        f"pt-read 0x{TEXT:x} 64 --format u64",
        "pt-backend lldb --read-via stub",
        "log disable gdb-remote packets",
        f"script import os, time; open({str(looked)!r}, 'w').close(); "
        f"[time.sleep(0.1) for _ in range({WAIT * 10}) if not os.path.exists({str(seen)!r})]",
        state,
        "process interrupt",
        "script import time; time.sleep(0.5)",
        "script lldb.debugger.SetAsync(False)",
        f"log enable -f {control} gdb-remote packets",
        f"pt-read --phys 0x{text_paddr:x} 8",  # stopped: the log shows LLDB's packets
        "log disable gdb-remote packets",
    ]
    done: list[lldbrun.Run] = []
    runner = threading.Thread(
        target=lambda: done.append(lldbrun.run(commands, port=guest.gdb_port))
    )
    runner.start()
    try:
        deadline = time.monotonic() + 120
        while not looked.exists() and runner.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        status = guest.hmp("info status") if looked.exists() else "LLDB did not get there"
    finally:
        seen.touch()
        runner.join(300)
    guest.stop()
    xp = parse_xp(guest.hmp(f"xp /{SIZE // 8}gx 0x{text_paddr:x}"))
    x_text = parse_xp(guest.hmp(f"x /8gx 0x{TEXT:x}"))
    (run,) = done
    results = run.results
    assert "VM status: running" in status, status
    stop_info, _, _, _, _, info, phys, virt, stub, *_ = results
    assert stop_info.ok and "state:" not in stop_info.out
    assert info.ok and "state:       running (reads from QEMU's memory" in info.out, info.err
    assert "CPU 0's CR3 0x" in info.out and "is the default root" in info.out, info.out
    assert phys.ok and virt.ok, (phys.err, virt.err)
    data = running_bin.read_bytes()
    assert len(data) == SIZE and any(data) and data == xp
    assert u64_bytes(virt.out) == x_text
    assert not stub.ok and "the target is running, and --read-via stub" in stub.err, stub.err
    sent = [line for line in log.read_text().splitlines() if "send packet" in line]
    assert sent == [], sent[:5]
    assert "send packet" in control.read_text()
    assert "STATE 6" in run.proc.stdout  # eStateRunning when QEMU was asked
