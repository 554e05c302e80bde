"""Live targets know the kernel without vmlinux: VMCOREINFO found in the guest's memory.

A KASLR + PTI guest (Debian's kernel, whatever build the machine boots) is stopped and dumped
at the stop; then GDB (leaving with ``disconnect``, so the VM stays stopped) and LLDB run the
same commands. Expected values come from that stop, never from gdbext's own reading of it:

- the kernel root: derived here from the dump's VMCOREINFO note, read with pyelftools and
  parsed by hand; LLDB sets CR3 to it and QEMU's ``info tlb`` is what ``pt-walk --kernel
  --format qemu-tlb`` must print;
- ``boot_params``: the test scans the dump's memory itself for setup headers with an e820 map;
  the kernel's copy is the one above the kernel's ``_stext`` (physical, from the note);
- the walks with labels, ``--kernel``, and ``heap --memmap e820`` equal ``gdbext`` on the dump.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from elftools.elf.elffile import ELFFile
from support import lldbrun
from support.debuggers import cli_output, gdb, marked, sections, tlb_lines

if TYPE_CHECKING:
    from qemu_guest import QemuGuest

pytestmark = pytest.mark.qemu

START_KERNEL_MAP = 0xFFFF_FFFF_8000_0000
TLB_LINE = re.compile(r"^[0-9a-f]{16}: [0-9a-f]{16} [-A-Z]{9}$", re.M)


def dump_facts(path: Path) -> tuple[dict[str, str], list[int]]:
    """The dump's VMCOREINFO (parsed by hand) and the physical addresses of every 8-byte-aligned
    ``"HdrS"`` at +0x202 whose ``e820_entries`` (+0x1e8) is 1..128."""
    vmcoreinfo: dict[str, str] = {}
    candidates: list[int] = []
    with path.open("rb") as f:
        elf = ELFFile(f)
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_NOTE":
                for note in seg.iter_notes():  # type: ignore[attr-defined]  # a NoteSegment
                    if note["n_name"] == "VMCOREINFO":
                        desc = note["n_desc"]
                        text = desc if isinstance(desc, str) else desc.decode()
                        for line in text.split("\0")[0].splitlines():
                            key, _, value = line.partition("=")
                            vmcoreinfo[key] = value
            elif seg["p_type"] == "PT_LOAD":
                data, base = seg.data(), seg["p_paddr"]
                pos = data.find(b"HdrS")
                while pos >= 0:
                    at = pos - 0x202
                    if at >= 0 and (base + at) % 8 == 0 and 1 <= data[at + 0x1E8] <= 128:
                        candidates.append(base + at)
                    pos = data.find(b"HdrS", pos + 1)
    assert "SYMBOL(init_top_pgt)" in vmcoreinfo, "the guest's dump has no VMCOREINFO note"
    return vmcoreinfo, candidates


def physical(vmcoreinfo: dict[str, str], symbol: str) -> int:
    """``SYMBOL(symbol) - __START_KERNEL_map + phys_base`` (phys_base signed decimal)."""
    vaddr = int(vmcoreinfo[f"SYMBOL({symbol})"], 16)
    return (vaddr - START_KERNEL_MAP + int(vmcoreinfo["NUMBER(phys_base)"])) % (1 << 64)


def test_live_kernel_equals_qemu_and_the_dump_of_the_same_stop(
    qemu_guest: Callable[[str], QemuGuest], tmp_path: Path
) -> None:
    guest = qemu_guest("kaslr-pti")
    guest.stop()
    dump = tmp_path / "stop.elf"
    guest.dump_elf(dump)
    vmcoreinfo, candidates = dump_facts(dump)
    root = physical(vmcoreinfo, "init_top_pgt")
    stext = physical(vmcoreinfo, "_stext")
    kernels_copy = [c for c in candidates if c >= stext]
    assert len(kernels_copy) == 1, [hex(c) for c in candidates]
    cr3 = guest.cr3()

    commands = [
        "pt-walk --kernel --format qemu-tlb",
        "pt-walk --kernel",
        "pt-walk",
        "pt-heap --memmap e820",
        "pt-info",
    ]
    in_gdb = gdb(
        "set pagination off",
        f"target remote 127.0.0.1:{guest.gdb_port}",
        *marked(*commands),
        "disconnect",  # the VM stays stopped for LLDB
        timeout=300,
    )
    assert "Traceback" not in in_gdb.stderr, in_gdb.stderr[-3000:]
    gdb_out = sections(in_gdb.stdout)
    assert len(gdb_out) == len(commands), in_gdb.stderr[-3000:]
    kernel_tlb, kernel_walk, walk, heap, info = gdb_out

    # The dump of the same stop, read by gdbext's dump backend.
    assert kernel_tlb == cli_output("walk", str(dump), "--kernel", "--format", "qemu-tlb")
    assert kernel_walk == cli_output("walk", str(dump), "--kernel")
    assert walk == cli_output("walk", str(dump))
    assert walk.startswith("# Linux x86-64 4-level layout (")  # --labels auto: labels on
    assert heap == cli_output("heap", str(dump), "--memmap", "e820")
    assert f"boot_params at 0x{kernels_copy[0]:x} " in heap
    assert f"kernel root: 0x{root:x} " in info
    assert f"OSRELEASE:   {vmcoreinfo['OSRELEASE']}\n" in info

    # LLDB at the same stop; then QEMU's view with CR3 set to the kernel root.
    lldb = lldbrun.run(
        [
            *commands,
            f"register write cr3 0x{root:x}",
            "process plugin packet monitor info tlb",
            f"register write cr3 0x{cr3:x}",
        ],
        port=guest.gdb_port,
    )
    assert all(r.ok for r in lldb.results), lldb.errors()
    outputs = lldb.outputs()
    assert outputs[:4] == gdb_out[:4]
    assert re.sub(r"(?m)^(backend|connection|vCPUs): .*$", "", outputs[4]) == re.sub(
        r"(?m)^(backend|connection|vCPUs): .*$", "", info
    )
    qemu_kernel_tlb = TLB_LINE.findall(outputs[6].replace("\r", ""))
    assert tlb_lines(kernel_tlb) == qemu_kernel_tlb
    assert len(qemu_kernel_tlb) > 1000
    assert lldb.report["detached"]
