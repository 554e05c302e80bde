"""``search``: patterns the test placed itself, found where the test's own page list maps them.

A simulated machine maps one frame holding markers at two virtual addresses (user and kernel)
and in a 4 MiB direct map; two virtually consecutive pages whose frames are out of order, with a
marker straddling them (their page table linked twice: found in both copies); an unmapped page
between two others, with a marker split across it (no virtual match); a marker in a frame
nothing maps (found with ``--phys`` only). The hits a search must give are found by the test in
its own virtual image: each run of consecutive pages of its list, its frames' bytes
concatenated, searched with ``bytes.find``. On the committed kernel dumps, bytes of QEMU's CR3
page are looked for in the ELF file's segments (read with pyelftools) and translated through
QEMU's own ``info tlb``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from depth import kernels
from support.dumps import elf_find, elf_read
from support.goldens import info_tlb, registers

from gdbext import cli
from gdbext.cpu import CpuState
from gdbext.errors import GdbextError
from gdbext.flags import PageTableFlags
from gdbext.plugin.host import Host
from gdbext.x86.paging import X86PageTable
from gdbext_sim.elfcore import write_qemu_elf_core
from gdbext_sim.memory import SparsePhysMemory, TopDownFrameAllocator

CR0, CR4, EFER = 0x80050033, 0x6A0 | 0x20, 0xD01
K4, M2 = 1 << 12, 1 << 21
W, U, NX = 1 << 1, 1 << 2, 1 << 63
RAM = 64 << 20

#: The frame mapped twice (and by the direct map), and its two addresses.
F_MARK, VA_USER, VA_KERNEL = 0x100000, 0x400000, 0xFFFFC90000010000
#: Three consecutive virtual pages from here: frames F_S0, F_S1 (out of order), a hole, F_G.
VA_S, F_S0, F_S1, F_G = 0x7F0000000000, 0x203000, 0x201000, 0x205000
DIRECT = 0xFFFF888000000000
#: A frame nothing maps.
F_LONE = 0x3000000

MARK = b"gdbext-MARK-one!"
STRADDLE = b"gdbext-STRADDLE-two"
GAPPED = b"gdbext-GAPPED-three"
#: Where each is placed: (frame, offset).
UTF16 = "h\u00e9llo, search".encode("utf-16-le")
POINTER = 0xFFFFC90000010123
ACROSS_CHUNKS = b"gdbext-across-chunks"

#: The test's own page list: (vaddr, paddr, size, flags).
PAGES = [
    (VA_USER, F_MARK, K4, U),
    (VA_S, F_S0, K4, U | W | NX),
    (VA_S + K4, F_S1, K4, U | W | NX),
    (VA_S + 3 * K4, F_G, K4, U | W | NX),
    (DIRECT, 0, M2, W | NX),
    (DIRECT + M2, M2, M2, W | NX),
    (VA_KERNEL, F_MARK, K4, W | NX),
]
#: The page table of VA_S's pages linked again by the next PD entry: the same pages 2 MiB on.
LINKED = [(va + M2, pa, size, flags) for va, pa, size, flags in PAGES if va >> 21 == VA_S >> 21]


@dataclass(frozen=True)
class Machine:
    memory: SparsePhysMemory
    root: int
    core: Path

    def images(self) -> list[tuple[int, bytes]]:
        """Each run of virtually consecutive pages of :data:`PAGES`: (start, its bytes)."""
        out: list[tuple[int, bytearray]] = []
        for va, pa, size, _ in sorted(PAGES + LINKED):
            data = self.memory.read(pa, size)
            if out and out[-1][0] + len(out[-1][1]) == va:
                out[-1][1].extend(data)
            else:
                out.append((va, bytearray(data)))
        return [(va, bytes(data)) for va, data in out]

    def expected(self, pattern: bytes) -> list[int]:
        """Every virtual address where ``pattern`` is, in the test's own image."""
        found = []
        for va, data in self.images():
            i = data.find(pattern)
            while i >= 0:
                found.append(va + i)
                i = data.find(pattern, i + 1)
        return sorted(found)

    def expected_phys(self, pattern: bytes) -> list[int]:
        data = self.memory.read(0, RAM)
        found = []
        i = data.find(pattern)
        while i >= 0:
            found.append(i)
            i = data.find(pattern, i + 1)
        return found

    def paddr(self, vaddr: int) -> int:
        va, pa, _, _ = next(p for p in PAGES + LINKED if p[0] <= vaddr < p[0] + p[2])
        return pa + vaddr - va


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Machine:
    mem = SparsePhysMemory(RAM)
    alloc = TopDownFrameAllocator(mem)
    root = alloc.allocate_frame()
    assert root is not None
    pt = X86PageTable(mem, root, 4, allow_writes=True)
    for va, pa, size, flags in PAGES:
        pt.map_range(va, pa, size, size, PageTableFlags(flags), alloc)
    pd = next(step for step in pt.translate(VA_S).steps if step.level == 2)
    mem.write(pd.table + (pd.index + 1) * 8, pd.entry.to_bytes(8, "little"))
    mem.write(F_MARK + 0x100, MARK)
    mem.write(F_MARK + K4 - 6, MARK)  # into the next frame: only the direct map has both
    mem.write(F_MARK + 0x800, POINTER.to_bytes(8, "little"))
    mem.write(F_S0 + K4 - 7, STRADDLE[:7])
    mem.write(F_S1, STRADDLE[7:])
    mem.write(F_S1 + K4 - 5, GAPPED[:5])
    mem.write(F_G, GAPPED[5:])
    mem.write(F_S0 + 0x10, UTF16)
    mem.write(F_LONE + 0x40, MARK)
    mem.write(M2 - 5, ACROSS_CHUNKS)  # across the 1 MiB chunks the direct map is read in
    core = tmp_path_factory.mktemp("search") / "machine.elf"
    write_qemu_elf_core(core, mem, [CpuState(cr0=CR0, cr3=root, cr4=CR4, efer=EFER)])
    return Machine(mem, root, core)


def run(argv: Sequence[str]) -> tuple[int, str]:
    out = io.StringIO()
    return cli.run(list(argv), Host.create(), out), out.getvalue()


def hits(machine: Machine, *argv: str) -> tuple[int, list[dict[str, object]], dict[str, object]]:
    status, text = run(["search", str(machine.core), "--json", *argv])
    doc = json.loads(text)
    found = [
        {**h, "address": int(h["address"], 16), "paddr": int(h["paddr"], 16)} for h in doc["hits"]
    ]
    return status, found, {"hits": doc["found"], "more": doc["more"]}


def test_a_frame_mapped_at_several_addresses_is_found_at_each(machine: Machine) -> None:
    want = machine.expected(MARK)
    # The frame's two addresses and the direct map's, twice each (0x100 and across the
    # frame's end, which only the direct map has contiguous); not the unmapped frame.
    assert want == sorted(
        [VA_USER + 0x100, VA_KERNEL + 0x100, DIRECT + F_MARK + 0x100, DIRECT + F_MARK + K4 - 6]
    )
    status, found, summary = hits(machine, "--string", MARK.decode())
    assert status == 0 and summary == {"hits": 4, "more": False}
    assert [h["address"] for h in found] == want
    assert [h["paddr"] for h in found] == [machine.paddr(va) for va in want]
    for hit in found:
        start = int(str(hit["paddr"]))
        assert bytes.fromhex(str(hit["context"])) == machine.memory.read(start, 16)
    perms = {h["address"]: h["perms"] for h in found}
    assert perms[VA_USER + 0x100] == "r-x user"
    assert perms[VA_KERNEL + 0x100] == "rw- kernel"


def test_a_match_across_pages_whose_frames_are_out_of_order(machine: Machine) -> None:
    want = machine.expected(STRADDLE)
    assert want == [VA_S + K4 - 7, VA_S + M2 + K4 - 7]  # and in the linked copy
    status, found, _ = hits(machine, "--bytes", STRADDLE.hex())
    assert status == 0 and [h["address"] for h in found] == want
    assert [h["paddr"] for h in found] == [F_S0 + K4 - 7] * 2
    # Across an unmapped page there is no match, virtual or physical.
    assert machine.expected(GAPPED) == []
    status, text = run(["search", str(machine.core), "--string", GAPPED.decode()])
    assert status == 1 and text.splitlines() == [f"# 0 hits of string {GAPPED.decode()!r}"]


def test_physical_search_finds_what_nothing_maps(machine: Machine) -> None:
    want = machine.expected_phys(MARK)
    assert F_LONE + 0x40 in want and len(want) == 3
    status, found, _ = hits(machine, "--phys", "--string", MARK.decode())
    assert status == 0 and [h["address"] for h in found] == want
    assert all(h["address"] == h["paddr"] and "perms" not in h for h in found)
    status, text = run(["search", str(machine.core), "--phys", "--bytes", MARK.hex()])
    assert text.splitlines()[0].startswith(f"{want[0]:016x}  {MARK[:16].hex(' ')}")


def test_values_text_and_alignment(machine: Machine) -> None:
    value = int.from_bytes(MARK[:4], "little")
    _, found, _ = hits(machine, "--u32", hex(value))
    assert [h["address"] for h in found] == machine.expected(MARK[:4])
    _, found, _ = hits(machine, "--u16", hex(int.from_bytes(MARK[:2], "little")))
    assert [h["address"] for h in found] == machine.expected(MARK[:2])
    _, found, _ = hits(machine, "--string", "h\u00e9llo, search", "--utf16")
    assert (
        [h["address"] for h in found]
        == machine.expected(UTF16)
        == [VA_S + 0x10, VA_S + M2 + 0x10, DIRECT + F_S0 + 0x10]
    )
    for align, offset in ((0x100, 0), (0x100, 0xFA), (8, 2)):
        want = [a for a in machine.expected(MARK) if a % align == offset]
        _, found, _ = hits(machine, "--string", MARK.decode(), "--align", f"{align},{offset}")
        assert [h["address"] for h in found] == want


def test_pointers_into_a_range(machine: Machine) -> None:
    lo, hi = VA_KERNEL, VA_KERNEL + K4
    want = []
    for va, data in machine.images():
        for i in range(0, len(data) - 7, 8):
            if lo <= int.from_bytes(data[i : i + 8], "little") < hi:
                want.append(va + i)
    assert len(want) == 3
    _, found, _ = hits(machine, "--pointer-into", f"{lo:#x}-{hi:#x}", "--align", "8")
    assert [h["address"] for h in found] == sorted(want)


def test_max_says_more_exist(machine: Machine) -> None:
    status, found, summary = hits(machine, "--string", MARK.decode(), "--max", "2")
    assert status == 0 and len(found) == 2 and summary == {"hits": 2, "more": True}
    _, text = run(["search", str(machine.core), "--string", MARK.decode(), "--max", "2"])
    assert text.splitlines()[-1].endswith("more exist (--max 2: raise it to see them)")


def test_range_limits_the_search(machine: Machine) -> None:
    want = [a for a in machine.expected(MARK) if DIRECT <= a < DIRECT + (4 << 20)]
    _, found, _ = hits(machine, "--string", MARK.decode(), "--range", f"{DIRECT:#x}+4M")
    assert [h["address"] for h in found] == want


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--bytes", "zz"],
        ["--utf16", "--bytes", "00"],
        ["--u16", "0x10000"],
        ["--string", "x", "--max", "0"],
        ["--string", "x", "--align", "8,8"],
        ["--phys", "--cr3", "0x1000", "--string", "x"],
        ["--pointer-into", "nowhere"],
    ],
)
def test_bad_input_is_status_2(machine: Machine, argv: list[str]) -> None:
    with pytest.raises((GdbextError, SystemExit)) as err:
        run(["search", str(machine.core), *argv])
    value = err.value
    if isinstance(value, SystemExit):
        assert value.code == 2
    else:
        assert isinstance(value, GdbextError) and value.exit_status == 2


# --- the committed kernel dumps ---------------------------------------------------------------


@pytest.mark.parametrize("name", kernels())
def test_kernel_dump_hits_are_where_qemu_maps_the_bytes(
    kernel_dump: Callable[[str], Path], name: str
) -> None:
    dump = kernel_dump(name)
    cr3 = registers(name)["CR3"] & ~0xFFF
    page = elf_read(dump, cr3, K4)
    # The last 24 bytes of the table that hold a present entry: its kernel half.
    last = max(i for i in range(0, K4, 8) if page[i] & 1)
    pattern = page[last - 16 : last + 8]
    assert any(pattern)
    frames = elf_find(dump, pattern)
    assert cr3 + last - 16 in frames
    tlb = info_tlb(f"{name}.info-tlb")
    want = []
    for va, (pa, flags) in tlb.items():
        size = M2 if flags[2] == "P" else K4  # qemu64 has no 1 GiB pages
        want += [va + p - pa for p in frames if pa <= p and p + len(pattern) <= pa + size]
    status, text = run(
        ["search", str(dump), "--json", "--bytes", pattern.hex(), "--max", "0x10000"]
    )
    doc = json.loads(text)
    assert status == 0 and (doc["found"], doc["more"]) == (len(want), False)
    assert [int(r["address"], 16) for r in doc["hits"]] == sorted(want)
    assert all(bytes.fromhex(r["context"]).startswith(pattern) for r in doc["hits"])


def test_a_range_over_the_linked_copy_only(machine: Machine) -> None:
    """The copy's frames are read through the table's first link, outside the range."""
    _, found, _ = hits(machine, "--bytes", STRADDLE.hex(), "--range", f"{VA_S + M2:#x}+2M")
    assert [h["address"] for h in found] == [VA_S + M2 + K4 - 7]
    _, found, _ = hits(
        machine, "--string", "h\u00e9llo, search", "--utf16", "--range", f"{VA_S + M2:#x}+2M"
    )
    assert [h["address"] for h in found] == [VA_S + M2 + 0x10]
    assert found[0]["perms"] == "rw- user"


def test_a_match_across_two_chunks_of_reading(machine: Machine) -> None:
    want = machine.expected(ACROSS_CHUNKS)
    assert want == [DIRECT + M2 - 5]
    _, found, _ = hits(machine, "--string", ACROSS_CHUNKS.decode())
    assert [h["address"] for h in found] == want
    assert bytes.fromhex(str(found[0]["context"])) == ACROSS_CHUNKS  # the match, 20 bytes
    _, found, _ = hits(machine, "--phys", "--string", ACROSS_CHUNKS.decode())
    assert [h["address"] for h in found] == machine.expected_phys(ACROSS_CHUNKS) == [M2 - 5]


def test_filter_keeps_the_pages_whose_permissions_match(machine: Machine) -> None:
    flags = {va: f for va, _, size, f in PAGES + LINKED for va in range(va, va + size, K4)}

    def passes(vaddr: int, spec: str) -> bool:
        f = flags[vaddr & ~(K4 - 1)]
        user, writable = bool(f & U), bool(f & W)
        return {"u": user, "s": not user, "w": writable}[spec]

    for spec in ("u", "s", "w"):
        want = [a for a in machine.expected(MARK) if passes(a, spec)]
        _, found, _ = hits(machine, "--string", MARK.decode(), "--filter", spec)
        assert [h["address"] for h in found] == want, spec


@pytest.mark.parametrize("name", ["4level", "la57"])
def test_kernel_dump_espfix_copies_are_each_reported(
    kernel_dump: Callable[[str], Path], name: str
) -> None:
    """ESPfix links one page table thousands of times: a hit in its page is at every address
    QEMU's ``info tlb`` lists there (the page's first 8 bytes, zero, at each page start)."""
    dump = kernel_dump(name)
    tlb = info_tlb(f"{name}.info-tlb")
    lo, hi = 0xFFFFFF0000000000, 0xFFFFFF8000000000  # ESPfix, 4 and 5 levels alike
    pages = {va: pa for va, (pa, _) in tlb.items() if lo <= va < hi}
    frames = set(pages.values())
    assert len(pages) > 1000 and len(frames) < 10  # a few frames, many copies
    zero = {pa for pa in frames if elf_read(dump, pa, 8) == bytes(8)}
    want = sorted(va for va, pa in pages.items() if pa in zero)
    argv = ["--u64", "0", "--align", "4096", "--range", f"{lo:#x}-{hi:#x}", "--max", "0x100000"]
    status, text = run(["search", str(dump), "--json", *argv])
    doc = json.loads(text)
    assert status == 0 and [int(h["address"], 16) for h in doc["hits"]] == want


# --- --has ---------------------------------------------------------------------------------------


def has_window(vaddr: int) -> tuple[int, int]:
    """The test's own idea of ``--has``'s mapping: the run of virtually consecutive pages of
    its list around ``vaddr`` with the same size and flags, whatever their frames."""
    pages = sorted(PAGES + LINKED)
    i = next(n for n, p in enumerate(pages) if p[0] <= vaddr < p[0] + p[2])
    lo = hi = i
    while (
        lo > 0
        and pages[lo - 1][0] + pages[lo - 1][2] == pages[lo][0]
        and (pages[lo - 1][2:] == pages[lo][2:])
    ):
        lo -= 1
    while (
        hi + 1 < len(pages)
        and pages[hi][0] + pages[hi][2] == pages[hi + 1][0]
        and (pages[hi + 1][2:] == pages[hi][2:])
    ):
        hi += 1
    return pages[lo][0], pages[hi][0] + pages[hi][2]


@pytest.mark.parametrize(
    ("pattern", "vaddr"),
    [
        (MARK, VA_USER + 0x123),  # one page: not its kernel alias, nor the direct map
        (MARK, DIRECT + M2 + 5),  # two 2 MiB pages; one match across two of their frames
        (STRADDLE, VA_S),  # two pages, frames out of order: the match across them
        (STRADDLE, VA_S + M2 + K4),  # the linked copy: its own hit only
        (GAPPED, VA_S + 3 * K4),  # the page after the hole: no match
        (UTF16, VA_S + K4),
    ],
)
def test_has_searches_the_mapping_that_contains_the_address(
    machine: Machine, pattern: bytes, vaddr: int
) -> None:
    lo, hi = has_window(vaddr)
    want = [a for a in machine.expected(pattern) if lo <= a and a + len(pattern) <= hi]
    everywhere = machine.expected(pattern)
    status, found, _ = hits(machine, "--bytes", pattern.hex(), "--has", f"{vaddr:#x}")
    assert [h["address"] for h in found] == want
    assert [h["paddr"] for h in found] == [machine.paddr(a) for a in want]
    assert status == (0 if want else 1)
    if pattern is not GAPPED:
        assert want and len(want) < len(everywhere)  # some hits inside, some outside


def test_has_within_range_and_filter(machine: Machine) -> None:
    lo, hi = has_window(DIRECT)
    assert (lo, hi) == (DIRECT, DIRECT + 2 * M2)
    argv = ["--string", MARK.decode(), "--has", f"{DIRECT:#x}"]
    both = machine.expected(MARK)
    _, found, _ = hits(machine, *argv, "--range", f"{DIRECT + F_MARK:#x}+0x200")
    assert (
        [h["address"] for h in found]
        == [DIRECT + F_MARK + 0x100]
        == [a for a in both if DIRECT + F_MARK <= a < DIRECT + F_MARK + 0x200]
    )
    _, found, _ = hits(machine, *argv, "--filter", "s,w")
    assert [h["address"] for h in found] == [a for a in both if lo <= a < hi]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--has", f"{VA_S + 2 * K4:#x}"], f"0x{VA_S + 2 * K4:x}"),  # the hole
        (["--has", f"{VA_USER:#x}", "--filter", "w"], "do not pass --filter w"),
        (
            ["--has", f"{VA_USER:#x}", "--range", f"{DIRECT:#x}+4M"],
            f"0x{VA_USER:x} is mapped by 0x{VA_USER:x}-0x{VA_USER + K4:x}, outside --range",
        ),
    ],
)
def test_has_an_address_not_searched_is_status_1(
    machine: Machine, argv: list[str], message: str
) -> None:
    with pytest.raises(GdbextError) as err:
        run(["search", str(machine.core), "--string", MARK.decode(), *argv])
    assert err.value.exit_status == 1 and message in str(err.value)
    assert str(err.value).count("\n") == 0


def test_has_with_phys_is_status_2(machine: Machine) -> None:
    with pytest.raises(GdbextError) as err:
        run(["search", str(machine.core), "--phys", "--string", "x", "--has", "0x400000"])
    assert err.value.exit_status == 2
