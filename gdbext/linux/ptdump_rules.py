"""The rules of Linux's ptdump walk, once: what it notes at each level, how protections combine
down a path, which ranges it walks and what it calls each level.

Linux's ptdump (``arch/x86/mm/dump_pagetables.c`` over ``mm/ptdump.c`` and
``mm/pagewalk.c``) serves both ``/sys/kernel/debug/page_tables`` and the ``CONFIG_DEBUG_WX``
check; so do these rules: :mod:`gdbext.linux.ptdump` replays the walk with them and
:mod:`gdbext.audit.checkwx` counts W+X pages with them.

**What is noted, per level** (:func:`note_kind`): an entry that is *none* (zero; below the top,
zero but for ACCESSED/DIRTY) is a hole at its level; a PUD entry with PRESENT and PSE and a PMD
entry with PSE (``pmd_leaf`` tests PSE only: present or not) are leaves; every PTE is noted, zero
(a hole) or not, present or not; a PGD or P4D entry that is not none, a present PUD entry and a
PMD entry with PRESENT or PROTNONE (the GLOBAL bit: ``pmd_present``) are descended into; any
other entry is not noted at all (its range joins the series before it).

**Protections.** The raw prot is ``val & PTE_FLAGS_MASK``; the effective prot of level *n* is
``(eff[n-1] & prot & (USR|RW)) | ((eff[n-1] | prot) & NX)`` (:func:`effective`), the top
level's its prot. A series is W+X (:func:`is_wx`) when its effective prot has RW and not NX.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from gdbext.addr import AddrRange
from gdbext.flags import ACCESSED_DIRTY, GLOBAL, NO_EXECUTE, PRESENT, WRITABLE
from gdbext.geometry import entry_span, geometry
from gdbext.x86.entries import (
    MAX_PHYS_BITS,
    PERM_KEY,
    address_mask,
    entry_rules,
    fold,
    is_leaf,
)

__all__ = [
    "GUARD_HOLE_ENTRIES",
    "HOLE",
    "LEAF",
    "LEVEL_NAMES",
    "NOT_NOTED",
    "PTE_FLAGS_MASK",
    "PTE_PFN_MASK",
    "TABLE",
    "UWNX",
    "effective",
    "guard_hole",
    "is_wx",
    "note_kind",
    "note_kinds",
    "pfn_address",
    "ptdump_level",
    "walked_ranges",
]

# --- the rules -------------------------------------------------------------------------------

#: Linux's ``PTE_PFN_MASK``: the address bits of an entry with a 52-bit physical mask, whatever
#: the CPU's MAXPHYADDR (so a large page's PAT bit 12 counts as an address bit).
PTE_PFN_MASK: Final = address_mask(MAX_PHYS_BITS)
#: Linux's ``PTE_FLAGS_MASK`` (~PTE_PFN_MASK): bits 0-11 and 52-63.
PTE_FLAGS_MASK: Final = ~PTE_PFN_MASK & ((1 << 64) - 1)
#: Ptdump's level names, by its level index.
LEVEL_NAMES: Final = ("pgd", "p4d", "pud", "pmd", "pte")
#: Entries of the top-level table in Linux's guard hole (16, from the start of the kernel half).
GUARD_HOLE_ENTRIES: Final = 16
#: What the walker does with an entry (:func:`note_kind`): notes a hole, notes a leaf,
#: descends into the table it links, or passes over it without a note.
HOLE: Final = 0
LEAF: Final = 1
TABLE: Final = 2
NOT_NOTED: Final = 3

_TOP = 1 << 64
#: The hardware's entry levels (what PSE means where), as Linux's walker sees them.
_PUD, _PMD = entry_rules(MAX_PHYS_BITS).level(3), entry_rules(MAX_PHYS_BITS).level(2)
#: The bits a path's effective prot keeps (USR, RW, NX).
UWNX: Final = PERM_KEY
#: PROTNONE (the GLOBAL bit) counts as present for pmd_present().
_PMD_PRESENT = PRESENT | GLOBAL


def note_kinds(entries: Sequence[int], level: int, levels: int) -> list[int]:
    """What ptdump's walker does with each of ``entries`` of a table at hardware ``level``
    (1 = PT) with ``levels`` paging levels: :data:`HOLE`, :data:`LEAF`, :data:`TABLE` or
    :data:`NOT_NOTED` (a whole table at a time: walks classify every entry).

    >>> note_kinds([0x60, 0x80, 0x3, 0x100, 0x2], 2, 4)
    [0, 1, 2, 2, 3]
    >>> note_kinds([0x80, 0x81], 3, 4), note_kinds([0x20], 5, 5), note_kinds([0x20], 4, 4)
    ([3, 1], [2], [0])
    >>> note_kinds([0, 0x60], 1, 4)
    [0, 1]
    """
    if level == 1:
        # Every PTE is noted; only a zero one is a hole.
        return [LEAF if e else HOLE for e in entries]
    # pgd_none() of a real PML5 is "zero"; the others ignore ACCESSED and DIRTY.
    ignored = 0 if level == levels == 5 else ACCESSED_DIRTY
    # pud_leaf() needs PRESENT and PSE, pmd_leaf() PSE only.
    leaf_present = PRESENT if level == 3 else 0
    rules = _PUD if level == 3 else _PMD
    # walk_pgd_range()/walk_p4d_range() descend into any entry that is not none;
    # walk_pud_range()/walk_pmd_range() only into present ones.
    descend = ~0 if level >= 4 else _PMD_PRESENT if level == 2 else PRESENT
    kinds = []
    for e in entries:
        if not e & ~ignored:
            kinds.append(HOLE)
        elif level <= 3 and e & leaf_present == leaf_present and is_leaf(e, rules):
            kinds.append(LEAF)
        elif e & descend:
            kinds.append(TABLE)
        else:
            kinds.append(NOT_NOTED)
    return kinds


def note_kind(entry: int, level: int, levels: int) -> int:
    """:func:`note_kinds` of one entry."""
    return note_kinds((entry,), level, levels)[0]


def effective(higher: int, entry: int) -> int:
    """The effective prot below a path whose effective prot is ``higher`` (USR, RW and NX).

    >>> hex(effective(0x8000000000000006, 0x3))
    '0x8000000000000002'
    """
    # The hardware's fold with NX always honoured: Linux sets NX only with NX support, and a
    # CPU without EFER.NXE faults on it (a reserved bit), so such an entry maps nothing W+X.
    return fold(higher, entry, NO_EXECUTE)


def pfn_address(entry: int) -> int:
    """The physical address Linux reads from ``entry`` (``pte_pfn() << PAGE_SHIFT``, through
    :data:`PTE_PFN_MASK`): the table it links, or the frame of a leaf.

    >>> hex(pfn_address(0x8000_0000_0120_10e3))
    '0x1201000'
    """
    return entry & PTE_PFN_MASK


def is_wx(eff: int) -> bool:
    """Whether a series with effective prot ``eff`` counts as W+X (RW and not NX)."""
    return eff & (WRITABLE | NO_EXECUTE) == WRITABLE


def ptdump_level(level: int, levels: int) -> int:
    """Ptdump's level index (0 ``pgd`` .. 4 ``pte``) of hardware ``level`` (1 = PT).

    >>> [ptdump_level(hw, 4) for hw in (4, 3, 2, 1)], ptdump_level(4, 5)
    ([0, 2, 3, 4], 1)
    """
    return 0 if level == levels else 5 - level


def guard_hole(levels: int) -> AddrRange:
    """Linux's guard hole at the start of the kernel half (``GUARD_HOLE_BASE_ADDR`` ..
    ``GUARD_HOLE_END_ADDR``: 16 top-level entries, 8 TB with 4 levels, 4 PB with 5), which
    ptdump and its W+X check skip.

    >>> guard_hole(4)
    AddrRange(start=0xffff800000000000, end=0xffff880000000000)
    """
    start = geometry(levels).higher_half_start
    return AddrRange(start, start + GUARD_HOLE_ENTRIES * entry_span(levels))


def walked_ranges(levels: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The two ranges ptdump walks: the lower half, and from the end of the guard hole to 2^64
    (the non-canonical gap and the guard hole join the series before them).

    >>> [(hex(a), hex(b)) for a, b in walked_ranges(4)]
    [('0x0', '0x800000000000'), ('0xffff880000000000', '0x10000000000000000')]
    """
    return (0, geometry(levels).lower_half_end), (guard_hole(levels).end, _TOP)
