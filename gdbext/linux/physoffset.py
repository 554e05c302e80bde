"""The direct map's base (``physical_memory_offset``, Linux's ``page_offset_base``) from the
page tables alone.

A kernel that maps all physical memory at one constant offset (Linux's direct map, the
rust-osdev bootloader's ``map_physical_memory``) maps physical address 0 at ``base`` and has, in
the higher half, more bytes mapped at ``VA - PA == base`` than at any other offset: the kernel
image, vmalloc and the fixmap map a few megabytes each at their own offsets.
:func:`find_direct_map_base` walks the higher half once and returns the offset that maps the
most bytes, preferring offsets whose mapping starts at physical address 0 (a single large
device mapping, such as a 1 GiB ioremap, does not).

>>> from gdbext_sim.memory import SparsePhysMemory, TopDownFrameAllocator
>>> from gdbext.x86.paging import SIZE_2M, X86PageTable
>>> mem = SparsePhysMemory(64 << 20)
>>> alloc = TopDownFrameAllocator(mem)
>>> pt = X86PageTable(mem, alloc.allocate_frame(), 4, allow_writes=True)
>>> _ = pt.map_range(0xffff888000000000, 0, 32 << 20, SIZE_2M, 0, alloc)  # 32 MiB direct map
>>> _ = pt.map_range(0xffffffff81000000, 0x1000000, 4 << 20, SIZE_2M, 0, alloc)  # kernel text
>>> hex(find_direct_map_base(pt))
'0xffff888000000000'
"""

from __future__ import annotations

from gdbext.addr import AddrRange
from gdbext.flags import ACCESSED_DIRTY
from gdbext.x86.paging import X86PageTable
from gdbext.x86.records import LeafRun

__all__ = ["direct_map_offsets", "find_direct_map_base"]

_U64 = 1 << 64


def direct_map_offsets(pt: X86PageTable) -> tuple[dict[int, int], set[int]]:
    """Bytes mapped in the higher half at each constant offset ``VA - PA`` (mod 2**64), and the
    offsets at which physical address 0 is mapped.

    Only offsets that are themselves higher-half addresses count (the virtual address at which
    physical address 0 would be mapped). A table linked under several entries is counted once
    (its other links are aliases, not more memory). Raises what :meth:`X86PageTable.iter_runs`
    raises when the root table cannot be read.
    """
    lo = pt.geometry.higher_half_start
    totals: dict[int, int] = {}
    at_zero: set[int] = set()
    get = totals.get
    for rec in pt.iter_runs(AddrRange(lo, _U64), aliases="collapse", ignore=ACCESSED_DIRTY):
        if type(rec) is LeafRun:
            offset = (rec.vaddr - rec.paddr) % _U64
            if offset >= lo:
                totals[offset] = get(offset, 0) + rec.count * rec.page_size
                if rec.paddr == 0:
                    at_zero.add(offset)
    return totals, at_zero


def find_direct_map_base(pt: X86PageTable) -> int | None:
    """The higher-half base whose mapping covers the most physical memory at a constant
    ``VA - PA`` offset, or ``None`` if nothing is mapped in the higher half.

    Offsets whose mapping includes physical address 0 (at the base itself) come first; then
    the most bytes; on a tie the lowest base. The result is 4 KiB-aligned (every leaf maps a
    4 KiB-aligned frame at a 4 KiB-aligned address).
    """
    totals, at_zero = direct_map_offsets(pt)
    if not totals:
        return None
    return min(totals, key=lambda base: (base not in at_zero, -totals[base], base))
