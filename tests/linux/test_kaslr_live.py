"""``kaslr`` on a running KASLR + PTI guest over the debugger-free ``gdbstub`` backend, against
the VMCOREINFO note of a dump of the same stop, read here with pyelftools.

The direct map's base is checked against ``SYMBOL(mem_section)``, an address the kernel
allocated in the direct map: ``page_offset_base`` is 1 GiB-aligned and the guest has less than
1 GiB of RAM, so that address rounded down to 1 GiB is the base.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from elftools.elf.elffile import ELFFile
from support.dumps import elf_vmcoreinfo

from .test_kaslr import START_KERNEL, START_KERNEL_MAP, TOP

if TYPE_CHECKING:
    from qemu_guest import QemuGuest

pytestmark = pytest.mark.qemu

GB = 1 << 30


def _ram_end(dump: Path) -> int:
    """The end of the guest's RAM: the highest physical end of the dump's loadable segments,
    read with pyelftools."""
    with dump.open("rb") as f:
        loads = [s.header for s in ELFFile(f).iter_segments() if s.header.p_type == "PT_LOAD"]
    return int(max(h.p_paddr + h.p_memsz for h in loads))


def test_live_kaslr_equals_the_guests_vmcoreinfo(
    qemu_guest: Callable[[str], QemuGuest], tmp_path: Path
) -> None:
    guest = qemu_guest("kaslr-pti")
    guest.stop()
    dump = tmp_path / "stop.elf"
    guest.dump_elf(dump)
    vmci = elf_vmcoreinfo(dump)
    proc = subprocess.run(
        [sys.executable, "-m", "gdbext.cli", "kaslr", "--backend", "gdbstub",
         f"127.0.0.1:{guest.gdb_port}", "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert (proc.returncode, proc.stderr) == (0, "")
    bases = json.loads(proc.stdout)["bases"]
    offset = int(vmci["KERNELOFFSET"], 16)
    text = (START_KERNEL + offset) % TOP
    assert offset != 0  # a KASLR guest
    assert bases["kaslr_slide"]["value"] == hex(offset)
    assert bases["kernel_text"]["value"] == hex(text)
    phys_base = int(vmci["NUMBER(phys_base)"]) % TOP
    assert bases["kernel_phys"]["value"] == hex((text - START_KERNEL_MAP + phys_base) % TOP)
    mem_section = int(vmci["SYMBOL(mem_section)"], 16)
    assert bases["direct_map"]["value"] == hex(mem_section - mem_section % GB)
    assert json.loads(proc.stdout)["disagreements"] == []


@pytest.mark.parametrize("where", ["user half", "kernel image"])
def test_live_leaks_are_what_qemu_reads_there(
    qemu_guest: Callable[[str], QemuGuest], tmp_path: Path, where: str
) -> None:
    """Each reported leak is where QEMU puts it and holds what QEMU reads there (``xp /gx``),
    and the dump of the same stop finds the same leaks. In the user half of CPU 0's root the
    physical address is QEMU's ``gva2gpa``; in the kernel's tables (``--kernel --all-pages``
    over 40 MiB of the image, full of pointers) it is ``VA - __START_KERNEL_map +
    phys_base`` from VMCOREINFO."""
    guest = qemu_guest("kaslr-pti")
    guest.stop()
    dump = tmp_path / "stop.elf"
    guest.dump_elf(dump)
    vmci = elf_vmcoreinfo(dump)
    text = (START_KERNEL + int(vmci["KERNELOFFSET"], 16)) % TOP
    phys_base = int(vmci["NUMBER(phys_base)"]) % TOP
    argv = ["kaslr", "--leaks", "--max", "100000", "--json"]
    if where == "kernel image":
        argv += ["--kernel", "--all-pages", "--range", f"{text:#x}+0x2800000"]
    live = subprocess.run(
        [sys.executable, "-m", "gdbext.cli", argv[0], "--backend", "gdbstub",
         f"127.0.0.1:{guest.gdb_port}", *argv[1:]],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert live.stderr == ""
    leaks = json.loads(live.stdout)["leaks"]
    offline = subprocess.run(
        [sys.executable, "-m", "gdbext.cli", argv[0], str(dump), *argv[1:]],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    dumped = json.loads(offline.stdout)["leaks"]
    # The regions come from the kernel's tables, not from each backend's idea of RAM (QEMU's
    # memory tree live, the dump's segments): the same on both, the direct map ending in RAM.
    assert dumped["regions"] == leaks["regions"]
    direct = [int(x, 16) for x in leaks["regions"]["direct map"]]
    assert direct[1] - direct[0] <= _ram_end(dump)
    assert dumped["groups"] == leaks["groups"]
    found = [x for group in leaks["groups"].values() for x in group]
    assert live.returncode == (0 if found else 1)
    if where == "kernel image":
        assert len(found) > 100 and {"kernel image", "direct map"} <= set(leaks["groups"])
    for leak in found[:: max(1, len(found) // 8)]:
        va, pa = int(leak["vaddr"], 16), int(leak["paddr"], 16)
        if where == "kernel image":
            assert pa == (va - START_KERNEL_MAP + phys_base) % TOP
        else:
            assert guest.gva2gpa(va) == pa
        xp = guest.hmp(f"xp /1gx {pa:#x}")
        assert int(xp.split(":")[1].split()[0], 16) == int(leak["value"], 16), xp
