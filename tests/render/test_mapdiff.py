"""``map --diff``: the changes made between two simulated machines (``diff``'s own test pair)
are the states the page embeds and draws, in their colours, at their ranges and nowhere else; a
dump diffed with itself draws no change."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.cli import cli_lines as run
from support.cli import cli_text as run_text
from support.diffpair import BASE, KERN, changed_machine, machine
from support.diffpair import core as _core
from support.mappage import (
    Browser,
    Image,
    chromium,
    decoded_ranges,
    dom,
    drawn,
    element_text,
    page_data,
    rgb,
    screenshot,
)

from gdbext.frontend.addrmap import Span, aggregate_states
from gdbext.x86.merge import MergedRange
from gdbext.x86.records import AliasRun

ADDED, REMOVED, CHANGED, SAME = "#2e7d32", "#c62828", "#1565c0", "#dadada"
COLOURS = {"added": ADDED, "removed": REMOVED, "changed": CHANGED, "same": SAME}

#: The states of changed_machine() against machine(BASE), as test_diff's changes say, range by
#: range: B's ranges (the 2 MiB page split, the first page of KERN+4M given G, the text made
#: writable, one page added) and A's removed range.
EXPECTED = [
    (0x400000, 0x404000, "rwx", "changed"),
    (0x600000, 0x602000, "rw-", "removed"),
    (0x800000, 0x801000, "r-x", "added"),
    (KERN, KERN + (2 << 20), "rwx", "changed"),
    (KERN + (4 << 20), KERN + (4 << 20) + 0x1000, "rw-", "changed"),
    (KERN + (4 << 20) + 0x1000, KERN + (4 << 20) + 0x3000, "rw-", ""),
]


def _close(a: tuple[int, int, int], b: tuple[int, int, int]) -> bool:
    return all(abs(x - y) <= 6 for x, y in zip(a, b, strict=True))


@pytest.fixture
def pair(tmp_path: Path) -> tuple[str, str]:
    """A (machine(BASE)) and B (changed_machine()) as ELF cores."""
    return _core(machine(BASE), tmp_path / "a.elf"), _core(changed_machine(), tmp_path / "b.elf")


def _map(tmp_path: Path, *argv: str, name: str = "map.html") -> Path:
    out = tmp_path / name
    status, lines = run(["map", *argv, "-o", str(out)])
    assert (status, lines) == (0, []), lines
    return out


def _states(page: Path) -> list[tuple[int, int, str, str]]:
    return [
        (r["vaddr"], r["end"], r["perm"], r["state"])
        for r in decoded_ranges(page_data(page.read_text()))
    ]


def test_embedded_states_are_the_changes(tmp_path: Path, pair: tuple[str, str]) -> None:
    a, b = pair
    page = _map(tmp_path, a, "--diff", b)
    assert _states(page) == EXPECTED
    data = page_data(page.read_text())
    assert (data["diff"]["old"], data["diff"]["new"], data["diff"]["count"]) == (a, b, 5)
    added = next(c for c in data["diff"]["changes"] if c[2] == "added")
    assert added[:3] == [0x800, 0x801, "added"] and added[4:] == [
        "not mapped",
        "r-x user at 0x300000, 4 KiB pages",
    ]
    # The other way round: what was added is removed, and the text is A's again.
    back = _states(_map(tmp_path, b, "--diff", a, name="back.html"))
    assert (0x800000, 0x801000, "r-x", "removed") in back
    assert (0x600000, 0x602000, "rw-", "added") in back
    assert (0x400000, 0x404000, "r-x", "changed") in back


def test_two_roots_of_one_target_and_itself(tmp_path: Path, pair: tuple[str, str]) -> None:
    a, _ = pair
    root = hex(machine(BASE).page_table.root)
    same = _states(_map(tmp_path, a, "--a-cr3", root, "--b-cr3", root))
    assert same and {s for *_, s in same} == {""}
    assert {s for *_, s in _states(_map(tmp_path, a, "--diff", a, name="self.html"))} == {""}


def test_svg_colours_the_states(tmp_path: Path, pair: tuple[str, str]) -> None:
    a, b = pair
    svg = _map(tmp_path, a, "--diff", b, "--format", "svg", name="map.svg").read_text()
    box = r'fill="(#[0-9a-f]+)"><title>0x([0-9a-f]+)-0x([0-9a-f]+) ([^<]*)</title>'
    tips = re.findall(box, svg)
    got = {(int(s, 16), int(e, 16), fill) for fill, s, e, _ in tips}
    for start, end, _, state in EXPECTED:
        assert (start, end, COLOURS[state or "same"]) in got


def _row(image: Image, report: dict[str, Any], lane: str, colour: str) -> list[int]:
    y = sum(report["lanes"][lane]) / 2
    left, _, width, _ = report["canvas"]
    xs = range(int(left), int(left + width))
    return [x for x in xs if _close(image.pixel(x, y), rgb(colour))]


def test_page_draws_the_states_in_their_colours(
    tmp_path: Path, pair: tuple[str, str], browser: Browser
) -> None:
    chromium()
    a, b = pair
    page = _map(tmp_path, a, "--diff", b)
    report = drawn(page, browser=browser)
    image = screenshot(page, tmp_path / "diff.png", browser=browser)
    boxes = {(int(x["va"], 16), int(x["end"], 16)): x for x in report["boxes"]}
    for start, end, perm, state in EXPECTED:
        box = boxes[(start, end)]
        assert (box["state"], box["perm"]) == (state or "same", perm), box
        assert box["color"] == COLOURS[state or "same"]
        pixel = image.pixel(box["x"] + box["w"] / 2 + 1, box["y"] + box["h"] / 2)
        assert _close(pixel, rgb(box["color"])), (box, pixel)
    # The added colour is at the added page's box, in the user lane, and nowhere else.
    added = boxes[(0x800000, 0x801000)]
    green = _row(image, report, "user", ADDED)
    assert green and added["x"] - 1 <= green[0] and green[-1] <= added["x"] + added["w"] + 1
    assert not _row(image, report, "kernel", ADDED)
    assert report["states"] == {"changed": 3, "removed": 1, "added": 1, "same": 1}
    # Hovering (here #at=VA, as a click shows it) says what changed.
    info = element_text(dom(page, "at=0x400000", browser), "info")
    assert "changed (permissions flags)" in info and "was: r-x user" in info, info
    assert "now: rwx user at 0x100000" in info, info
    notes = element_text(dom(page, browser=browser), "notes")
    assert "5 changes" in notes, notes


def test_a_dump_diffed_with_itself_draws_no_change(
    kernel_dump: Callable[[str], Path], tmp_path: Path, browser: Browser
) -> None:
    chromium()
    dump = str(kernel_dump("kaslr-pti"))
    page = _map(tmp_path, dump, "--diff", dump)
    data = page_data(page.read_text())
    assert data["diff"]["count"] == 0 and {at[5] for at in data["attrs"]} == {""}
    report = drawn(page, browser=browser)
    image = screenshot(page, tmp_path / "self.png", browser=browser)
    assert report["boxes"] and {b["state"] for b in report["boxes"]} == {"same"}
    assert set(report["states"]) == {"same"}
    for lane in ("user", "kernel"):
        for colour in (ADDED, REMOVED, CHANGED):
            assert not _row(image, report, lane, colour)


@pytest.mark.parametrize("sides", [["--b-user-pgd"], ["--a-user-pgd"]])
def test_pti_pair_states_cover_exactly_diffs_changes(
    kernel_dump: Callable[[str], Path], tmp_path: Path, sides: list[str]
) -> None:
    """A real kernel's PTI pair (one root against the other): every change ``diff --json``
    gives is covered by ranges drawn in its state, and no range in a state lies outside the
    changes of that state."""
    dump = str(kernel_dump("kaslr-pti"))
    status, text = run_text(["diff", dump, *sides, "--json"])
    changes = [
        (int(c["start"], 16), int(c["end"], 16), c["kind"]) for c in json.loads(text)["changes"]
    ]
    kinds = {k for *_, k in changes}
    assert status == 1 and kinds == {"changed", "removed" if sides == ["--b-user-pgd"] else "added"}
    drawn_ranges = decoded_ranges(page_data(_map(tmp_path, dump, *sides).read_text()))
    for start, end, kind in changes:
        covered = sum(
            min(end, r["end"]) - max(start, r["vaddr"])
            for r in drawn_ranges
            if r["state"] == kind and r["vaddr"] < end and r["end"] > start
        )
        assert covered == end - start, (hex(start), hex(end), kind)
    for r in drawn_ranges:
        inside = [k for s, e, k in changes if s < r["end"] and e > r["vaddr"]]
        assert inside == ([r["state"]] if r["state"] else []), r


def test_aggregation_keeps_states_apart_then_the_most_notable() -> None:
    """Ten ranges of equal permissions, one added: joining neighbours keeps the added one
    apart; blocks take the most notable state in them."""
    records: list[MergedRange | AliasRun | Span] = [
        MergedRange(i * 0x1000, (i + 1) * 0x1000, i * 0x1000, 4096, 0, False, True, False, 1)
        for i in range(10)
    ]
    states = ["added" if i == 6 else ("changed" if i == 2 else "") for i in range(10)]
    joined, got, how = aggregate_states(records, states, 5)
    assert how is not None and got == ["", "changed", "", "added", ""]
    assert [(s.vaddr, s.end) for s in joined] == [
        (0, 0x2000), (0x2000, 0x3000), (0x3000, 0x6000), (0x6000, 0x7000), (0x7000, 0xA000)
    ]  # fmt: skip
    blocks, got, _ = aggregate_states(records, states, 2)
    assert len(blocks) <= 2 and got is not None and "added" in got
    assert all(isinstance(s, Span) and s.state == g for s, g in zip(blocks, got, strict=True))
