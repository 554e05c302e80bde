"""Where a QEMU guest's RAM is: parsed from ``monitor info mtree -f``.

In PhyMemMode QEMU returns zeros for physical reads outside RAM instead of failing, so the live
backend checks every read against the RAM ranges found here.

``info mtree -f`` prints one *flat view* per address space; the one that serves the ``memory``
address space lists the guest's physical memory map, one region a line::

    FlatView #0
     AS "memory", root: system
     Root memory region: system
      0000000000000000-000000000009ffff (prio 0, ram): pc.ram
      00000000000c0000-00000000000cafff (prio 0, rom): pc.ram @00000000000c0000
      00000000fd000000-00000000fdffffff (prio 1, ram): vga.vram

A region is RAM when its backing block is the machine's RAM (``pc.ram``, ``ram-below-4g``,
``ram-above-4g``, or another ``*.ram`` block that is not video RAM), whether QEMU marks that
piece ``ram`` or ``rom`` (the BIOS shadows are pieces of ``pc.ram`` and read like RAM).

>>> text = '''FlatView #0
...  AS "memory", root: system
...  Root memory region: system
...   0000000000000000-000000000009ffff (prio 0, ram): pc.ram
...   00000000000a0000-00000000000bffff (prio 1, i/o): vga-lowmem
...   00000000000c0000-00000000000cafff (prio 0, rom): pc.ram @00000000000c0000
...   00000000000cb000-0000000007ffffff (prio 0, ram): pc.ram @00000000000cb000
...   00000000fd000000-00000000fdffffff (prio 1, ram): vga.vram
... '''
>>> ram = RamRanges(parse_mtree_ram(text))
>>> ram.describe()
'0x0-0xa0000, 0xc0000-0x8000000'
>>> ram.contains(0x1000, 4096), ram.contains(0x9f000, 0x2000), ram.contains(0x8000000, 8)
(True, False, False)
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from dataclasses import dataclass

from gdbext.addr import AddrRange, merge_ranges

#: RAM blocks of QEMU's x86 machines (pc, q35): the flat view names the block itself.
RAM_BLOCKS = frozenset({"pc.ram", "ram-below-4g", "ram-above-4g"})

_REGION = re.compile(
    r"^\s*([0-9a-f]+)-([0-9a-f]+)\s+\(prio\s+-?\d+,\s*([a-z-]+)\):\s+(\S+)", re.IGNORECASE
)
_FLATVIEW = re.compile(r"^\s*FlatView\s+#\d+", re.IGNORECASE)
_MEMORY_AS = re.compile(r'^\s*AS\s+"memory"', re.IGNORECASE)


def is_ram_block(name: str) -> bool:
    """True for the name of a guest-RAM block (``pc.ram``, ``ram-above-4g``, ``node0.ram``).

    >>> is_ram_block("pc.ram"), is_ram_block("vga.vram"), is_ram_block("pc.bios")
    (True, False, False)
    """
    if name in RAM_BLOCKS:
        return True
    return name.endswith(".ram") and "vram" not in name


@dataclass(frozen=True)
class RamPiece:
    """One RAM line of the ``memory`` flat view: ``[start, end)`` of the guest's physical
    addresses, a slice of one RAM block (so one run of the block's host memory)."""

    start: int
    end: int
    #: The RAM block's name (``pc.ram``).
    block: str


def parse_mtree_pieces(text: str) -> list[RamPiece]:
    r"""The RAM lines of the ``memory`` address space in ``info mtree -f`` output, sorted and
    not merged (the host read path maps each on its own).

    >>> parse_mtree_pieces(
    ...     'FlatView #0\n AS "memory", root: system\n'
    ...     '  0000000000000000-000000000009ffff (prio 0, ram): pc.ram\n'
    ...     '  00000000000c0000-00000000000cafff (prio 0, rom): pc.ram @00000000000c0000\n'
    ... )[1]
    RamPiece(start=786432, end=831488, block='pc.ram')
    """
    pieces: list[RamPiece] = []
    in_memory_view = False
    seen_view = False
    for line in text.splitlines():
        if _FLATVIEW.match(line):
            if in_memory_view:
                break  # the memory view is over
            seen_view = True
            continue
        if _MEMORY_AS.match(line):
            in_memory_view = True
            continue
        if seen_view and not in_memory_view:
            continue
        m = _REGION.match(line)
        if m is None:
            continue
        start, last, kind, name = int(m[1], 16), int(m[2], 16), m[3].lower(), m[4]
        if kind in ("ram", "rom", "romd") and is_ram_block(name) and last >= start:
            pieces.append(RamPiece(start, last + 1, name))
    return sorted(pieces, key=lambda p: p.start)


def parse_mtree_ram(text: str) -> list[AddrRange]:
    """The merged RAM ranges of the ``memory`` address space in ``info mtree -f`` output.

    Empty when the output has no such flat view or no RAM region in it.
    """
    return merge_ranges([AddrRange(p.start, p.end) for p in parse_mtree_pieces(text)])


class RamRanges:
    """Sorted, disjoint RAM ranges with a fast "is this read inside RAM" check."""

    def __init__(self, ranges: Sequence[AddrRange]) -> None:
        self.ranges = merge_ranges(ranges)
        self._starts = [r.start for r in self.ranges]

    def contains(self, paddr: int, size: int) -> bool:
        """True if all of ``[paddr, paddr + size)`` lies in one RAM range."""
        i = bisect.bisect_right(self._starts, paddr) - 1
        return i >= 0 and paddr + size <= self.ranges[i].end

    def describe(self) -> str:
        """The ranges for people: ``0x0-0xa0000, 0xc0000-0x8000000``."""
        return ", ".join(f"0x{r.start:x}-0x{r.end:x}" for r in self.ranges)
