"""``read``: memory as bytes, checked against bytes the test put there itself.

A simulated machine maps, in one run of virtual addresses, a 2 MiB page, a page table of 4 KiB
pages (one of them scattered, one left unmapped) and a 1 GiB page, over frames filled with
random bytes; its RAM is written as a QEMU ELF core and as kdump files (some frames left out).
What a read must give is computed from the test's own list of mappings and the simulator's
memory, never from gdbext's translation. The committed kernel dumps are read where QEMU's own
``info registers`` and ``info tlb`` say which bytes are where, and compared with the ELF file
read with pyelftools.
"""

from __future__ import annotations

import io
import json
import random
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.dumps import elf_read
from support.goldens import info_tlb, registers

from gdbext import cli
from gdbext.cpu import CpuState
from gdbext.flags import PageTableFlags
from gdbext.plugin.host import Host
from gdbext.x86.paging import X86PageTable
from gdbext_sim.elfcore import write_qemu_elf_core
from gdbext_sim.kdump import write_kdump_from_memory
from gdbext_sim.memory import SparsePhysMemory, TopDownFrameAllocator

CR0, CR4, EFER = 0x80050033, 0x6A0 | 0x20, 0xD01
K4, M2, G1 = 1 << 12, 1 << 21, 1 << 30
#: The 1 GiB page starts here; the 4 KiB pages' table before it, the 2 MiB page before that.
BIG = 0xFFFF900040000000
SMALL = BIG - M2
HUGE_2M = SMALL - M2
#: The 4 KiB page left unmapped, and the one whose frame is out of line.
HOLE, SCATTERED = 2, 1


def small_frame(i: int) -> int:
    return 0x5000 if i == SCATTERED else 0x1000000 + i * K4


#: The test's own page list: (vaddr, paddr, size).
PAGES = [
    (HUGE_2M, 0x600000, M2),
    *((SMALL + i * K4, small_frame(i), K4) for i in range(512) if i != HOLE),
    (BIG, 0x40000000, G1),
]


@dataclass(frozen=True)
class Machine:
    memory: SparsePhysMemory
    root: int

    def expected(self, vaddr: int, size: int) -> list[tuple[int, bytes | None]]:
        """``(vaddr, bytes)`` per page piece of ``[vaddr, vaddr + size)``, ``None`` where no
        page of :data:`PAGES` maps it."""
        out: list[tuple[int, bytes | None]] = []
        end = vaddr + size
        while vaddr < end:
            page = next(((va, pa, n) for va, pa, n in PAGES if va <= vaddr < va + n), None)
            stop = min(end, (vaddr | (K4 - 1)) + 1)
            if page is None:
                out.append((vaddr, None))
            else:
                va, pa, _ = page
                out.append((vaddr, self.memory.read(pa + vaddr - va, stop - vaddr)))
            vaddr = stop
        return out


@pytest.fixture(scope="module")
def machine() -> Machine:
    mem = SparsePhysMemory(2 << 30)
    alloc = TopDownFrameAllocator(mem)
    root = alloc.allocate_frame()
    assert root is not None
    pt = X86PageTable(mem, root, 4, allow_writes=True)
    flags = PageTableFlags(2 | (1 << 63))
    for va, pa, size in PAGES:
        pt.map_range(va, pa, size, size, flags, alloc)
    rng = random.Random(13)
    filled = [0x600000, 0x7FE000, 0x7FF000, 0x40000000, 0x40001000, 0x7FFFF000 - 0x40000000]
    filled += [small_frame(i) for i in range(512) if i != HOLE]
    for frame in filled:
        mem.write(frame, rng.randbytes(K4))
    return Machine(mem, root)


def cpus(machine: Machine) -> list[CpuState]:
    return [CpuState(cr0=CR0, cr3=machine.root, cr4=CR4, efer=EFER)]


@pytest.fixture(scope="module")
def core(machine: Machine, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("read") / "machine.elf"
    write_qemu_elf_core(path, machine.memory, cpus(machine))
    return path


#: Frames a kdump leaves out: the 4 KiB page after the hole, one in the 2 MiB page.
EXCLUDED = (small_frame(3), 0x700000)


@pytest.fixture(scope="module")
def kdump(machine: Machine, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("read") / "machine.kdump"
    write_kdump_from_memory(
        path, machine.memory, cpus(machine), excluded=[f >> 12 for f in EXCLUDED]
    )
    return path


def run(argv: Sequence[str]) -> tuple[int, str]:
    out = io.StringIO()
    return cli.run(list(argv), Host.create(), out), out.getvalue()


def raw(argv: Sequence[str], tmp_path: Path) -> tuple[int, bytes]:
    path = tmp_path / "out.bin"
    status, text = run([*argv, "--format", "raw", "-o", str(path)])
    assert text == ""
    return status, path.read_bytes()


def hexdump(address: int, data: bytes) -> list[str]:
    """``hexdump -C``'s lines for ``data`` at ``address``, written out here."""
    lines = []
    for i in range(0, len(data), 16):
        row = data[i : i + 16]
        left = " ".join(f"{b:02x}" for b in row[:8])
        right = " ".join(f"{b:02x}" for b in row[8:])
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in row)
        lines.append(f"{address + i:016x}  {left:<23}  {right:<23}  |{text}|")
    return lines


READS = {
    "2M to 4K pages": (HUGE_2M + M2 - 2 * K4, 4 * K4),
    "4K to 1G page": (BIG - 2 * K4, 4 * K4),
    "every page size": (HUGE_2M + M2 - K4, M2 + 2 * K4),
    "unaligned, within a 4K page": (SMALL + 0x1234, 0x321),
}


@pytest.mark.parametrize("name", READS)
def test_virtual_reads_across_page_sizes_equal_the_mapped_frames(
    machine: Machine, core: Path, tmp_path: Path, name: str
) -> None:
    vaddr, size = READS[name]
    pieces = machine.expected(vaddr, size)
    want = b"".join(b"\xcc" * K4 if data is None else data for _, data in pieces)
    assert any(want) and len(want) == size
    if any(data is None for _, data in pieces):  # the hole: filled only when asked
        argv = ["read", str(core), hex(vaddr), hex(size), "--fill", "0xcc"]
        assert raw(argv, tmp_path) == (1, want)
        return
    assert raw(["read", str(core), hex(vaddr), hex(size)], tmp_path) == (0, want)
    status, text = run(["read", str(core), hex(vaddr), hex(size)])
    assert status == 0 and text.splitlines() == hexdump(vaddr, want)


def test_the_gap_of_an_unmapped_page(machine: Machine, core: Path, tmp_path: Path) -> None:
    vaddr = SMALL + K4
    pieces = machine.expected(vaddr, 3 * K4)
    assert [data is None for _, data in pieces] == [False, True, False]
    status, text = run(["read", str(core), hex(vaddr), "12K"])
    hole = SMALL + HOLE * K4
    gap = f"{hole:016x}-{hole + K4:016x}  ** 4K not mapped: PT entry not present **"
    first, last = pieces[0][1], pieces[2][1]
    assert first is not None and last is not None
    assert status == 1
    assert text.splitlines() == [*hexdump(vaddr, first), gap, *hexdump(hole + K4, last)]
    # u64: one value a line, the same gap line.
    status, text = run(["read", str(core), hex(vaddr), "12K", "--format", "u64"])
    values = [
        f"{vaddr + i:016x}  0x{int.from_bytes(first[i : i + 8], 'little'):016x}"
        for i in range(0, K4, 8)
    ]
    assert status == 1 and text.splitlines()[: 512 + 1] == [*values, gap]
    # Raw output refuses, and writes nothing; --fill writes the byte asked for.
    out = tmp_path / "refused.bin"
    with pytest.raises(Exception, match=r"raw output stops at a gap: .* not mapped") as err:
        run(["read", str(core), hex(vaddr), "12K", "--format", "raw", "-o", str(out)])
    assert getattr(err.value, "exit_status", None) == 1 and not out.exists()
    status, data = raw(["read", str(core), hex(vaddr), "12K", "--fill", "0xcc"], tmp_path)
    assert (status, data) == (1, first + b"\xcc" * K4 + last)


def test_not_captured_pages_of_a_kdump_are_gaps(machine: Machine, kdump: Path, core: Path) -> None:
    vaddr, size = READS["every page size"]
    status, text = run(["read", str(kdump), hex(vaddr), hex(size), "--format", "json"])
    assert status == 1
    records = json.loads(text)
    data = b"".join(bytes.fromhex(r["data"]) for r in records if "data" in r)
    assert len(data) == size - 2 * K4
    gaps = [line.strip(",") for line in text.splitlines() if '"gap"' in line]
    excluded_va = SMALL + 3 * K4
    assert gaps == [
        f'{{"address": "0x{SMALL + HOLE * K4:x}", "size": 4096, "gap": "not mapped", '
        '"reason": "PT entry not present"}',
        f'{{"address": "0x{excluded_va:x}", "size": 4096, "gap": "not captured", '
        f'"reason": "not in the dump", "paddr": "0x{EXCLUDED[0]:x}"}}',
    ]
    # Everything else is the ELF core's read: the same bytes.
    status, full = run(["read", str(core), hex(vaddr), hex(size), "--format", "json"])
    assert status == 1
    keep = [line for line in full.splitlines() if f"0x{excluded_va:x}" not in line]
    assert [line for line in text.splitlines() if '"gap": "not captured"' not in line] == keep
    # The 2 MiB page's frame left out, read physically.
    status, text = run(["read", str(kdump), "--phys", "0x6ff000", "12K"])
    assert status == 1
    assert f"{0x700000:016x}-{0x701000:016x}  ** 4K not captured: not in the dump **" in text


def test_physical_reads(machine: Machine, core: Path, tmp_path: Path) -> None:
    want = machine.memory.read(0x7FE000, 2 * K4) + machine.memory.read(0x800000, K4)
    assert raw(["read", str(core), "--phys", "0x7fe000", "12K"], tmp_path) == (0, want)
    # Past the end of RAM: a gap, not zeros.
    end = 2 << 30
    status, text = run(["read", str(core), "--phys", hex(end - 16), "32", "--format", "u32"])
    tail = machine.memory.read(end - 16, 16)
    assert status == 1
    assert text.splitlines() == [
        *(
            f"{end - 16 + i:016x}  0x{int.from_bytes(tail[i : i + 4], 'little'):08x}"
            for i in range(0, 16, 4)
        ),
        f"{end:016x}-{end + 16:016x}  ** 16B not captured: not in the dump **",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["0x1000", "0"], "SIZE must be 1 or more bytes"),
        (["0xfffffffffffff000", "8K"], "goes past the end of the address space"),
        (["0x7ffffffff000", "8K"], "crosses the non-canonical hole 0x800000000000-"),
        (["0x800000000000", "4K"], "0x800000000000 is not canonical for 48-bit"),
        (["0x1000", "65M"], "SIZE 65M is over --max-size 64M"),
        (["0x1000", "4Q"], "argument SIZE: not a size: 4Q"),
        (["0x1000"], "give ADDR and SIZE"),
        (["0x1000", "16", "--fill", "1"], "--fill is for --format raw"),
        (["0x1000", "16", "--format", "raw", "--fill", "256"], "--fill takes a byte"),
        (["--phys", "--cr3", "0x1000", "0x1000", "16"], "--phys reads physical memory"),
        (["0x1000", "16", "--format", "raw"], "--format raw writes bytes: give -o FILE"),
    ],
)
def test_bad_input_is_one_line(core: Path, argv: list[str], message: str) -> None:
    with pytest.raises(Exception, match=re.escape(message)) as err:
        run(["read", str(core), *argv])
    assert getattr(err.value, "exit_status", None) == 2 and "\n" not in str(err.value)


def test_max_size_raised_and_sizes_with_units(machine: Machine, core: Path, tmp_path: Path) -> None:
    status, data = raw(["read", str(core), "--phys", "0x40000000", "65M", "--max-size", "0"],
                       tmp_path)  # fmt: skip
    assert status == 0 and len(data) == 65 << 20
    assert data[: 2 * K4] == machine.memory.read(0x40000000, 2 * K4)
    for size in ("8KiB", "8k", "0x2000", "8192"):
        assert raw(["read", str(core), "--phys", "0x40000000", size], tmp_path)[1] == data[:8192]


# --- The committed kernel dumps -----------------------------------------------------------------


def qemu_virtual(name: str, paddr: int) -> int:
    """A virtual address QEMU's ``info tlb`` maps to ``paddr`` (4 KiB leaves, or the start
    of a large one whose frame is ``paddr`` rounded down to 2 MiB)."""
    for va, (pa, flags) in info_tlb(f"{name}.info-tlb").items():
        large = flags[3] == "P"
        if pa == paddr or (large and pa == paddr & ~(M2 - 1) and not va & (M2 - 1)):
            return va + paddr - pa
    raise AssertionError(f"{name}: nothing maps 0x{paddr:x}")


@pytest.mark.parametrize("name", ["4level", "kaslr-pti", "la57"])
def test_a_kernel_dump_read_where_qemu_says(
    kernel_dump: Callable[[str], Path], tmp_path: Path, name: str
) -> None:
    """CPU 0's root table, read through the direct map where QEMU's ``info tlb`` maps it, and
    physically, is the ELF file's bytes at that physical address."""
    dump = kernel_dump(name)
    cr3 = registers(name)["CR3"] & ~0xFFF
    want = elf_read(dump, cr3, K4)
    assert any(want)
    vaddr = qemu_virtual(name, cr3)
    assert raw(["read", str(dump), hex(vaddr), "4K"], tmp_path) == (0, want)
    assert raw(["read", str(dump), "--phys", hex(cr3), "4K"], tmp_path) == (0, want)


@pytest.mark.skipif(shutil.which("hexdump") is None, reason="no hexdump")
def test_hexdump_is_hexdump_c(core: Path, tmp_path: Path) -> None:
    """The lines are util-linux ``hexdump -C -v``'s for the same bytes, offsets aside."""
    vaddr, size = READS["2M to 4K pages"]
    path = tmp_path / "bytes.bin"
    run(["read", str(core), hex(vaddr), hex(size - 11), "--format", "raw", "-o", str(path)])
    theirs = subprocess.run(
        ["hexdump", "-C", "-v", str(path)], capture_output=True, text=True, check=True
    ).stdout.splitlines()[:-1]  # the last line is the length
    status, ours = run(["read", str(core), hex(vaddr), hex(size - 11)])
    assert status == 0 and len(ours.splitlines()) == len(theirs) == size // 16
    for mine, line in zip(ours.splitlines(), theirs, strict=True):
        assert mine[16:] == line[8:]


class Terminal(io.TextIOWrapper):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stream", [io.TextIOWrapper, Terminal])
def test_raw_to_standard_output(machine: Machine, core: Path, stream: type) -> None:
    """Raw bytes go to standard output when it is not a terminal, or with ``-o -``."""
    want = machine.memory.read(0x600000, 64)
    for insist in ([], ["-o", "-"]):
        out = stream(io.BytesIO())
        argv = ["read", str(core), "--phys", "0x600000", "64", "--format", "raw", *insist]
        if stream is Terminal and not insist:
            with pytest.raises(Exception, match="not writing raw bytes to a terminal"):
                cli.run(argv, Host.create(), out)
            continue
        assert cli.run(argv, Host.create(), out) == 0
        out.flush()
        assert out.buffer.getvalue() == want


def test_an_unmapped_region_is_one_gap_line_per_entry(core: Path) -> None:
    """Not mapped at the PML4: the whole read is one line (no line per page); a region whose
    PD entries are missing ends at the first mapped page."""
    status, text = run(["read", str(core), "0x0", "64M"])
    assert (status, text) == (
        1,
        f"{0:016x}-{64 << 20:016x}  ** 64M not mapped: PML4 entry not present **\n",
    )
    start = HUGE_2M - 3 * M2
    status, text = run(["read", str(core), hex(start), hex(3 * M2 + 16), "--format", "u64"])
    assert status == 1 and text.splitlines()[0] == (
        f"{start:016x}-{HUGE_2M:016x}  ** 6M not mapped: PD entry not present **"
    )
    assert len(text.splitlines()) == 3


def test_a_page_table_not_captured_is_a_gap_of_its_span(machine: Machine, tmp_path: Path) -> None:
    """A kdump without the 4 KiB pages' table: their 2 MiB are unknown, one gap naming the
    table (found here by reading the entries with the test's own arithmetic)."""
    table = machine.root
    for level in (4, 3, 2):
        index = (SMALL >> (12 + 9 * (level - 1))) & 0x1FF
        entry = int.from_bytes(machine.memory.read(table + 8 * index, 8), "little")
        table = entry & 0x000F_FFFF_FFFF_F000
    path = tmp_path / "no-table.kdump"
    write_kdump_from_memory(path, machine.memory, cpus(machine), excluded=[table >> 12])
    status, text = run(["read", str(path), hex(SMALL - 16), hex(M2 + 32)])
    lines = text.splitlines()
    assert status == 1 and len(lines) == 3
    assert lines[1] == (
        f"{SMALL:016x}-{BIG:016x}  ** 2M not captured: PT table 0x{table:x} not in the dump **"
    )
    assert lines[0] == hexdump(SMALL - 16, machine.memory.read(0x600000 + M2 - 16, 16))[0]
