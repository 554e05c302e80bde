"""The ``gdbstub`` backend (no debugger) against the real kernel under QEMU.

Values are checked against QEMU's own monitor (``info tlb``, ``gva2gpa``, ``info status``) on
the fixture's separate HMP socket, at the same stop. The session guest is shared: each test sets
the run state it needs and leaves the guest stopped, as the GDB tests do.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

import gdbext
from gdbext.errors import NotMappedError

if TYPE_CHECKING:
    from qemu_guest import QemuGuest

pytestmark = pytest.mark.qemu

KERNEL_TEXT = 0xFFFF_FFFF_8100_0000
DIRECT_MAP = 0xFFFF_8880_0000_0000


def gdbext_cli(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gdbext.cli", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def status(guest: QemuGuest) -> str:
    return guest.hmp("info status").strip()


@pytest.fixture
def guest(qemu_guest: Callable[[str], QemuGuest]) -> QemuGuest:
    return qemu_guest("4level")


def address(guest: QemuGuest) -> str:
    return f"127.0.0.1:{guest.gdb_port}"


@pytest.mark.parametrize("read_via", ["auto", "stub"])  # QEMU's memory from the host; packets
def test_walk_equals_info_tlb_and_a_paused_vm_stays_paused(guest: QemuGuest, read_via: str) -> None:
    guest.stop()
    proc = gdbext_cli(
        "walk", "--backend", "gdbstub", address(guest), "--format", "qemu-tlb",
        "--read-via", read_via,
    )  # fmt: skip
    assert (proc.returncode, proc.stderr) == (0, "")
    assert status(guest) == "VM status: paused"
    assert proc.stdout.splitlines() == guest.info_tlb()


def test_translate_equals_gva2gpa(guest: QemuGuest) -> None:
    guest.stop()
    vaddrs = [KERNEL_TEXT, KERNEL_TEXT + 0x123456, DIRECT_MAP + 0x1000, DIRECT_MAP + 0x100_0008,
              0xFFFF_C8FF_FFFF_F000, 0x1000]  # fmt: skip
    with gdbext.open(backend="gdbstub", address=address(guest)) as target:
        table = target.page_table()
        got: list[int | None] = []
        for v in vaddrs:
            try:
                got.append(table.translate(v).paddr)
            except NotMappedError:
                got.append(None)
        assert status(guest) == "VM status: paused"
    assert got[0] is not None and got[-1] is None  # mapped and not, both compared
    assert got == [guest.gva2gpa(v) for v in vaddrs]
    proc = gdbext_cli("translate", "--backend", "gdbstub", address(guest), hex(vaddrs[1]))
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.split()[2] == hex(got[1] or 0)


def test_control_registers_equal_info_registers(guest: QemuGuest) -> None:
    guest.stop()
    text = guest.info_registers()
    want = {
        name: int(re.search(rf"\b{name.upper()}=([0-9a-f]+)", text)[1], 16)  # type: ignore[index]
        for name in ("cr0", "cr3", "cr4", "efer")
    }
    with gdbext.open(backend="gdbstub", address=address(guest)) as target:
        cpu = target.target.cpu(0)
        got = {"cr0": cpu.cr0, "cr3": cpu.cr3, "cr4": cpu.cr4, "efer": cpu.efer}
    assert got == want


@pytest.mark.parametrize("command", [["info"], ["walk", "--range", f"{KERNEL_TEXT:#x}+16M"],
                                     ["heap"], ["audit"]])  # fmt: skip
def test_a_running_vm_is_stopped_for_the_command_and_runs_after(
    guest: QemuGuest, command: list[str]
) -> None:
    guest.cont()
    assert status(guest) == "VM status: running"
    proc = gdbext_cli(command[0], "--backend", "gdbstub", address(guest), *command[1:])
    try:
        assert status(guest) == "VM status: running"
        assert proc.returncode in (0, 3), proc.stderr  # audit: 3 when it finds something
        assert proc.stderr == "" and proc.stdout
        if command[0] == "info":
            # QEMU's own memory, read from its process (the host read path, as root here).
            assert f"read path:   host memory (/proc/{guest.pid}/mem)" in proc.stdout
            assert "kernel root:" in proc.stdout
    finally:
        guest.stop()


def test_the_api_holds_the_vm_stopped_while_open(guest: QemuGuest) -> None:
    guest.cont()
    try:
        with gdbext.open(backend="gdbstub", address=address(guest)) as target:
            assert status(guest) == "VM status: paused"
            first = target.page_table().translate(KERNEL_TEXT).paddr
            assert target.page_table(kernel=True).translate(KERNEL_TEXT).paddr == first
            assert status(guest) == "VM status: paused"
        assert status(guest) == "VM status: running"
    finally:
        guest.stop()
    assert first == guest.gva2gpa(KERNEL_TEXT)


def test_qemu_killed_mid_command_is_one_error_line() -> None:
    from qemu_guest import CONFIGS, QemuGuest

    from conftest import require_qemu

    require_qemu()
    with QemuGuest(CONFIGS["4level"]) as doomed:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gdbext.cli", "walk", "--backend", "gdbstub",
             f"127.0.0.1:{doomed.gdb_port}", "--format", "qemu-tlb", "--no-merge"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while status(doomed) != "VM status: paused" and time.monotonic() < deadline:
            time.sleep(0.05)  # connected: the gdbstub stopped the VM
        time.sleep(0.1)  # reading
        os.kill(doomed.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.count("\n") == 1 and err.startswith("gdbext: lost the connection to the gdbstub")
