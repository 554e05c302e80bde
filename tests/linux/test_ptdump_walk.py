"""One ptdump walk for the renderer and the W+X count (:mod:`gdbext.linux.ptdump`).

The ``walk --format ptdump`` lines and ``CONFIG_DEBUG_WX``'s count apply the same rules
(:mod:`gdbext.linux.ptdump_rules`); the W+X count is computed by :mod:`gdbext.audit.checkwx`
with table tallies, the lines by the walk. If the two read the rules differently, the pages of
the walk's W+X series (every series, uncapped) and the count part ways: checked here on the
committed kernel dumps and on hand-built tables with W+X and not-present W+X entries. Renderers
only format: the layout is the result's (given, or detected by the command layer).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from depth import kernels

from gdbext.audit.checkwx import CheckWx
from gdbext.flags import PRESENT, WRITABLE
from gdbext.frontend import commands
from gdbext.linux import detect
from gdbext.linux.layout import linux_layout
from gdbext.linux.ptdump import PtdumpWalk, Series, Skipped
from gdbext.render import ptdump, text
from gdbext.x86.paging import X86PageTable
from gdbext_sim.scenario import build_machine

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "fixtures" / "scenarios" / "demo.json"


def wx_pages(pt: X86PageTable) -> tuple[int, int]:
    """The pages of the walk's W+X series (every series: sections uncapped), and how many such
    series there are."""
    walk = PtdumpWalk(pt, linux_layout(pt.levels), capped=False)
    series = [r for batch in walk.batches() for r in batch if type(r) is Series and r.wx]
    assert not any(type(r) is Skipped for batch in walk.batches() for r in batch)
    return sum(s.size // 4096 for s in series), len(series)


def wx_machine() -> Any:
    """Kernel text writable (W+X, present), two not-present writable PTEs (counted by their
    flags), a not-present PMD leaf, and a writable executable page below a PROTNONE PMD."""
    doc = json.loads(DEMO.read_text())
    text_map = next(m for m in doc["mappings"] if m["vaddr"] == "0xffffffff81000000")
    text_map["flags"].append("WRITABLE")
    doc["entries"] = [
        # Not present, RW, executable: a freed gap of the kernel image under PTI.
        {"vaddr": "0xffffffff81000000", "level": 1, "value": "0x1000002"},
        {"vaddr": "0xffffffff81001000", "level": 1, "value": "0x1001002"},
        # A 2 MiB leaf entry that is not present but RW and executable.
        {"vaddr": "0xffffffff81600000", "level": 2, "value": "0x1600082"},
    ]
    return build_machine(doc)


class Patched:
    """A dump's memory with some 64-bit words changed (the entries a test edits)."""

    def __init__(self, inner: Any, words: dict[int, int]) -> None:
        self.inner = inner
        self.words = words

    def read(self, paddr: int, size: int) -> bytes:
        data = bytearray(self.inner.read(paddr, size))
        for at, value in self.words.items():
            if paddr <= at and at + 8 <= paddr + size:
                data[at - paddr : at - paddr + 8] = value.to_bytes(8, "little")
        return bytes(data)

    def write(self, paddr: int, data: bytes) -> None:
        raise AssertionError("nothing here writes")


@pytest.mark.parametrize("name", kernels())
def test_checkwx_counts_the_walks_wx_series_on_real_kernels(
    kernel_dump: Callable[[str], Path], name: str
) -> None:
    """The real kernel as dumped (no W+X page: both say 0), then with the first page of its
    text made writable and the next one writable and not present (both count them)."""
    from gdbext_dump.dump import open_dump

    target = open_dump(str(kernel_dump(name)))
    try:
        pt = commands.open_page_table(target, commands.RootOptions(kernel=True))
        pages, _ = wx_pages(pt)
        assert CheckWx(pt).count(pt.root).pages == pages == 0
        text_va = detect.detect_layout(pt, target.facts).bases["kernel_image"].value
        first = pt.translate(text_va)
        second = pt.translate(text_va + first.page_size)
        leaf, next_leaf = first.steps[-1], second.steps[-1]
        words = {
            leaf.table + 8 * leaf.index: leaf.entry | WRITABLE,
            next_leaf.table + 8 * next_leaf.index: (next_leaf.entry | WRITABLE) & ~PRESENT,
        }
        for step in first.steps[:-1] + second.steps[:-1]:  # the path writable too
            words[step.table + 8 * step.index] = step.entry | WRITABLE
        edited = X86PageTable(Patched(target.mapper, words), pt.root, pt.levels)
        pages, series = wx_pages(edited)
        count = CheckWx(edited).count(edited.root)
        assert count.pages == pages and series >= 1
        assert count.present == first.page_size // 4096
        assert count.not_present == second.page_size // 4096
    finally:
        if target.close is not None:
            target.close()


def test_checkwx_counts_the_walks_wx_series_present_or_not() -> None:
    machine = wx_machine()
    pt = machine.page_table
    pages, series = wx_pages(pt)
    count = CheckWx(pt).count(pt.root)
    # 512 text pages, the 2 MiB not-present leaf: by hand.
    assert series >= 2 and pages == 512 + 512
    assert count.pages == pages
    assert count.not_present == 2 + 512


def test_the_renderer_prints_the_walks_series() -> None:
    """``--format ptdump`` is the walk's records, formatted: one line per series or marker."""
    machine = wx_machine()
    result = commands.walk(machine.to_target(), commands.WalkOptions())
    lines = list(ptdump.render_walk(result))
    walk = PtdumpWalk(machine.page_table, result.layout)
    records = [r for batch in walk.batches() for r in batch]
    assert lines == [ptdump.record_line(r) for r in records]
    wx = [(r, line) for r, line in zip(records, lines, strict=True) if type(r) is Series and r.wx]
    # Present W+X series print RW and x; not-present ones no flags at all, as the kernel does.
    assert {tuple(line.split()[2:]) for r, line in wx if r.prot & 1} == {("RW", "GLB", "x", "pte")}
    assert {tuple(line.split()[2:]) for r, line in wx if not r.prot & 1} == {("pte",), ("pmd",)}


def test_renderers_take_the_layout_from_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """A layout given with the result is the one both renderers use; they never detect one."""

    def no_detection(*_: object) -> None:
        raise AssertionError("a renderer detected the layout")

    machine = build_machine(json.loads(DEMO.read_text()))
    given = linux_layout(4, vmalloc_base=0xFFFFC98000000000)
    result = commands.WalkResult(
        machine.page_table, commands.WalkOptions(labels="linux"), known_layout=given
    )
    monkeypatch.setattr(detect, "detect_layout", no_detection)
    monkeypatch.setattr(commands, "detect_layout", no_detection)
    assert result.layout is given
    lines = list(ptdump.render_walk(result))
    assert "---[ vmalloc() Area ]---" in lines
    # The section starts where the given layout says, not at the default base.
    at = lines.index("---[ vmalloc() Area ]---")
    assert lines[at + 1].startswith("0xffffc98000000000-")
    labelled = list(text.render_walk(result))
    assert labelled[0] == f"# {given.title} (its bases: the info command)"
    # The demo's 1 GiB page at 0xffffc90000000000 lies below the given vmalloc base: in the
    # direct map's section, where the default layout would open the vmalloc section.
    assert not [line for line in labelled if line.startswith("---[ vmalloc() Area ]---")]
    default = commands.WalkResult(
        machine.page_table, commands.WalkOptions(labels="linux"), known_layout=linux_layout(4)
    )
    assert "---[ vmalloc() Area ]--- (default base)" in list(text.render_walk(default))
    assert not hasattr(ptdump, "detect_layout") and not hasattr(text, "detect_layout")


def test_the_command_layer_detects_the_layout_once() -> None:
    machine = build_machine(json.loads(DEMO.read_text()))
    result = commands.walk(machine.to_target(), commands.WalkOptions(labels="linux"))
    assert result.known_layout is None
    layout = result.layout
    assert result.layout is layout and result.labels is layout
    assert layout.markers[0].name == "User Space"
