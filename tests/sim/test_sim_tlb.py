"""The simulator's modelled TLB and paging-structure cache (PSC).

Page tables are built by hand here (entries packed with :mod:`struct`), independently of
:mod:`gdbext.x86.paging`.
"""

from __future__ import annotations

import struct

import pytest

from gdbext.errors import MisalignedAddressError, NonCanonicalAddressError, PhysMemoryError
from gdbext.x86.tlbflush import FlushAll, FlushPage
from gdbext_sim.memory import SparsePhysMemory, TopDownFrameAllocator
from gdbext_sim.tlb import PscEntry, Rights, SimTlb, TlbEntry

MIB = 1 << 20
GIB = 1 << 30
P, W, U, PS, NX = 1 << 0, 1 << 1, 1 << 2, 1 << 7, 1 << 63
U64 = struct.Struct("<Q")


def shift(level: int) -> int:
    return 12 + 9 * (level - 1)


class Tables:
    """Hand-built page tables in a sparse memory: data frames low, tables from the top."""

    def __init__(self, levels: int = 4, ram: int = 64 * MIB) -> None:
        self.levels = levels
        self.mem = SparsePhysMemory(ram)
        self.alloc = TopDownFrameAllocator(self.mem, low=ram // 2)
        self.root = self.new_table()

    def new_table(self) -> int:
        frame = self.alloc.allocate_frame()
        assert frame is not None
        return frame

    @staticmethod
    def slot(table: int, level: int, vaddr: int) -> int:
        return table + 8 * ((vaddr >> shift(level)) & 0x1FF)

    def get(self, table: int, level: int, vaddr: int) -> int:
        return int(U64.unpack(self.mem.read(self.slot(table, level, vaddr), 8))[0])

    def set(self, table: int, level: int, vaddr: int, value: int) -> None:
        self.mem.write(self.slot(table, level, vaddr), U64.pack(value))

    def table(self, vaddr: int, level: int, *, create: bool = True) -> int:
        """The level-``level`` table for ``vaddr``, creating the tables above it."""
        table = self.root
        for lvl in range(self.levels, level, -1):
            entry = self.get(table, lvl, vaddr)
            if not entry & P:
                assert create
                entry = self.new_table() | P | W | U
                self.set(table, lvl, vaddr, entry)
            table = entry & 0x000F_FFFF_FFFF_F000
        return table

    def map(self, vaddr: int, frame: int, *, level: int = 1, flags: int = P | W) -> None:
        self.set(self.table(vaddr, level), level, vaddr, frame | flags | (PS if level > 1 else 0))

    def set_leaf(self, vaddr: int, value: int, *, level: int = 1) -> None:
        self.set(self.table(vaddr, level, create=False), level, vaddr, value)

    def tlb(self) -> SimTlb:
        return SimTlb(self.mem, self.root, self.levels)


A = 0x40_0000  # PML4 0, PDPT 0, PD 2, PT 0
FRAME_A = 0x10_0000
FRAME_B = 0x20_0000


# --- Plain translation -----------------------------------------------------------------------


def test_translates_4k_pages_and_caches_them() -> None:
    t = Tables()
    t.map(A, FRAME_A)
    t.map(A + 0x1000, FRAME_B)
    tlb = t.tlb()
    assert tlb.access(A + 0x123) == FRAME_A + 0x123
    assert tlb.access(A + 0x1FFF) == FRAME_B + 0xFFF
    assert tlb.access(A + 0x2000) is None
    assert tlb.access(A + 0x456) == FRAME_A + 0x456
    assert (tlb.tlb_hits, tlb.tlb_misses) == (1, 3)
    assert [(e.vaddr, e.page_size, e.frame) for e in tlb.tlb_entries()] == [
        (A, 0x1000, FRAME_A),
        (A + 0x1000, 0x1000, FRAME_B),
    ]
    assert tlb.stale_entries() == []


def test_higher_half_addresses() -> None:
    t = Tables()
    vaddr = 0xFFFF_8000_0020_1000
    t.map(vaddr, FRAME_A)
    tlb = t.tlb()
    assert tlb.access(vaddr + 8) == FRAME_A + 8
    assert tlb.psc_entries()[0].vaddr == 0xFFFF_8000_0000_0000  # canonical region start
    with pytest.raises(NonCanonicalAddressError):
        tlb.access(0x0000_8000_0000_0000)


def test_walk_is_uncached() -> None:
    t = Tables()
    t.map(A, FRAME_A, flags=P | W | U | NX)
    tlb = t.tlb()
    fresh = tlb.walk(A + 5)
    assert fresh == TlbEntry(A, 0x1000, FRAME_A, Rights(True, True, True), FRAME_A | P | W | U | NX)
    assert tlb.tlb_entries() == [] and tlb.psc_entries() == []


def test_not_present_translations_are_not_cached() -> None:
    t = Tables()
    t.map(A, FRAME_A)
    tlb = t.tlb()
    assert tlb.access(A + 0x1000) is None
    t.map(A + 0x1000, FRAME_B)  # mapping a non-present page needs no flush
    assert tlb.access(A + 0x1000) == FRAME_B
    assert tlb.stale_entries() == []


def test_rights_accumulate_down_the_walk() -> None:
    t = Tables()
    t.map(A, FRAME_A, flags=P | W | U)
    pd = t.table(A, 2)
    t.set(t.table(A, 3), 3, A, pd | P | U | NX)  # read-only, no-execute PDPT entry
    fresh = t.tlb().walk(A)
    assert fresh is not None
    assert fresh.rights == Rights(writable=False, user=True, no_execute=True)


# --- Stale TLB entries -----------------------------------------------------------------------


def test_tlb_serves_a_stale_translation_until_invlpg() -> None:
    t = Tables()
    t.map(A, FRAME_A)
    tlb = t.tlb()
    assert tlb.access(A) == FRAME_A
    t.set_leaf(A, FRAME_B | P | W)  # remap without a flush
    assert tlb.access(A + 0x10) == FRAME_A + 0x10  # stale
    stale = tlb.stale_entries()
    assert len(stale) == 1
    cached, current = stale[0].cached, stale[0].current
    assert isinstance(cached, TlbEntry) and isinstance(current, TlbEntry)
    assert (cached.vaddr, cached.frame, current.frame) == (A, FRAME_A, FRAME_B)
    tlb.invlpg(A + 0x800)  # any address inside the page
    assert tlb.access(A + 0x10) == FRAME_B + 0x10
    assert tlb.stale_entries() == []
    assert (tlb.flushes_page, tlb.flushes_all) == (1, 0)


def test_invlpg_of_another_page_leaves_the_stale_translation() -> None:
    t = Tables()
    t.map(A, FRAME_A)
    t.map(A + 0x1000, FRAME_B)
    tlb = t.tlb()
    tlb.access(A)
    tlb.access(A + 0x1000)
    t.set_leaf(A, 0)  # unmap A without a flush
    tlb.invlpg(A + 0x1000)
    assert tlb.access(A) == FRAME_A
    [stale] = tlb.stale_entries()
    assert isinstance(stale.cached, TlbEntry) and stale.current is None
    tlb.flush_all()
    assert tlb.access(A) is None
    assert tlb.stale_entries() == []
    assert (tlb.flushes_page, tlb.flushes_all) == (1, 1)


def test_a_rights_change_without_flush_is_stale() -> None:
    t = Tables()
    t.map(A, FRAME_A, flags=P | W)
    tlb = t.tlb()
    tlb.access(A)
    t.set_leaf(A, FRAME_A | P)  # write-protect, forget the flush
    [stale] = tlb.stale_entries()
    assert isinstance(stale.cached, TlbEntry) and isinstance(stale.current, TlbEntry)
    assert stale.cached.rights.writable and not stale.current.rights.writable
    tlb(FlushPage(A, 0x1000))
    assert tlb.stale_entries() == []


def test_flush_hook_dispatches() -> None:
    t = Tables()
    t.map(A, FRAME_A)
    tlb = t.tlb()
    tlb.access(A)
    tlb(FlushPage(A, 0x1000))
    assert tlb.tlb_entries() == [] and tlb.psc_entries() == []
    tlb.access(A)
    tlb(FlushAll())
    assert tlb.tlb_entries() == [] and tlb.psc_entries() == []
    assert (tlb.flushes_page, tlb.flushes_all) == (1, 1)
    with pytest.raises(TypeError):
        tlb("everything")  # type: ignore[arg-type]


# --- The paging-structure cache --------------------------------------------------------------


def test_psc_shortcuts_walks_of_neighbouring_pages() -> None:
    t = Tables()
    for i in range(3):
        t.map(A + i * 0x1000, FRAME_A + i * 0x1000)
    tlb = t.tlb()
    tlb.access(A)
    assert [(e.level, e.vaddr) for e in tlb.psc_entries()] == [(4, 0), (3, 0), (2, 0x40_0000)]
    assert tlb.psc_entries()[-1].table == t.table(A, 1)
    assert tlb.access(A + 0x1000) == FRAME_A + 0x1000
    assert tlb.psc_hits == 1


def test_psc_serves_a_stale_table_after_a_parent_entry_changes() -> None:
    t = Tables()
    t.map(A, FRAME_A)
    t.map(A + 0x1000, FRAME_A + 0x1000)
    t.map(A + 0x2000, FRAME_A + 0x2000)
    tlb = t.tlb()
    assert tlb.access(A) == FRAME_A  # caches PML4E, PDPTE and PDE of A's region

    # Point the PML4 entry at a fresh PDPT -> PD -> PT that maps the region to FRAME_B.
    old_pml4e = t.get(t.root, 4, A)
    pdpt, pd, pt = t.new_table(), t.new_table(), t.new_table()
    t.set(pdpt, 3, A, pd | P | W | U)
    t.set(pd, 2, A, pt | P | W | U)
    for i in range(3):
        t.set(pt, 1, A + i * 0x1000, FRAME_B + i * 0x1000 | P | W)
    t.set(t.root, 4, A, pdpt | P | W | U)
    assert old_pml4e & 0x000F_FFFF_FFFF_F000 != pdpt

    # A page never accessed before still translates through the cached (old) PT.
    assert tlb.access(A + 0x1000) == FRAME_A + 0x1000
    assert tlb.psc_hits == 1
    stale = tlb.stale_entries()
    assert [(s.kind, s.cached.level) for s in stale] == [
        ("tlb", 1),
        ("tlb", 1),
        ("psc", 4),
        ("psc", 3),
        ("psc", 2),
    ]
    assert {s.cached.vaddr for s in stale if s.kind == "tlb"} == {A, A + 0x1000}
    fresh_tables = [s.current.table for s in stale if isinstance(s.current, PscEntry)]
    assert fresh_tables == [pdpt, pd, pt]
    assert str(stale[2]) == (
        f"stale PML4 cache entry 0x0 -> table 0x{old_pml4e & ~0xFFF:x} "
        "(Rights(writable=True, user=True, no_execute=False)); the tables now give "
        f"table 0x{pdpt:x} (Rights(writable=True, user=True, no_execute=False))"
    )

    # INVLPG of an unrelated (even unmapped) page drops the whole PSC ...
    tlb.invlpg(0x7000_0000_0000)
    assert tlb.psc_entries() == []
    assert tlb.access(A + 0x2000) == FRAME_B + 0x2000
    # ... but not the TLB entries of other pages.
    assert tlb.access(A) == FRAME_A
    assert tlb.access(A + 0x1000) == FRAME_A + 0x1000
    assert len(tlb.stale_entries()) == 2
    tlb.flush_all()
    assert tlb.access(A) == FRAME_B
    assert tlb.stale_entries() == []


def test_psc_keeps_a_freed_table_reachable() -> None:
    t = Tables()
    t.map(A, FRAME_A)
    t.map(A + 0x1000, FRAME_B)
    tlb = t.tlb()
    tlb.access(A)
    t.set(t.table(A, 2), 2, A, 0)  # unlink the PT, no flush
    assert tlb.walk(A + 0x1000) is None
    assert tlb.access(A + 0x1000) == FRAME_B  # via the cached PDE
    stale_psc = [s for s in tlb.stale_entries() if s.kind == "psc"]
    assert [(s.cached.level, s.current) for s in stale_psc] == [(2, None)]
    tlb.flush_all()
    assert tlb.access(A + 0x1000) is None


def test_set_root_switches_tables_and_flushes() -> None:
    t = Tables()
    t.map(A, FRAME_A)
    tlb = t.tlb()
    tlb.access(A)
    t.root = new_root = t.new_table()  # a second address space in the same memory
    t.map(A, FRAME_B)
    tlb.set_root(new_root)
    assert tlb.root == new_root
    assert tlb.tlb_entries() == [] and tlb.psc_entries() == []
    assert tlb.access(A) == FRAME_B
    assert tlb.flushes_all == 0
    with pytest.raises(MisalignedAddressError):
        tlb.set_root(new_root | 1)  # PCID bits: pass CpuState.root, not CR3


# --- Huge pages ------------------------------------------------------------------------------


def test_2m_leaf() -> None:
    t = Tables()
    vaddr = 0xFFFF_8880_0060_0000
    t.map(vaddr, 0x60_0000, level=2, flags=P | W | (1 << 12))  # bit 12 is PAT, not address
    tlb = t.tlb()
    assert tlb.access(vaddr + 0x12_3456) == 0x60_0000 + 0x12_3456
    [entry] = tlb.tlb_entries()
    assert (entry.vaddr, entry.page_size, entry.frame) == (vaddr, 2 * MIB, 0x60_0000)
    assert [e.level for e in tlb.psc_entries()] == [4, 3]
    t.set_leaf(vaddr, 0x80_0000 | P | W | PS, level=2)
    assert tlb.access(vaddr + 0x1F_FFFF) == 0x60_0000 + 0x1F_FFFF  # stale
    assert len(tlb.stale_entries()) == 1
    tlb.invlpg(vaddr + 0x10_0000)  # inside the 2 MiB page, not its base
    assert tlb.access(vaddr + 0x1F_FFFF) == 0x80_0000 + 0x1F_FFFF
    assert tlb.stale_entries() == []


def test_1g_leaf() -> None:
    t = Tables(ram=64 * MIB)
    vaddr = 0x40_0000_0000  # PML4 0, PDPT 256
    t.map(vaddr, 1 * GIB, level=3)
    tlb = t.tlb()
    # The frame is outside RAM: translation does not touch the data page.
    assert tlb.access(vaddr + 0x3FFF_FFFF) == GIB + 0x3FFF_FFFF
    [entry] = tlb.tlb_entries()
    assert (entry.page_size, entry.frame) == (GIB, GIB)
    assert [e.level for e in tlb.psc_entries()] == [4]
    t.set_leaf(vaddr, 2 * GIB | P | PS, level=3)
    assert tlb.access(vaddr) == GIB
    [stale] = tlb.stale_entries()
    assert isinstance(stale.current, TlbEntry) and stale.current.frame == 2 * GIB
    tlb(FlushPage(vaddr + 12345, GIB))
    assert tlb.access(vaddr) == 2 * GIB


def test_page_size_change_is_stale() -> None:
    t = Tables()
    t.map(A, 0x40_0000)
    tlb = t.tlb()
    assert tlb.access(A) == 0x40_0000
    t.set(t.table(A, 2), 2, A, 0x40_0000 | P | W | PS)  # now a 2 MiB page, same frame
    [stale_tlb] = [s for s in tlb.stale_entries() if isinstance(s.cached, TlbEntry)]
    assert isinstance(stale_tlb.current, TlbEntry) and stale_tlb.current.page_size == 2 * MIB


def test_huge_page_bit_in_pml4_is_a_fault() -> None:
    t = Tables()
    t.set(t.root, 4, A, 0x4000_0000 | P | W | PS)
    tlb = t.tlb()
    assert tlb.access(A) is None
    assert tlb.walk(A) is None


# --- Five levels -----------------------------------------------------------------------------


def test_five_level_walk() -> None:
    t = Tables(levels=5)
    low = 0x00FF_8000_0000_1000  # PML5 index 0xff: above the 4-level range
    high = 0xFF00_0000_0020_0000  # PML5 index 256, a 2 MiB page
    t.map(low, FRAME_A)
    t.map(high, 0x60_0000, level=2)
    tlb = t.tlb()
    assert tlb.access(low + 1) == FRAME_A + 1
    assert tlb.access(high + 0x1000) == 0x60_0000 + 0x1000
    assert [e.level for e in tlb.psc_entries()] == [5, 5, 4, 4, 3, 3, 2]
    t.set_leaf(low, FRAME_B | P | W)
    assert tlb.access(low) == FRAME_A
    assert len(tlb.stale_entries()) == 1
    tlb.invlpg(low)
    assert tlb.access(low) == FRAME_B
    with pytest.raises(NonCanonicalAddressError):
        tlb.access(0x0100_0000_0000_0000)
    with pytest.raises(ValueError):
        SimTlb(t.mem, t.root, 3)


# --- Tables outside memory -------------------------------------------------------------------


def test_a_walk_leaving_ram_raises_and_counts_as_stale() -> None:
    t = Tables()
    t.map(A, FRAME_A)
    tlb = t.tlb()
    tlb.access(A)
    t.set(t.table(A, 2), 2, A, (1 << 40) | P | W)  # the PT is now outside RAM
    assert tlb.access(A) == FRAME_A  # still cached
    with pytest.raises(PhysMemoryError) as info:
        tlb.walk(A)
    assert info.value.paddr == 1 << 40
    stale = tlb.stale_entries()
    assert {type(s.cached) for s in stale} == {TlbEntry, PscEntry}
    assert all(s.current is None for s in stale if isinstance(s.cached, TlbEntry))
