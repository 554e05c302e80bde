"""The opt-in table cache and translation memo of X86PageTable never serve stale results
for changes made through the page table, and forget everything on invalidate_cache()."""

from __future__ import annotations

import pytest

from gdbext.errors import (
    AddressOutOfRangeError,
    GdbextError,
    NonCanonicalAddressError,
    NotMappedError,
    ReservedBitsError,
    TableOutsideRamError,
    TranslationError,
)
from gdbext.flags import PageTableFlags
from gdbext.mapper import read_u64, write_u64
from gdbext.x86.paging import SIZE_1G, SIZE_2M, SIZE_4K, X86PageTable
from gdbext.x86.records import Translation
from gdbext_sim.memory import SparsePhysMemory, TopDownFrameAllocator


def make() -> tuple[X86PageTable, TopDownFrameAllocator, SparsePhysMemory]:
    mem = SparsePhysMemory(32 << 20)
    alloc = TopDownFrameAllocator(mem)
    root = alloc.allocate_frame()
    assert root is not None
    return X86PageTable(mem, root, 4, allow_writes=True, cache=True), alloc, mem


def test_changes_through_the_table_are_seen() -> None:
    pt, alloc, _ = make()
    pt.map(0x400000, 0x9000, SIZE_4K, PageTableFlags.WRITABLE, alloc)
    assert pt.translate(0x400123).paddr == 0x9123
    assert pt.translate(0x400123).writable
    pt.update_flags(0x400000, 0)
    assert not pt.translate(0x400123).writable
    pt.unmap(0x400000)
    with pytest.raises(NotMappedError):
        pt.translate(0x400123)
    assert pt.clean_up(alloc).freed  # the empty page table goes; a 2 MiB page fits now
    pt.map(0x400000, 0x200000 * 3, SIZE_2M, 0, alloc)
    t = pt.translate(0x400123)
    assert (t.paddr, t.page_size) == (0x600123, SIZE_2M)


def test_memo_keeps_the_offset_within_the_page() -> None:
    pt, alloc, _ = make()
    pt.map(0xFFFF_8000_0000_0000, 0x200000, SIZE_2M, 0, alloc)
    first = pt.translate(0xFFFF_8000_0000_1234)
    again = pt.translate(0xFFFF_8000_0000_1FFF)
    assert (first.paddr, again.paddr) == (0x201234, 0x201FFF)
    assert again.vaddr == 0xFFFF_8000_0000_1FFF and again.steps == first.steps


def test_outside_changes_need_invalidate_cache() -> None:
    pt, alloc, mem = make()
    pt.map(0x400000, 0x9000, SIZE_4K, 0, alloc)
    leaf = pt.translate(0x400000).steps[-1]
    slot = leaf.table + 8 * leaf.index
    write_u64(mem, slot, read_u64(mem, slot) & ~0xFFFFFFFFF000 | 0xA000)
    assert pt.translate(0x400000).paddr == 0x9000  # documented: the cache does not see it
    pt.invalidate_cache()
    assert pt.translate(0x400000).paddr == 0xA000


def _outcome(pt: X86PageTable, va: int) -> object:
    """A translation, or the error with its data (type, message, level, entry, steps)."""
    try:
        return pt.translate(va)
    except GdbextError as error:
        data = (
            (error.level, error.entry, error.steps) if isinstance(error, TranslationError) else ()
        )
        return (type(error), str(error), *data)


@pytest.mark.parametrize("levels", [4, 5])
def test_cached_translations_equal_the_uncached_walk(levels: int) -> None:
    """Every kind of address, each 2 MiB and 1 GiB region met first through one address and
    then through the region caches: the cached page table answers as the uncached one, errors
    (with their level, entry and steps) included."""
    mem = SparsePhysMemory(32 << 20)
    alloc = TopDownFrameAllocator(mem)
    root = alloc.allocate_frame()
    assert root is not None
    writer = X86PageTable(mem, root, levels, allow_writes=True)
    user, rw, nx = (
        PageTableFlags.USER_ACCESSIBLE,
        PageTableFlags.WRITABLE,
        PageTableFlags.NO_EXECUTE,
    )
    gib = 0x4000_0000
    for i in range(8):  # 4 KiB pages of four permission kinds, in two page tables
        writer.map(
            gib + i * 0x1000, 0x10_0000 + i * 0x1000, SIZE_4K, [0, user, rw, nx][i % 4], alloc
        )
        writer.map(gib + SIZE_2M + i * 0x1000, 0x20_0000 + i * 0x1000, SIZE_4K, user | rw, alloc)
    writer.map(gib + 4 * SIZE_2M, 0x40_0000, SIZE_2M, rw | nx, alloc)  # a 2 MiB page beside them
    writer.map(2 * gib, 0, SIZE_1G, user, alloc)  # 1 GiB pages
    writer.map(4 * gib, 0, SIZE_1G, user, alloc)
    writer.map(3 * gib, 0x30_0000, SIZE_4K, 0, alloc)  # a page table whose link is broken below

    def slot(va: int, level: int) -> int:
        step = next(s for s in writer.translate(va).steps if s.level == level)
        return step.table + 8 * step.index

    def edit(va: int, level: int, set_bits: int = 0, clear_bits: int = 0) -> None:
        at = slot(va, level)
        write_u64(mem, at, read_u64(mem, at) & ~clear_bits | set_bits)

    edit(gib + SIZE_2M, 2, clear_bits=user, set_bits=nx)  # the second page table's leaves
    edit(gib + 5 * 0x1000, 1, set_bits=1 << 45)  # reserved with MAXPHYADDR 40
    edit(gib + 6 * 0x1000, 1, clear_bits=PageTableFlags.PRESENT)  # an OS-owned entry
    edit(gib + SIZE_2M + 0x1000, 1, set_bits=1 << 45)
    edit(4 * gib, 3, set_bits=1 << 14)  # a reserved low frame bit of the 1 GiB page
    edit(3 * gib, 2, set_bits=0xFFFF_F000, clear_bits=0xF_FFFF_F000)  # links outside RAM
    # The addresses: mapped, in known regions but unmapped, broken, non-canonical, out of range.
    pages = [gib + i * 0x1000 for i in range(9)] + [gib + SIZE_2M + i * 0x1000 for i in range(9)]
    pages += [gib + 4 * SIZE_2M + 0x5000, 2 * gib + 0x1234_5000, 3 * gib, 3 * gib + 0x7000]
    pages += [4 * gib + 0x5000]
    pages += [gib + 7 * SIZE_2M, 5 * gib, 1 << 46, 1 << 47, 1 << 56, 0xFFFF_8000_0000_0000]
    addresses = [p + offset for p in pages for offset in (0x123, 0xFFF)]
    addresses += [-1, 1 << 64, 0x8000_0000_0000_0000]
    fresh = X86PageTable(mem, root, levels, max_phys_bits=40, cache=True)
    uncached = X86PageTable(mem, root, levels, max_phys_bits=40)
    expected = [_outcome(uncached, va) for va in addresses]
    assert {e[0] for e in expected if not isinstance(e, Translation)} == {  # type: ignore[index]
        NotMappedError,
        ReservedBitsError,
        TableOutsideRamError,
        NonCanonicalAddressError,
        AddressOutOfRangeError,
    }
    leaves = [t for t in expected if isinstance(t, Translation)]
    assert {(t.page_size, t.user, t.writable, t.executable) for t in leaves} == {
        (SIZE_4K, False, False, True),
        (SIZE_4K, True, False, True),
        (SIZE_4K, False, True, True),
        (SIZE_4K, False, False, False),
        (SIZE_4K, False, True, False),
        (SIZE_2M, False, True, False),
        (SIZE_1G, True, False, True),
    }
    for _ in range(2):  # the second round from the memo
        assert [_outcome(fresh, va) for va in addresses] == expected
    # Each region first met through another address than in the order above.
    again = X86PageTable(mem, root, levels, max_phys_bits=40, cache=True)
    assert [_outcome(again, va) for va in reversed(addresses)] == expected[::-1]


def test_summaries_by_content_outlive_a_change_and_only_changed_tables_are_summarised_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A walk after an outside change (a live target's resume) reads every table again, takes
    the summaries of unchanged leaf tables from the store and summarises the changed one; its
    records equal those of a fresh table without a store."""
    from gdbext.x86 import runs

    store: runs.SummaryStore = {}
    mem = SparsePhysMemory(32 << 20)
    alloc = TopDownFrameAllocator(mem)
    root = alloc.allocate_frame()
    assert root is not None
    builder = X86PageTable(mem, root, 4, allow_writes=True)
    for i in range(3):  # three page tables: 2 MiB apart, a few pages each
        for k in range(4):
            va = 0x4000_0000 + i * SIZE_2M + k * SIZE_4K
            builder.map(va, 0x10_0000 + k * SIZE_4K, SIZE_4K, PageTableFlags.WRITABLE, alloc)
    made: list[tuple[int, ...]] = []
    summarise = runs.summarise

    def counting(entries: tuple[int, ...], *args: object) -> runs.LeafSummary:
        made.append(entries)
        return summarise(entries, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(runs, "summarise", counting)
    pt = X86PageTable(mem, root, 4, cache=True, summaries=store)
    first = list(pt.iter_runs())
    assert len(made) == 3 and len(store) == 3
    # Behind the table's back: one more page in the second page table.
    pte = builder.translate(0x4000_0000 + SIZE_2M).steps[-1]
    new_pte = 0x20_0000 | int(PageTableFlags.PRESENT | PageTableFlags.WRITABLE)
    write_u64(mem, pte.table + 8 * 9, new_pte)
    pt.invalidate_cache()
    second = list(pt.iter_runs())
    assert len(made) == 4 and made[-1][9] == new_pte
    assert second != first
    assert second == list(X86PageTable(mem, root, 4).iter_runs())
    pt.invalidate_cache()
    assert list(pt.iter_runs()) == second and len(made) == 4
