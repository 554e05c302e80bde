"""The opt-in table cache and translation memo of X86PageTable never serve stale results
for changes made through the page table, and forget everything on invalidate_cache()."""

from __future__ import annotations

import pytest

from gdbext.errors import NotMappedError
from gdbext.flags import PageTableFlags
from gdbext.mapper import read_u64, write_u64
from gdbext.x86.paging import SIZE_2M, SIZE_4K, X86PageTable
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
