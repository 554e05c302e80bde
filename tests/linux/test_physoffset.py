"""``find_direct_map_base``: the direct map's base from the page tables alone.

Each scenario says where its direct map is; the expected base is that scenario value.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gdbext.linux.physoffset import direct_map_offsets, find_direct_map_base
from gdbext.x86.paging import X86PageTable
from gdbext_sim.scenario import build_machine

ROOT = Path(__file__).resolve().parents[2]


def table(doc: dict[str, Any]) -> X86PageTable:
    m = build_machine(doc)
    return X86PageTable(m.memory, m.page_table.root, m.page_table.levels)


def run(vaddr: int, paddr: int, size: str, count: int = 1) -> dict[str, Any]:
    return {"vaddr": hex(vaddr), "paddr": hex(paddr), "size": size, "count": count}


def test_demo_scenario_direct_map() -> None:
    """The demo also maps a 1 GiB page (1 GiB at one offset, more than its 256 MiB direct map),
    but only the direct map starts at physical address 0."""
    doc = json.loads((ROOT / "fixtures" / "scenarios" / "demo.json").read_text())
    pt = table(doc)
    totals, at_zero = direct_map_offsets(pt)
    assert totals[0xFFFFC90000000000 - 0x40000000] == 1 << 30
    assert totals[0xFFFF888000000000] == 256 << 20
    assert 0xFFFF888000000000 in at_zero
    assert find_direct_map_base(pt) == 0xFFFF888000000000


def test_la57_direct_map() -> None:
    mappings = [run(0xFF11000000000000, 0, "2M", 8), run(0xFFFFFFFF81000000, 0x1000000, "2M")]
    doc = {"levels": 5, "ram": "16M", "mappings": mappings}
    assert find_direct_map_base(table(doc)) == 0xFF11000000000000


@pytest.mark.parametrize(
    ("mappings", "expected"),
    [
        # KASLR-like base, in 4 KiB pages with a hole, and a kernel image at its own offset.
        (
            [
                run(0xFFFF8D1480000000, 0, "4K", 100),
                run(0xFFFF8D1480200000, 0x200000, "2M", 3),
                run(0xFFFFFFFFA7A00000, 0x1000000, "2M", 6),
            ],
            0xFFFF8D1480000000,
        ),
        # Nothing maps physical 0: the offset with the most bytes.
        (
            [
                run(0xFFFF888000100000, 0x100000, "4K", 4),
                run(0xFFFFC90000000000, 0x800000, "4K", 8),
            ],
            0xFFFFC8FFFF800000,
        ),
        # Two direct maps of physical 0: the larger one.
        (
            [run(0xFFFF888000000000, 0, "4K", 4), run(0xFFFF900000000000, 0, "4K", 8)],
            0xFFFF900000000000,
        ),
        # A tie: the lower base.
        (
            [run(0xFFFF900000000000, 0, "4K", 4), run(0xFFFF888000000000, 0, "4K", 4)],
            0xFFFF888000000000,
        ),
        # Only the lower half is mapped: none.
        ([run(0x400000, 0, "4K", 4)], None),
    ],
    ids=["kaslr", "no-zero", "larger", "tie", "none"],
)
def test_choice(mappings: list[dict[str, Any]], expected: int | None) -> None:
    assert find_direct_map_base(table({"ram": "64M", "mappings": mappings})) == expected


def test_linked_tables_count_once() -> None:
    """An ESPFIX-like table linked many times is not "more memory" at its offsets."""
    doc = {
        "ram": "16M",
        "mappings": [run(0xFFFF888000000000, 0, "4K", 16), run(0xFFFFFF0000000000, 0x0, "4K", 8)],
        "links": [{"vaddr": "0xffffff0000200000", "level": 2, "count": 60,
                   "table_of": "0xffffff0000000000"}],
    }  # fmt: skip
    totals, _ = direct_map_offsets(table(doc))
    assert totals[0xFFFFFF0000000000] == 8 * 4096
    assert find_direct_map_base(table(doc)) == 0xFFFF888000000000
