"""Paging geometry as data: what differs between 4-level and 5-level (LA57) paging.

Levels are numbered as the hardware does: ``1`` is the page table (PT) whose entries map
4 KiB pages, ``2`` the page directory (PD, 2 MiB leaves), ``3`` the PDPT (1 GiB leaves), ``4``
the PML4 and ``5`` the PML5.

>>> FOUR_LEVEL.va_bits, FIVE_LEVEL.va_bits
(48, 57)
>>> FOUR_LEVEL.indices(0xffff800000201000)
(256, 0, 1, 1)
>>> hex(entry_span(2))
'0x200000'
"""

from __future__ import annotations

from typing import NamedTuple

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
ENTRIES_PER_TABLE = 512
ENTRY_SIZE = 8
TABLE_SIZE = ENTRIES_PER_TABLE * ENTRY_SIZE

SIZE_4K = 1 << 12
SIZE_2M = 1 << 21
SIZE_1G = 1 << 30

#: The level whose entries map each supported page size.
LEAF_LEVEL_OF_SIZE = {SIZE_4K: 1, SIZE_2M: 2, SIZE_1G: 3}
#: Levels at which an entry with HUGE_PAGE set is a leaf (x86-64: PD and PDPT).
HUGE_LEAF_LEVELS = frozenset({2, 3})

#: Hardware names of paging levels, by level number (1 = page table ... 5 = PML5).
LEVEL_NAMES = {1: "PT", 2: "PD", 3: "PDPT", 4: "PML4", 5: "PML5"}
#: Linux's names for the same tables, used by ptdump-style output.
LINUX_LEVEL_NAMES = {1: "pte", 2: "pmd", 3: "pud", 4: "p4d", 5: "pgd"}


def level_name(level: int) -> str:
    """The hardware name of a paging level (``1`` is ``"PT"``, ``4`` is ``"PML4"``)."""
    return LEVEL_NAMES.get(level, f"level-{level}")


def entry_span(level: int) -> int:
    """Bytes of virtual address space one entry at ``level`` covers."""
    return 1 << (PAGE_SHIFT + 9 * (level - 1))


def index_shift(level: int) -> int:
    """Bit position of the table index for ``level`` in a virtual address."""
    return PAGE_SHIFT + 9 * (level - 1)


class PagingGeometry(NamedTuple):
    """Everything that depends on the number of paging levels."""

    levels: int

    @property
    def va_bits(self) -> int:
        """Bits of virtual address the MMU translates: 48 or 57."""
        return PAGE_SHIFT + 9 * self.levels

    @property
    def top_level(self) -> int:
        return self.levels

    @property
    def lower_half_end(self) -> int:
        """The first non-canonical address above the lower half (exclusive end)."""
        return 1 << (self.va_bits - 1)

    @property
    def higher_half_start(self) -> int:
        """The first canonical address of the higher half."""
        return (1 << 64) - (1 << (self.va_bits - 1))

    def is_canonical(self, vaddr: int) -> bool:
        """True if bits 63..va_bits-1 of ``vaddr`` are all equal."""
        top = vaddr >> (self.va_bits - 1)
        return top == 0 or top == (1 << (65 - self.va_bits)) - 1

    def canonicalize(self, vaddr: int) -> int:
        """Sign-extend bit ``va_bits - 1`` into bits 63..va_bits (and drop bits above 63)."""
        vaddr &= (1 << self.va_bits) - 1
        if vaddr >> (self.va_bits - 1):
            vaddr |= ((1 << 64) - 1) ^ ((1 << self.va_bits) - 1)
        return vaddr

    def indices(self, vaddr: int) -> tuple[int, ...]:
        """Table indices of ``vaddr``, top level first."""
        return tuple((vaddr >> index_shift(level)) & 0x1FF for level in range(self.levels, 0, -1))


FOUR_LEVEL = PagingGeometry(4)
FIVE_LEVEL = PagingGeometry(5)


def geometry(levels: int) -> PagingGeometry:
    """The geometry for 4 or 5 levels; :class:`ValueError` for anything else."""
    if levels == 4:
        return FOUR_LEVEL
    if levels == 5:
        return FIVE_LEVEL
    raise ValueError(f"x86-64 paging has 4 or 5 levels, not {levels}")
