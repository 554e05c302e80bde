"""The rules of an x86-64 paging-structure entry, level by level, as data.

This is the one place that knows what a 64-bit entry means (Intel SDM vol. 3, 4.5):

- an entry maps nothing unless PRESENT is set;
- a present entry is a **leaf** at level 1 always, at levels 2 and 3 (PD, PDPT) when PS
  (``HUGE_PAGE``) is set; otherwise it **links** the table of the level below. At levels 4 and 5
  (PML4, PML5) PS is reserved: such an entry is never a leaf;
- address bits at or above MAXPHYADDR are reserved, bit 63 (NX) is reserved without EFER.NXE,
  and a 2 MiB or 1 GiB leaf reserves the low bits of its frame number (13..20, 13..29; bit 12
  is its PAT bit);
- effective permissions fold down a walk: writable and user are ANDed over every level,
  no-execute is ORed (and means something only with EFER.NXE).

The rules of one CPU configuration are an :class:`EntryRules` (from :func:`entry_rules`, cached),
holding one :class:`LevelRules` of precomputed masks per level, so that a hot walk loop does
integer arithmetic only. The small functions below take the rules explicitly.

>>> rules = entry_rules(max_phys_bits=46)
>>> pd = rules.level(2)
>>> e = 0x8000_0000_0120_00e3            # PRESENT|WRITABLE|ACCESSED|DIRTY|PS, NX, frame 0x1200000
>>> is_present(e), is_leaf(e, pd), hex(frame_address(e, pd)), reserved_bits(e, pd)
(True, True, '0x1200000', 0)
>>> hex(reserved_bits(e | 1 << 47, pd)), hex(reserved_bits(e | 1 << 13, pd))
('0x800000000000', '0x2000')
>>> pml4 = rules.level(4)
>>> is_leaf(0x2083, pml4), huge_forbidden(0x2083, pml4), hex(link_address(0x2003, pml4))
(False, True, '0x2000')
>>> access(fold(fold(ROOT_ACCESS, 0x2007, rules.nx_bit), 0x8000_0000_0000_3003, rules.nx_bit))
(False, True, False)
"""

from __future__ import annotations

from functools import cache
from typing import NamedTuple

from gdbext.errors import PhysBitsError
from gdbext.flags import HUGE_PAGE, NO_EXECUTE, PRESENT, USER_ACCESSIBLE, WRITABLE
from gdbext.geometry import PAGE_SHIFT, entry_span, index_shift

__all__ = [
    "MAX_PHYS_BITS",
    "MIN_PHYS_BITS_ACCEPTED",
    "PERM_BITS",
    "PERM_KEY",
    "ROOT_ACCESS",
    "Entry",
    "EntryRules",
    "LevelRules",
    "access",
    "access_by_leaf",
    "address_mask",
    "decode",
    "entry_rules",
    "fold",
    "frame_address",
    "huge_forbidden",
    "is_leaf",
    "is_link",
    "is_present",
    "link_address",
    "reserved_bits",
]

#: The architectural maximum MAXPHYADDR (and what is assumed when a target does not say).
MAX_PHYS_BITS = 52
#: The narrowest MAXPHYADDR accepted (architecturally every x86-64 CPU has at least 36).
MIN_PHYS_BITS_ACCEPTED = 32
#: The bits of an entry that are ANDed down a walk (writable, user).
PERM_BITS = USER_ACCESSIBLE | WRITABLE
#: The bits of a leaf that decide its effective permissions.
PERM_KEY = USER_ACCESSIBLE | WRITABLE | NO_EXECUTE
#: The effective-permission accumulator at the root: nothing restricted yet.
ROOT_ACCESS = USER_ACCESSIBLE | WRITABLE
#: Bits 0..51: everything that is not the high flag bits 52..63.
_LOW_52 = (1 << 52) - 1


class LevelRules(NamedTuple):
    """What an entry at one paging level may be, as precomputed masks.

    A present entry is a leaf if ``always_leaf`` (level 1), or if ``ps_leaf`` (levels 2 and 3)
    and it has HUGE_PAGE set; otherwise it links a table (levels 2..5).
    """

    level: int
    #: Bit position of this level's index in a virtual address.
    shift: int
    #: Bytes of virtual address space one entry maps.
    span: int
    always_leaf: bool
    ps_leaf: bool
    #: Reserved bits of a present entry that links a table (PS included at levels 4 and 5).
    link_reserved: int
    #: Reserved bits of a present leaf (0 at levels 4 and 5, which have no leaves).
    leaf_reserved: int
    #: The bits of an entry that hold the address of the table it links (0 at level 1).
    link_mask: int
    #: The bits of a leaf that hold its frame (the low frame bits of a large page excluded).
    frame_mask: int
    #: The address bits of any entry: bits 12 up to MAXPHYADDR - 1.
    addr_mask: int


class EntryRules(NamedTuple):
    """Entry rules of one CPU configuration: MAXPHYADDR and EFER.NXE.

    ``levels[n - 1]`` holds the rules of level ``n`` (1..5); :meth:`level` reads them.
    """

    max_phys_bits: int
    nxe: bool
    #: Address bits of a table link or 4 KiB frame: bits 12 up to MAXPHYADDR - 1.
    addr_mask: int
    #: NO_EXECUTE with EFER.NXE, else 0: the bit :func:`fold` ORs.
    nx_bit: int
    levels: tuple[LevelRules, ...]
    #: Address bits at or above MAXPHYADDR (up to bit 51): reserved at every level.
    phys_reserved: int

    def level(self, level: int) -> LevelRules:
        """The rules of entries at ``level`` (1 = PT ... 5 = PML5)."""
        return self.levels[level - 1]

    def top_down(self, levels: int) -> tuple[LevelRules, ...]:
        """The rules of a ``levels``-level walk (4 or 5), top level first."""
        return self.levels[levels - 1 :: -1]


def address_mask(max_phys_bits: int) -> int:
    """The address bits of an entry for a CPU with ``max_phys_bits`` of physical address.

    >>> hex(address_mask(36)), hex(address_mask(52))
    ('0xffffff000', '0xffffffffff000')
    """
    return ((1 << max_phys_bits) - 1) & ~((1 << PAGE_SHIFT) - 1)


@cache
def entry_rules(max_phys_bits: int = MAX_PHYS_BITS, nxe: bool = True) -> EntryRules:
    """The entry rules for MAXPHYADDR ``max_phys_bits`` and EFER.NXE ``nxe`` (cached).

    :raises PhysBitsError: ``max_phys_bits`` outside 32..52.

    >>> r = entry_rules(36, nxe=False)
    >>> hex(r.level(1).leaf_reserved), hex(r.level(3).leaf_reserved)
    ('0x800ffff000000000', '0x800ffff03fffe000')
    >>> hex(r.level(4).link_reserved), r.level(4).leaf_reserved
    ('0x800ffff000000080', 0)
    """
    if not MIN_PHYS_BITS_ACCEPTED <= max_phys_bits <= MAX_PHYS_BITS:
        raise PhysBitsError(max_phys_bits, MIN_PHYS_BITS_ACCEPTED, MAX_PHYS_BITS)
    addr = address_mask(max_phys_bits)
    base = _LOW_52 & ~((1 << max_phys_bits) - 1)  # address bits at or above MAXPHYADDR
    if not nxe:
        base |= NO_EXECUTE
    per_level = []
    for level in range(1, 6):
        span = entry_span(level)
        if level == 1:
            leaf_rsvd = base
        elif level <= 3:
            # The frame number's low bits below the page size, except bit 12 (PAT).
            leaf_rsvd = base | ((span - 1) & ~((1 << (PAGE_SHIFT + 1)) - 1))
        else:
            leaf_rsvd = 0
        per_level.append(
            LevelRules(
                level=level,
                shift=index_shift(level),
                span=span,
                always_leaf=level == 1,
                ps_leaf=level in (2, 3),
                link_reserved=base | (HUGE_PAGE if level >= 4 else 0),
                leaf_reserved=leaf_rsvd,
                link_mask=addr if level > 1 else 0,
                frame_mask=addr & ~(span - 1) if level <= 3 else 0,
                addr_mask=addr,
            )
        )
    above = _LOW_52 & ~((1 << max_phys_bits) - 1)
    return EntryRules(max_phys_bits, nxe, addr, NO_EXECUTE if nxe else 0, tuple(per_level), above)


def is_present(entry: int) -> bool:
    """True if ``entry`` has PRESENT set: only then does it map or link anything.

    >>> is_present(0x1000), is_present(0x1001)
    (False, True)
    """
    return bool(entry & PRESENT)


def is_leaf(entry: int, rules: LevelRules) -> bool:
    """True if the present ``entry`` at ``rules.level`` maps a page rather than links a table.

    >>> r = entry_rules()
    >>> is_leaf(0x1001, r.level(1)), is_leaf(0x1081, r.level(2)), is_leaf(0x1001, r.level(2))
    (True, True, False)
    """
    return rules.always_leaf or (rules.ps_leaf and bool(entry & HUGE_PAGE))


def is_link(entry: int, rules: LevelRules) -> bool:
    """True if ``entry`` is present and links a table (no reserved bit checked).

    >>> r = entry_rules()
    >>> is_link(0x2003, r.level(4)), is_link(0x2002, r.level(4)), is_link(0x2083, r.level(3))
    (True, False, False)
    """
    return bool(entry & PRESENT) and not is_leaf(entry, rules)


def huge_forbidden(entry: int, rules: LevelRules) -> bool:
    """True if ``entry`` has PS set at a level that reserves it (PML4, PML5).

    >>> r = entry_rules()
    >>> huge_forbidden(0x2083, r.level(5)), huge_forbidden(0x2083, r.level(3))
    (True, False)
    """
    return rules.level >= 4 and bool(entry & HUGE_PAGE)


def reserved_bits(entry: int, rules: LevelRules) -> int:
    """The reserved bits set in the present ``entry``, read as the leaf or link it is.

    >>> r = entry_rules(40, nxe=False)
    >>> hex(reserved_bits(0x8000_0000_0000_1001, r.level(1)))
    '0x8000000000000000'
    >>> hex(reserved_bits(0x0000_0100_0000_1003, r.level(4)))     # bit 40 >= MAXPHYADDR
    '0x10000000000'
    """
    if rules.always_leaf or (rules.ps_leaf and entry & HUGE_PAGE):
        return entry & rules.leaf_reserved
    return entry & rules.link_reserved


def link_address(entry: int, rules: LevelRules) -> int:
    """The physical address of the table that the linking ``entry`` points to.

    >>> hex(link_address(0x8000_0000_0345_6067, entry_rules().level(2)))
    '0x3456000'
    """
    return entry & rules.link_mask


def frame_address(entry: int, rules: LevelRules) -> int:
    """The physical address of the page that the leaf ``entry`` maps (PAT bit 12 of a large
    page and the flag bits left out).

    >>> hex(frame_address(0x8000_0000_4000_10e3, entry_rules().level(3)))
    '0x40000000'
    """
    return entry & rules.frame_mask


def fold(acc: int, entry: int, nx_bit: int) -> int:
    """The effective-permission accumulator ``acc`` restricted by one more ``entry``.

    WRITABLE and USER_ACCESSIBLE are ANDed, ``nx_bit`` (:attr:`EntryRules.nx_bit`: NO_EXECUTE,
    or 0 without EFER.NXE) is ORed. Start from :data:`ROOT_ACCESS`.

    >>> hex(fold(ROOT_ACCESS, 0x8000_0000_0000_1003, NO_EXECUTE))
    '0x8000000000000002'
    """
    return (acc & entry & PERM_BITS) | ((acc | entry) & nx_bit)


def access(acc: int) -> tuple[bool, bool, bool]:
    """``(user, writable, executable)`` of an effective-permission accumulator.

    >>> access(ROOT_ACCESS), access(NO_EXECUTE)
    ((True, True, True), (False, False, False))
    """
    return bool(acc & USER_ACCESSIBLE), bool(acc & WRITABLE), not acc & NO_EXECUTE


@cache
def access_by_leaf(acc: int, nx_bit: int) -> dict[int, tuple[bool, bool, bool]]:
    """The effective permissions of a leaf below the accumulator ``acc``, by the leaf's
    :data:`PERM_KEY` bits: ``access_by_leaf(acc, nx_bit)[leaf & PERM_KEY]`` is
    ``access(fold(acc, leaf, nx_bit))`` (:func:`fold` reads no other bit of the leaf), one
    dictionary look-up for a walk that meets many leaves below one table (cached).

    >>> access_by_leaf(ROOT_ACCESS, NO_EXECUTE)[NO_EXECUTE | WRITABLE]
    (False, True, False)
    """
    keys = [u | w | x for u in (0, USER_ACCESSIBLE) for w in (0, WRITABLE) for x in (0, NO_EXECUTE)]
    return {key: access(fold(acc, key, nx_bit)) for key in keys}


class Entry(NamedTuple):
    """One entry decoded (:func:`decode`): for reports and checks, not for hot loops."""

    value: int
    level: int
    present: bool
    leaf: bool
    #: The table linked or the frame mapped (0 for a non-present entry).
    address: int
    #: Reserved bits set (0 for a non-present entry: the OS owns its bits).
    reserved: int

    @property
    def link(self) -> bool:
        """True if the entry is present and links a lower table."""
        return self.present and not self.leaf


def decode(value: int, level: int, rules: EntryRules) -> Entry:
    """``value``, an entry at ``level``, decoded under ``rules``.

    >>> decode(0x8000_0000_0020_00e3, 2, entry_rules())
    Entry(value=9223372036856873187, level=2, present=True, leaf=True, address=2097152, reserved=0)
    >>> decode(0x2003, 4, entry_rules()).link, decode(0x2002, 4, entry_rules()).address
    (True, 0)
    """
    lr = rules.levels[level - 1]
    if not value & PRESENT:
        return Entry(value, level, False, False, 0, 0)
    if is_leaf(value, lr):
        return Entry(value, level, True, True, value & lr.frame_mask, value & lr.leaf_reserved)
    return Entry(value, level, True, False, value & lr.link_mask, value & lr.link_reserved)
