"""The audit on hostile machines: alias bombs (one table linked at every level), cyclic tables,
rules given what they cannot show. Each must end in bounded work with a finding or a one-line
error, never a hang or a traceback.

Boundedness is asserted on what the work is made of (table reads, copies enumerated), not on
the clock: each test would take minutes (or hours) on the code it guards against, and fails
quickly there because the count is exceeded early.
"""

from __future__ import annotations

from typing import Any

from gdbext.audit.checkwx import CheckWx
from gdbext.commands import RootOptions, open_page_table
from gdbext.flags import ADDR_MASK_52
from gdbext.mapper import read_u64, write_u64
from gdbext.target import Target
from gdbext_sim.scenario import build_machine

#: The first PDPT entry of the bombs (its PD and PT are linked again everywhere).
BASE = 0x4000_0000


class CountingMapper:
    """A mapper that counts 4 KiB reads (table reads), and fails once there are too many."""

    def __init__(self, inner: Any, most: int) -> None:
        self.inner = inner
        self.most = most
        self.tables = 0

    def read(self, paddr: int, size: int) -> bytes:
        if size == 4096:
            self.tables += 1
            assert self.tables <= self.most, f"more than {self.most} table reads"
        data: bytes = self.inner.read(paddr, size)
        return data

    def write(self, paddr: int, data: bytes) -> None:
        self.inner.write(paddr, data)


def not_present_bomb(pdpt_links: int) -> Target:
    """A PT of 512 not-present, writable, executable entries, linked by every PD entry; that PD
    linked by ``1 + pdpt_links`` PDPT entries from :data:`BASE` on."""
    doc = {
        "levels": 4,
        "ram": "64M",
        "mappings": [
            {"vaddr": hex(BASE), "paddr": "0x100000", "size": "4K", "count": 512,
             "flags": ["WRITABLE"]},
        ],
        "entries": [
            {"vaddr": hex(BASE + i * 4096), "level": 1, "value": hex(0x100002 + i * 4096)}
            for i in range(512)
        ],
        "links": [
            {"vaddr": hex(BASE + 0x20_0000), "level": 2, "count": 511, "table_of": hex(BASE)},
            {"vaddr": hex(2 * BASE), "level": 3, "count": pdpt_links, "table_of": hex(BASE)},
        ],
    }  # fmt: skip
    return build_machine(doc).to_target()


def test_not_present_ranges_of_a_table_linked_everywhere_are_found_once_per_table() -> None:
    """The W+X check's not-present entries, listed for the low findings, once visited every
    link of every table again: 260,610 page tables of 512 entries for this machine (minutes);
    now each (table, level, path) once. The PT linked at two levels is one merged range."""
    links = 510
    target = not_present_bomb(links)
    pt = open_page_table(target, RootOptions())
    mapper = CountingMapper(target.mapper, most=20)
    ranges, more = CheckWx(mapper, 4).not_present(pt.root, limit=256)
    pages = (1 + links) * 512 * 512
    assert not more and len(ranges) == 1
    (r,) = ranges
    assert (r.vaddr, r.end, r.pages, r.user) == (BASE, BASE + pages * 4096, pages, False)
    assert r.paddr == 0x100000 and r.paddr_end is None  # the same frames again: not contiguous
    # The walk to its first entry: PML4[0], PDPT[1], PD[0], PT[0] (not present).
    assert [(level, index) for level, _, index, _ in r.steps] == [(4, 0), (3, 1), (2, 0), (1, 0)]
    assert r.steps[-1][1:] == (leaf_table(target), 0, 0x100002)
    assert CheckWx(target.mapper, 4).count(pt.root).not_present == pages


def test_not_present_ranges_past_the_limit_stop_there() -> None:
    """Ranges that do not merge (every other PTE cleared): the limit holds, and says more
    follow."""
    target = not_present_bomb(3)
    pt = open_page_table(target, RootOptions())
    table = leaf_table(target)
    for i in range(1, 512, 2):
        write_u64(target.mapper, table + 8 * i, 0)
    ranges, more = CheckWx(CountingMapper(target.mapper, most=20), 4).not_present(pt.root, 10)
    assert more and len(ranges) == 10
    assert [(r.vaddr, r.pages) for r in ranges] == [(BASE + 2 * i * 4096, 1) for i in range(10)]


def leaf_table(target: Target) -> int:
    """The PT of a bomb (all its entries are not present: found from the PD entry)."""
    table = open_page_table(target, RootOptions()).root
    for level in (4, 3, 2):
        index = (BASE >> (12 + 9 * (level - 1))) & 0x1FF
        table = read_u64(target.mapper, table + 8 * index) & ADDR_MASK_52
    return table
