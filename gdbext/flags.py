"""Page-table entry bits, named as the rust-osdev ``x86_64`` crate names them.

>>> PageTableFlags.PRESENT | PageTableFlags.WRITABLE
<PageTableFlags.PRESENT|WRITABLE: 3>
>>> flag_names(0x8000000000000063)
['PRESENT', 'WRITABLE', 'ACCESSED', 'DIRTY', 'NO_EXECUTE']
"""

from __future__ import annotations

import enum

from gdbext.units import shown


class PageTableFlags(enum.IntFlag):
    """Bits of a 64-bit page-table entry (Intel SDM vol. 3, 4.5)."""

    PRESENT = 1 << 0
    WRITABLE = 1 << 1
    USER_ACCESSIBLE = 1 << 2
    WRITE_THROUGH = 1 << 3
    NO_CACHE = 1 << 4
    ACCESSED = 1 << 5
    DIRTY = 1 << 6
    #: PS in PDPT/PD entries; in a 4 KiB PTE the same bit is PAT.
    HUGE_PAGE = 1 << 7
    GLOBAL = 1 << 8
    BIT_9 = 1 << 9
    BIT_10 = 1 << 10
    BIT_11 = 1 << 11
    BIT_52 = 1 << 52
    BIT_53 = 1 << 53
    BIT_54 = 1 << 54
    BIT_55 = 1 << 55
    BIT_56 = 1 << 56
    BIT_57 = 1 << 57
    BIT_58 = 1 << 58
    BIT_59 = 1 << 59
    BIT_60 = 1 << 60
    BIT_61 = 1 << 61
    BIT_62 = 1 << 62
    NO_EXECUTE = 1 << 63


#: Every bit that is a flag rather than part of the address (bits 0-11 and 52-63).
FLAGS_MASK = 0xFFF0_0000_0000_0FFF
#: The address bits of an entry for the architectural maximum MAXPHYADDR of 52.
ADDR_MASK_52 = 0x000F_FFFF_FFFF_F000
#: Bit 12 of a 2 MiB or 1 GiB leaf: the PAT bit, not part of the frame address.
PAT_LARGE = 1 << 12

PRESENT = int(PageTableFlags.PRESENT)
WRITABLE = int(PageTableFlags.WRITABLE)
USER_ACCESSIBLE = int(PageTableFlags.USER_ACCESSIBLE)
HUGE_PAGE = int(PageTableFlags.HUGE_PAGE)
GLOBAL = int(PageTableFlags.GLOBAL)
NO_EXECUTE = int(PageTableFlags.NO_EXECUTE)
ACCESSED_DIRTY = int(PageTableFlags.ACCESSED | PageTableFlags.DIRTY)

_NAMED = [(int(f), f.name or "") for f in PageTableFlags]


def flag_names(entry: int) -> list[str]:
    """The names of the flag bits set in ``entry``, lowest bit first (address bits ignored)."""
    return [name for bit, name in _NAMED if entry & bit]


def parse_flags(names: list[str] | tuple[str, ...]) -> PageTableFlags:
    """``["WRITABLE", "NO_EXECUTE"]`` -> flags; unknown names raise :class:`ValueError`."""
    value = PageTableFlags(0)
    for name in names:
        key = name.strip().upper()
        try:
            value |= PageTableFlags[key]
        except KeyError:
            raise ValueError(f"unknown page-table flag {shown(name)}") from None
    return value


def perm_text(user: bool, writable: bool, executable: bool) -> str:
    """Effective permissions as ``"rw-"``, then ``user`` or ``kern``: how findings and walks
    name them.

    >>> perm_text(False, True, True), perm_text(True, False, False)
    ('rwx kern', 'r-- user')
    """
    rwx = "r" + ("w" if writable else "-") + ("x" if executable else "-")
    return rwx + (" user" if user else " kern")
