"""The qemu-tlb renderer repeats the lines of tables linked again (collapsed walk) exactly as an
expanded walk would print them, for any range.

The expected lines are formatted here, independently, from ``iter_mappings`` (every leaf,
aliases expanded) with QEMU's ``info tlb`` rules: canonical VA, PA masked by page size, the leaf
entry's own flags ``XGPDACTUW`` with the PAT bit of 4 KiB pages hidden.
"""

from __future__ import annotations

import json

import pytest
from depth import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from gdbext.addr import AddrRange
from gdbext.errors import WalkLimitError
from gdbext.frontend import commands
from gdbext.plugin.target import Target
from gdbext.render.qemu_tlb import render_walk
from gdbext_sim.scenario import load_scenario

#: ESPFIX-like: a PT with a few leaves linked under many PD entries, a PD linked under many
#: PDPT entries, plus ordinary leaves around them.
SCENARIO = {
    "levels": 4,
    "ram": "64M",
    "nxe": True,
    "mappings": [
        {"vaddr": "0xffffff0000000000", "paddr": "0x300000", "size": "4K", "count": 3,
         "flags": ["GLOBAL", "NO_EXECUTE"]},
        {"vaddr": "0xffffff0000010000", "paddr": "0x300000", "size": "4K", "count": 1,
         "flags": ["GLOBAL", "NO_EXECUTE", "DIRTY"]},
        {"vaddr": "0xffffff0000100000", "paddr": "0x400000", "size": "4K", "count": 2,
         "flags": ["WRITABLE"]},
        {"vaddr": "0x400000", "paddr": "0x500000", "size": "4K", "count": 4,
         "flags": ["USER_ACCESSIBLE"]},
        {"vaddr": "0xffff888000000000", "paddr": "0x0", "size": "2M", "count": 8,
         "flags": ["WRITABLE", "NO_EXECUTE"]},
    ],
    "links": [
        {"vaddr": "0xffffff0000200000", "level": 2, "count": 300, "table_of": "0xffffff0000000000"},
        {"vaddr": "0xffffff0040000000", "level": 3, "count": 20, "table_of": "0xffffff0000000000"},
    ],
}  # fmt: skip

_FLAGS = ((63, "X"), (8, "G"), (7, "P"), (6, "D"), (5, "A"), (4, "C"), (3, "T"), (2, "U"),
          (1, "W"))  # fmt: skip


def expected_lines(target: Target, rng: AddrRange | None) -> list[str]:
    pt = commands.open_page_table(target)
    lines = []
    for m in pt.iter_mappings(rng):
        entry = m.entry & ~(1 << 7) if m.page_size == 4096 else m.entry
        flags = "".join(ch if entry >> bit & 1 else "-" for bit, ch in _FLAGS)
        pa = m.paddr & ((1 << 50) - 1) & ~(m.page_size - 1)
        lines.append(f"{m.vaddr:016x}: {pa:016x} {flags}")
    return lines


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Target:
    path = tmp_path_factory.mktemp("aliases") / "espfix.json"
    path.write_text(json.dumps(SCENARIO))
    return load_scenario(str(path)).to_target()


def test_full_walk_repeats_every_alias(target: Target) -> None:
    got = list(render_walk(commands.walk(target)))
    want = expected_lines(target, None)
    # 6 leaves in the PT, which 301 PD entries link; the PD linked by 21 PDPT entries.
    assert len(want) == 4 + 8 + 21 * 301 * 6
    assert got == want


START = 0xFFFFFF0000000000
SPAN = 0x40000000 * 22


@settings(max_examples=examples(60), deadline=None)
@given(a=st.integers(0, SPAN), b=st.integers(0, SPAN))
def test_any_range_clips_the_aliases_alike(target: Target, a: int, b: int) -> None:
    lo, hi = sorted((START + a, START + b))
    if lo == hi:
        hi += 1
    rng = AddrRange(lo, hi)
    got = list(render_walk(commands.walk(target, commands.WalkOptions(range=rng))))
    assert got == expected_lines(target, rng)


def test_aliases_count_towards_max_leaves(target: Target) -> None:
    result = commands.walk(target, commands.WalkOptions(max_leaves=5000))
    lines = []
    with pytest.raises(WalkLimitError):
        for line in render_walk(result):
            lines.append(line)
    assert len(lines) <= 5000
    assert lines == expected_lines(target, None)[: len(lines)]


def test_a_filter_applies_to_the_repeated_lines(target: Target) -> None:
    from gdbext.permfilter import PermFilter

    options = commands.WalkOptions(perm=PermFilter.parse("!w"))
    got = list(render_walk(commands.walk(target, options)))
    want = [line for line in expected_lines(target, None) if not line.endswith("W")]
    assert got == want
