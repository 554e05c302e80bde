"""Linux's e820 map from ``struct boot_params`` in memory, and ``heap --memmap e820``.

boot_params are hand-built here at the reference offsets (``e820_entries`` u8 at 0x1e8, the
setup header magic ``HdrS`` at 0x202, ``e820_table`` at 0x2d0 of packed 20-byte
``{u64 addr, u64 size, u32 type}`` entries), written into simulator memory. The real-kernel
fixtures are checked against the kernel's own boot log (its ``BIOS-e820:`` lines) and QEMU's
``gva2gpa`` of the direct map.
"""

from __future__ import annotations

import io
import json
import re
import struct
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from support.e820 import QEMU_E820, Entry

from gdbext import cli
from gdbext.addr import AddrRange
from gdbext.errors import InputError, NotCapturedError, NotFoundError, UsageError
from gdbext.formats.bootparams import BOOT_PARAMS, E820_ENTRY
from gdbext.frontend import commands, heap
from gdbext.linux.e820 import (
    SCAN_CHUNK,
    BootParams,
    choose_boot_params,
    e820_kind,
    parse_boot_params,
    read_boot_params,
    scan_boot_params,
)
from gdbext.plugin.facts import KernelFacts, VmcoreFacts
from gdbext.plugin.hookspecs import hookimpl
from gdbext.plugin.host import Host
from gdbext.plugin.target import BackendInfo, Target
from gdbext_sim.bootparams import boot_params
from gdbext_sim.memory import SparsePhysMemory
from gdbext_sim.scenario import SimMachine, build_machine

KERNELS = Path(__file__).resolve().parents[2] / "fixtures" / "kernels"


def test_boot_params_declaration_has_the_kernels_offsets() -> None:
    """The one declaration reader and writer share, against ``bootparam.h``'s offsets (taken
    from the kernel's header by hand, not from the declaration)."""
    assert BOOT_PARAMS.size == 0x1000
    assert [BOOT_PARAMS.offset(f) for f in ("e820_entries", "boot_flag", "header", "version")] == [
        0x1E8, 0x1FE, 0x202, 0x206,
    ]  # fmt: skip
    assert BOOT_PARAMS.offset("e820_table") == 0x2D0
    assert BOOT_PARAMS.end("e820_table") == 0x2D0 + 128 * 20
    assert [E820_ENTRY.offset(f) for f in ("addr", "size", "type")] == [0, 8, 16]
    blob = boot_params([(0x100000, 0x7EE0000, 1)])
    assert blob[0x1E8] == 1 and blob[0x1FE:0x208] == b"\x55\xaa\0\0HdrS\x0f\x02"
    assert struct.unpack_from("<QQI", blob, 0x2D0) == (0x100000, 0x7EE0000, 1)


def memory_with(copies: dict[int, bytes], ram: int = 64 << 20) -> SparsePhysMemory:
    mem = SparsePhysMemory(ram)
    for paddr, blob in copies.items():
        mem.write(paddr, blob)
    return mem


# --- Parsing and validation --------------------------------------------------------------------


def test_parse_reads_every_entry_and_converts_types() -> None:
    entries = [*QEMU_E820, (0x100000000, 0x1000, 3), (0x100001000, 0x1000, 4),
               (0x100002000, 0x1000, 5), (0x100003000, 0x1000, 7), (0x100004000, 0x1000, 12),
               (0x100005000, 0x1000, 99)]  # fmt: skip
    bp = parse_boot_params(boot_params(entries), 0x7000)
    assert bp is not None and bp.paddr == 0x7000 and bp.version == 0x20F and bp.boot_flag
    assert [(e.addr, e.size, e.type) for e in bp.entries] == entries
    assert [(r.start, r.end, r.kind) for r in bp.regions()] == [
        (0x0, 0x9FC00, "Usable"),
        (0x9FC00, 0xA0000, "Reserved"),
        (0xF0000, 0x100000, "Reserved"),
        (0x100000, 0x7FE0000, "Usable"),
        (0x7FE0000, 0x8000000, "Reserved"),
        (0xFFFC0000, 0x100000000, "Reserved"),
        (0x100000000, 0x100001000, "AcpiReclaimable"),
        (0x100001000, 0x100002000, "AcpiNvs"),
        (0x100002000, 0x100003000, "BadMemory"),
        (0x100003000, 0x100004000, "Pmem"),
        (0x100004000, 0x100005000, "Pram"),
        (0x100005000, 0x100006000, "Unknown(99)"),
    ]
    assert e820_kind(0xEFFFFFFF) == "SoftReserved"


def test_only_e820_entries_entries_are_read() -> None:
    blob = bytearray(boot_params(QEMU_E820, count=2))
    bp = parse_boot_params(bytes(blob), 0)
    assert bp is not None and len(bp.entries) == 2
    full = boot_params([(0x1000 * i, 0x1000, 1) for i in range(128)])
    bp = parse_boot_params(full, 0)
    assert bp is not None and len(bp.entries) == 128


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (boot_params(QEMU_E820, magic=b"HdrT"), "magic"),
        (boot_params(QEMU_E820, count=0), "e820_entries (+0x1e8) is 0"),
        (boot_params([(0x1000 * i, 0x1000, 1) for i in range(128)], count=129), "is 129"),
        (boot_params([(0x0, 0x0, 1)]), "entry 0"),
        (boot_params([(0x100000, 0x1000, 1), (0x0, 0x1000, 0)]), "entry 1"),
        (boot_params([(0xFFFFFFFFFFFFF000, 0x2000, 1)]), "entry 0"),
        (boot_params([(0x0, 0x1000, 2)]), "no RAM"),
        (boot_params(QEMU_E820)[:4095], "only 4095 bytes"),
    ],
    ids=["magic", "zero", "129", "size0", "type0", "overflow", "no-ram", "short"],
)
def test_invalid_boot_params(blob: bytes, reason: str) -> None:
    assert parse_boot_params(blob, 0x5000) is None
    if len(blob) < 4096:
        return  # in memory the page goes on: only the parser sees a short read
    mem = SparsePhysMemory(1 << 20)
    mem.write(0x5000, blob)
    with pytest.raises(InputError, match="no Linux boot_params at physical 0x5000") as info:
        read_boot_params(mem, 0x5000)
    assert reason in str(info.value)


# --- The scan -----------------------------------------------------------------------------------


def test_scan_finds_aligned_copies_anywhere_and_skips_misaligned() -> None:
    copies = {
        0x90000: boot_params(QEMU_E820[:4]),  # a bootloader's zero page, page-aligned
        0x1234880: boot_params(QEMU_E820),  # the kernel's copy in its .bss: 8-byte aligned
        SCAN_CHUNK * 3 - 0x100: boot_params(QEMU_E820[:3]),  # straddles a chunk boundary
        0x2000004: boot_params(QEMU_E820),  # not 8-byte aligned: no boot_params there
        0x3000000: boot_params(QEMU_E820, count=0),  # magic, but no e820 map
    }
    found, scanned = scan_boot_params(memory_with(copies), [AddrRange(0, 64 << 20)])
    assert scanned == 64 << 20
    assert sorted(bp.paddr for bp in found) == [0x90000, SCAN_CHUNK * 3 - 0x100, 0x1234880]
    by_addr = {bp.paddr: len(bp.entries) for bp in found}
    assert by_addr == {0x90000: 4, SCAN_CHUNK * 3 - 0x100: 3, 0x1234880: 6}


def test_scan_covers_only_ram_ranges() -> None:
    mem = SparsePhysMemory(16 << 20, ram=[AddrRange(0, 0xA0000), AddrRange(0x100000, 16 << 20)])
    mem.write(0x9F000, boot_params(QEMU_E820))
    mem.write(0x800000, boot_params(QEMU_E820))
    found, scanned = scan_boot_params(mem, mem.ram_ranges)
    assert [bp.paddr for bp in found] == [0x9F000, 0x800000]
    assert scanned == 0xA0000 + (15 << 20)
    found, _ = scan_boot_params(mem, [AddrRange(0x100000, 16 << 20)])
    assert [bp.paddr for bp in found] == [0x800000]


class HolesMemory:
    """A dump-like mapper: some frames are in RAM but not captured."""

    read_only = True

    def __init__(self, mem: SparsePhysMemory, missing: set[int]) -> None:
        self.mem = mem
        self.missing = missing
        self.reads = 0

    def read(self, paddr: int, size: int) -> bytes:
        self.reads += 1
        for page in range(paddr & ~0xFFF, paddr + size, 0x1000):
            if page in self.missing:
                raise NotCapturedError(paddr, size)
        return self.mem.read(paddr, size)

    def write(self, paddr: int, data: bytes) -> None:
        raise AssertionError("read-only")

    def is_captured(self, paddr: int) -> bool:
        return paddr & ~0xFFF not in self.missing


def test_scan_skips_pages_not_captured() -> None:
    mem = memory_with({0x205000: boot_params(QEMU_E820), 0x207000: boot_params(QEMU_E820)})
    holes = HolesMemory(mem, {0x200000, 0x207000})
    found, scanned = scan_boot_params(holes, [AddrRange(0, 4 << 20)])
    assert [bp.paddr for bp in found] == [0x205000]
    assert scanned == (4 << 20) - 2 * 0x1000
    # One chunk read per MiB, page reads only in the chunk with holes.
    assert holes.reads == 4 + 256


def test_choose_prefers_the_kernels_copy_then_the_highest() -> None:
    low = BootParams(0x90000, (), 0x20F, True)
    kernel = BootParams(0x1234880, (), 0x20F, True)
    high = BootParams(0x3F00000, (), 0x20F, True)
    assert choose_boot_params([low, kernel, high], [AddrRange(0x1000000, 0x2000000)]) is kernel
    assert choose_boot_params([low, kernel, high]) is high
    assert choose_boot_params([low, kernel], [AddrRange(0x5000000, 0x6000000)]) is kernel
    with pytest.raises(NotFoundError, match=r"in the 64 MiB of readable memory.*--at ADDR"):
        choose_boot_params([], scanned=64 << 20)


# --- heap --memmap e820 ------------------------------------------------------------------------

DIRECT = 0xFFFF888000000000
KERNEL_COPY = 0x1234880
LOW_COPY = 0x90000
#: The kernel's copy: RAM up to 0x3e00000. The bootloader's copy (below) says otherwise.
KERNEL_E820: list[Entry] = [(0x0, 0x9FC00, 1), (0x9FC00, 0x400, 2), (0x100000, 0x3D00000, 1),
                            (0x3E00000, 0x200000, 2)]  # fmt: skip
LOW_E820: list[Entry] = [(0x0, 0x9FC00, 1), (0x100000, 0x100000, 1)]


def linux_like(extra: dict[str, Any] | None = None, copies: bool = True) -> SimMachine:
    doc: dict[str, Any] = {
        "levels": 4,
        "ram": "64M",
        "mappings": [
            {"vaddr": hex(DIRECT), "paddr": "0x0", "size": "2M", "count": 32,
             "flags": ["WRITABLE", "NO_EXECUTE", "GLOBAL"]},
            {"vaddr": "0xffffffff81000000", "paddr": "0x1000000", "size": "2M", "count": 2,
             "flags": ["WRITABLE", "GLOBAL"]},
            {"vaddr": "0xffffc90000000000", "paddr": "0x2000000", "size": "4K", "count": 4,
             "flags": ["WRITABLE", "NO_EXECUTE"]},
        ],
        **(extra or {}),
    }  # fmt: skip
    m = build_machine(doc, "<linux-like>")
    if copies:
        m.memory.write(LOW_COPY, boot_params(LOW_E820))
        m.memory.write(KERNEL_COPY, boot_params(KERNEL_E820))
    return m


class Prepared:
    def __init__(self, build: Callable[[], Target]) -> None:
        self.build = build

    @hookimpl
    def gdbext_backends(self) -> Sequence[BackendInfo]:
        return [BackendInfo("prepared", "built by the test", lambda _r: self.build())]


def heap_cli(build: Callable[[], Target], *args: str) -> tuple[int, str]:
    host = Host.create(extra_plugins=[Prepared(build)])
    out = io.StringIO()
    status = cli.run(["heap", "--backend", "prepared", *args], host, out)
    return status, out.getvalue()


def test_heap_e820_uses_the_kernels_copy_and_the_auto_offset() -> None:
    status, out = heap_cli(lambda: linux_like().to_target(), "--memmap", "e820", "--json")
    assert status == 0
    # Largest RAM entry of the kernel's copy: 0x100000-0x3e00000; direct map at DIRECT.
    assert json.loads(out) == {"start": hex(DIRECT + 0x100000), "end": hex(DIRECT + 0x3E00000)}
    status, out = heap_cli(lambda: linux_like().to_target(), "--memmap", "e820")
    assert status == 0
    assert out.startswith(f"heap: 0x{DIRECT + 0x100000:016x}-0x{DIRECT + 0x3E00000:016x} ")
    assert f"boot_params at 0x{KERNEL_COPY:x} (the kernel's copy, in its image)" in out
    assert "offset: auto, the direct map in the page table at 0x" in out


def test_heap_e820_at_and_explicit_offset() -> None:
    status, out = heap_cli(
        lambda: linux_like().to_target(),
        "--memmap", "e820", "--at", hex(LOW_COPY), "--phys-offset", "0xffff800000000000",
    )  # fmt: skip
    assert status == 0
    assert out.startswith("heap: 0xffff800000100000-0xffff800000200000 ")
    assert f"boot_params at 0x{LOW_COPY:x}; " not in out and "auto" not in out
    status, out = heap_cli(
        lambda: linux_like().to_target(), "--memmap", "e820", "--phys-offset", "auto", "--json"
    )
    assert json.loads(out)["start"] == hex(DIRECT + 0x100000)


def test_heap_e820_without_the_kernel_mapping_takes_the_highest_copy() -> None:
    def build(facts: KernelFacts) -> Callable[[], Target]:
        def make() -> Target:
            m = linux_like()
            m.memory.write(0x3000000, boot_params(LOW_E820))  # the highest copy
            target = m.to_target()
            target.facts = facts
            return target

        return make

    # A root with nothing mapped (the frame at 0 is all zeros): no kernel image to go by.
    status, out = heap_cli(
        build(KernelFacts()), "--memmap", "e820", "--phys-offset", "0", "--cr3", "0"
    )
    assert status == 0 and "boot_params at 0x3000000 (the highest of 3 found)" in out
    assert out.startswith("heap: 0x0000000000100000-0x0000000000200000 ")
    # A kernel-root hint outside RAM: the same.
    status, out = heap_cli(
        build(KernelFacts(vmcoreinfo_source=VmcoreFacts({}, kernel_root=0xDEAD000))),
        "--memmap",
        "e820",
        "--phys-offset",
        "0",
    )
    assert status == 0 and "boot_params at 0x3000000 (the highest of 3 found)" in out
    # CPU 0's tables map the kernel image over the kernel's copy.
    status, out = heap_cli(build(KernelFacts()), "--memmap", "e820", "--phys-offset", "0")
    assert status == 0 and f"at 0x{KERNEL_COPY:x} (the kernel's copy, in its image)" in out


def test_heap_e820_nothing_found_and_unknown_ram(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(NotFoundError, match="--at ADDR"):
        heap_cli(lambda: linux_like(copies=False).to_target(), "--memmap", "e820")

    def no_ram() -> Target:
        target = linux_like().to_target()
        target.ram = None
        return target

    with pytest.raises(UsageError, match="does not say where its RAM is"):
        heap_cli(no_ram, "--memmap", "e820")
    status, _ = heap_cli(no_ram, "--memmap", "e820", "--at", hex(KERNEL_COPY), "--json")
    assert status == 0


def test_auto_offset_when_the_memory_map_has_none(tmp_path: Path) -> None:
    regions = tmp_path / "regions.json"
    regions.write_text('[{"start": "0x100000", "end": "0x800000", "kind": "Usable"}]')
    status, out = heap_cli(lambda: linux_like().to_target(), "--memmap", "json", str(regions))
    assert status == 0
    assert out.startswith(f"heap: 0x{DIRECT + 0x100000:016x}-0x{DIRECT + 0x800000:016x} ")
    assert f"memory map {regions}; offset: auto" in out
    # A BootInfo v0.11 without physical_memory_offset (map_physical_memory off): auto too.
    extra = {"bootinfo": {"version": "0.11", "at": "0x10000", "physical_memory_offset": None,
                          "regions": [{"start": "0x100000", "end": "0x400000"}]}}  # fmt: skip
    status, out = heap_cli(lambda: linux_like(extra).to_target(), "--memmap", "bootinfo")
    assert status == 0 and out.startswith(f"heap: 0x{DIRECT + 0x100000:016x}-")
    assert "BootInfo v0.11 at 0x10000; offset: auto" in out


def test_auto_offset_with_nothing_in_the_higher_half() -> None:
    def build() -> Target:
        doc = {"ram": "16M", "mappings": [{"vaddr": "0x400000", "paddr": "0x0", "size": "4K"}]}
        m = build_machine(doc)
        m.memory.write(0x90000, boot_params(LOW_E820))
        return m.to_target()

    with pytest.raises(NotFoundError, match=r"cannot find the direct map.*--phys-offset"):
        heap_cli(build, "--memmap", "e820")


# --- The real kernels ---------------------------------------------------------------------------


def serial_e820(name: str) -> list[tuple[int, int, str]]:
    text = (KERNELS / f"{name}.serial.log").read_text()
    kinds = {"usable": "Usable", "reserved": "Reserved", "ACPI data": "AcpiReclaimable",
             "ACPI NVS": "AcpiNvs", "unusable": "BadMemory"}  # fmt: skip
    return [
        (int(a, 16), int(b, 16) + 1, kinds[kind])
        for a, b, kind in re.findall(r"BIOS-e820: \[mem 0x([0-9a-f]+)-0x([0-9a-f]+)\] (.+)", text)
    ]


def direct_map_from_gva2gpa(name: str) -> int:
    text = (KERNELS / f"{name}.gva2gpa.txt").read_text()
    [va] = [
        int(v, 16)
        for v, p in re.findall(r"^([0-9a-f]{16}) ([0-9a-f]{16})$", text, re.M)
        if int(p, 16) == 0 and int(v, 16) >= 0xFF00000000000000
    ]
    return va


@pytest.mark.parametrize("name", ["4level", "kaslr-pti", "la57"])
def test_real_kernel_e820_and_direct_map(name: str, kernel_dump: Callable[[str], Path]) -> None:
    if not (KERNELS / f"{name}.elf.xz").exists():
        pytest.skip("fixture not committed")
    from gdbext_dump.dump import open_dump

    target = open_dump(str(kernel_dump(name)))
    roots = [commands.RootOptions()]
    if name == "kaslr-pti":
        # The PTI user half maps no direct map: the kernel half of the pair is searched.
        roots.append(commands.RootOptions(user_pgd=True))
    try:
        results = [heap.heap(target, heap.HeapOptions(memmap="e820", root=r)) for r in roots]
    finally:
        if target.close is not None:
            target.close()
    for result in results:
        assert [(r.start, r.end, r.kind) for r in result.regions] == serial_e820(name)
        base = direct_map_from_gva2gpa(name)
        assert result.physical_memory_offset == base
        usable = max((r for r in serial_e820(name) if r[2] == "Usable"), key=lambda r: r[1] - r[0])
        assert (result.range.start, result.range.end) == (base + usable[0], base + usable[1])
        assert "the kernel's copy" in result.source and "offset: auto" in result.source
