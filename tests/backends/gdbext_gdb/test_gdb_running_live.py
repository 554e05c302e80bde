"""A VM that runs while the real ``gdb`` reads it (``continue &``): the host path reads QEMU's
memory with no packet sent (GDB's own ``set debug remote`` log), ``pt-info`` says it runs, and
the bytes equal what QEMU's monitor shows once the VM is paused (``xp``, ``x``); QEMU says the
VM ran meanwhile (``info status``).
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support.debuggers import MARK, gdb, marked, sections
from support.gdblive import guest4 as guest4  # the fixture
from support.gdblive import parse_xp

if TYPE_CHECKING:
    import subprocess

    from qemu_guest import QemuGuest

pytestmark = [pytest.mark.qemu, pytest.mark.skipif(shutil.which("gdb") is None, reason="no gdb")]

#: The kernel's text (no KASLR in the 4-level guest): it does not change while the VM runs.
TEXT = 0xFFFFFFFF81000000
#: Bytes of it read.
SIZE = 0x10000
#: How long the GDB script waits for the test to look at the running VM.
WAIT = 60


def test_a_running_vm_is_read_through_the_host_path_without_a_packet(
    guest4: QemuGuest, tmp_path: Path
) -> None:
    text_paddr = guest4.gva2gpa(TEXT)
    assert text_paddr is not None
    running_bin = tmp_path / "running.bin"
    looked, seen = tmp_path / "looked", tmp_path / "seen"
    wait = (
        f"python import os, time; open({str(looked)!r}, 'w').close(); "
        f"[time.sleep(0.1) for _ in range({WAIT * 10}) if not os.path.exists({str(seen)!r})]"
    )
    commands = [
        "set pagination off",
        f"target remote 127.0.0.1:{guest4.gdb_port}",
        *marked(
            "pt-info",  # at the stop: the host path is checked, the CPU states read
            "set debug remote 1",
            "continue &",
            "python import time; time.sleep(0.5)",
            f"python gdb.write('{MARK} window\\n', gdb.STDERR)",
            "python print(gdb.selected_thread().is_running())",
            "pt-info",
            f"pt-read --phys 0x{text_paddr:x} {SIZE} --format raw -o {running_bin}",
            f"pt-read 0x{TEXT:x} 64 --format u64",  # through the last stop's CR3
            "pt-backend gdb --read-via stub",  # refused: the stub path needs a stop
            f"pt-read --phys 0x{text_paddr:x} 8",  # still the host path
            f"python gdb.write('{MARK} end\\n', gdb.STDERR)",
            "set debug remote 0",
            wait,
            "python print(gdb.selected_thread().is_running())",
        ),
        "disconnect",
    ]
    done: list[subprocess.CompletedProcess[str]] = []
    runner = threading.Thread(target=lambda: done.append(gdb(*commands, timeout=300)))
    runner.start()
    try:
        deadline = time.monotonic() + 120
        while not looked.exists() and runner.is_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        status = guest4.hmp("info status") if looked.exists() else "GDB did not get there"
    finally:
        seen.touch()
        runner.join(300)
    guest4.stop()
    xp = parse_xp(guest4.hmp(f"xp /{SIZE // 8}gx 0x{text_paddr:x}"))
    x_text = parse_xp(guest4.hmp(f"x /8gx 0x{TEXT:x}"))
    (proc,) = done
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "VM status: running" in status, status
    stop_info, _, _, _, _, running, running_info, phys, virt, stub, after, *_, still = sections(
        proc.stdout
    )
    assert "host memory (/proc/" in stop_info and "state:" not in stop_info
    assert running.strip() == still.strip() == "True"
    state = r"state:\s+running \(reads from QEMU's memory while the VM runs"
    assert re.search(state, running_info), proc.stderr[-3000:]
    assert "as read at the last stop" in running_info, running_info
    assert f"read path:   host memory (/proc/{guest4.pid}/mem)" in running_info, running_info
    assert phys == ""
    data = running_bin.read_bytes()
    assert len(data) == SIZE and any(data)
    assert data == xp
    values = [int(line.split()[1], 16) for line in virt.splitlines() if " 0x" in line]
    assert b"".join(v.to_bytes(8, "little") for v in values) == x_text
    before, window = proc.stderr.split(f"{MARK} window\n", 1)
    window = window.split(f"{MARK} end\n", 1)[0]
    assert "Sending packet" in before  # the log works: `continue &` sent the resume
    assert "Sending packet" not in window, window
    assert stub == "" and after.startswith(f"{text_paddr:016x}  {data[:8].hex(' ')}"), after
    refused = "the target is running, and --read-via stub reads through the gdbstub, which GDB "
    assert f"{refused}cannot use until it stops: interrupt it first\n" in window, window
