"""Where a kernel booted by the rust-osdev ``bootloader`` crate would put its heap.

A bootloader hands the kernel a memory map (:class:`MemoryRegion` entries, read by
:mod:`gdbext.bootinfo` or :mod:`gdbext.memmap`). The heap locator picks the largest ``Usable``
region, aligned inward to 4 KiB, and moves it into the higher half through the direct map at
``physical_memory_offset``.

>>> regions = [
...     MemoryRegion(0x0, 0x1000, "Bootloader"),
...     MemoryRegion(0x100800, 0x300000, "Usable"),
...     MemoryRegion(0x400000, 0x500000, "Usable"),
... ]
>>> locate_kernel_heap(regions, 0xFFFF800000000000)
AddrRange(start=0xffff800000101000, end=0xffff800000300000)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gdbext.addr import U64_MAX, AddrRange, align_down, align_up
from gdbext.errors import InputError, NoUsableMemoryError
from gdbext.geometry import PAGE_SIZE

#: The kind name of regions the kernel may use freely (v0.9 and v0.11 spell it alike).
USABLE = "Usable"


@dataclass(frozen=True)
class MemoryRegion:
    """The physical range ``[start, end)`` and the kind the bootloader gave it.

    ``kind`` is the variant name as the crate's ``Debug`` prints it: ``"Usable"``,
    ``"Bootloader"``, ``"UnknownUefi(7)"``, ``"UnknownBios(2)"`` (v0.11); ``"Usable"``,
    ``"InUse"``, ``"Reserved"``, ... ``"NonExhaustive"`` (v0.9).

    >>> MemoryRegion(0x1000, 0x3000, "Usable").is_usable
    True
    >>> MemoryRegion(0x1000, 0x3000, "Usable").size
    8192
    """

    start: int
    end: int
    kind: str

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end <= U64_MAX + 1:
            raise ValueError(f"bad memory region 0x{self.start:x}-0x{self.end:x}")

    @property
    def is_usable(self) -> bool:
        return self.kind == USABLE

    @property
    def size(self) -> int:
        return self.end - self.start

    def __repr__(self) -> str:
        return f"MemoryRegion(start=0x{self.start:x}, end=0x{self.end:x}, kind={self.kind!r})"


def usable_ranges(memory_regions: Iterable[MemoryRegion]) -> list[AddrRange]:
    """The ``Usable`` regions aligned inward to 4 KiB (start up, end down), empty ones dropped.

    Physical addresses, in map order.

    >>> usable_ranges([MemoryRegion(0x1, 0x2001, "Usable"), MemoryRegion(0x10, 0xFFF, "Usable")])
    [AddrRange(start=0x1000, end=0x2000)]
    """
    ranges = []
    for region in memory_regions:
        if not region.is_usable:
            continue
        start, end = align_up(region.start, PAGE_SIZE), align_down(region.end, PAGE_SIZE)
        if start < end:
            ranges.append(AddrRange(start, end))
    return ranges


def locate_kernel_heap(
    memory_regions: Iterable[MemoryRegion], physical_memory_offset: int
) -> AddrRange:
    """The virtual range of the largest ``Usable`` region, seen through the direct map.

    Every ``Usable`` region is aligned inward to 4 KiB; the largest non-empty one wins (on a
    tie, the one at the lowest address) and is moved up by ``physical_memory_offset``. The
    result is virtual, end exclusive.

    Raises :class:`~gdbext.errors.NoUsableMemoryError` if no ``Usable`` region holds a whole
    4 KiB page, and :class:`~gdbext.errors.InputError` if the offset is negative or the moved
    range would not fit in 64 bits.

    >>> locate_kernel_heap([MemoryRegion(0x2000, 0x4000, "Usable")], 0x10000)
    AddrRange(start=0x12000, end=0x14000)
    """
    if physical_memory_offset < 0:
        raise InputError(f"physical_memory_offset -0x{-physical_memory_offset:x} is negative")
    candidates = usable_ranges(memory_regions)
    if not candidates:
        raise NoUsableMemoryError()
    best = min(candidates, key=lambda r: (-r.size, r.start))
    end = best.end + physical_memory_offset
    if end > U64_MAX + 1:
        raise InputError(
            f"heap region 0x{best.start:x}-0x{best.end:x} plus physical_memory_offset "
            f"0x{physical_memory_offset:x} ends at 0x{end:x}, beyond the 64-bit address space"
        )
    return AddrRange(best.start + physical_memory_offset, end)
