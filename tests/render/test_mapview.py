"""``map``'s page and picture: the data they embed, checked against the scenarios' own mappings
(frames chosen by hand) and a walk of the same dump; aggregation on hand-built records; the SVG.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from support.cli import cli_lines as run
from support.mappage import decoded_ranges, page_data

from gdbext.frontend.addrmap import Span, aggregate
from gdbext.x86.merge import MergedRange

SCENARIOS = Path(__file__).resolve().parents[2] / "fixtures" / "scenarios"


def _page(tmp_path: Path, *argv: str) -> str:
    out = tmp_path / "map.html"
    status, lines = run(["map", *argv, "-o", str(out)])
    assert (status, lines) == (0, [])
    return out.read_text()


def test_demo_ranges_and_alias(tmp_path: Path) -> None:
    page = _page(tmp_path, "--backend", "sim", "--scenario", str(SCENARIOS / "demo.json"))
    data = page_data(page)
    ranges = decoded_ranges(data)
    plain = [(r["vaddr"], r["end"], r["perm"], r["user"], r.get("paddr")) for r in ranges]
    # demo.json's mappings, as the scenario lists them
    assert plain[:3] == [
        (0x400000, 0x410000, "r-x", True, 0x1000000),
        (0x600000, 0x608000, "rw-", True, 0x1010000),
        (0x7FFFFFFDE000, 0x7FFFFFFFF000, "rw-", True, 0x1020000),
    ]
    assert (0xFFFF888000000000, 0xFFFF888010000000, "rw-", False, 0) in plain
    assert (0xFFFFFFFF81000000, 0xFFFFFFFF81200000, "r-x", False, 0x1000000) in plain
    direct = next(r for r in ranges if r["vaddr"] == 0xFFFF888000000000)
    assert direct["page_size"] == 2 << 20 and direct["flags"] == "G"
    # the page table linked 63 more times by level-2 entries: one alias record, not 63 x 2 leaves
    (alias,) = [r for r in ranges if r["kind"] == "a"]
    assert (alias["vaddr"], alias["end"]) == (0xFFFFFF0000200000, 0xFFFFFF0008000000)
    (extra,) = data["extra"]
    assert extra[1:5] == [1, 0xFFFFFF0000000000 >> 12, 63, 2]
    assert data["leaves"] == 1338 and data["levels"] == 4 and data["aggregated"] is None
    # self-contained: nothing is fetched
    assert not re.search(r"(src|href)=|https?://|@import|fetch\(", page.replace(
        "http://www.w3.org/2000/svg", ""))  # fmt: skip


def test_real_dump_matches_its_walk(kernel_dump: Callable[[str], Path], tmp_path: Path) -> None:
    dump = str(kernel_dump("kaslr-pti"))
    data = page_data(_page(tmp_path, dump))
    status, lines = run(["walk", dump, "--json", "--max-lines", "0"])
    assert status == 0
    walked = json.loads("\n".join(lines))
    # every leaf the walk lists lies in a drawn range of the same permissions (the walk's
    # JSON expands aliases, the page keeps them as one record)
    ranges = decoded_ranges(data)
    starts = [r["vaddr"] for r in ranges]
    for m in walked["mappings"]:
        va = int(m["vaddr"], 16)
        r = ranges[bisect.bisect_right(starts, va) - 1]
        assert r["vaddr"] <= va and va + m["size"] <= r["end"], m
        perm = "r" + "-w"[m["writable"]] + "-x"[m["executable"]]
        assert (r["perm"], r["user"]) == (perm, m["user"]), m
    names = [r[2] for r in data["regions"]]
    assert "direct mapping of all physical memory" in names and data["layout"]


def test_aggregate_keeps_wx() -> None:
    def rng(va: int, pages: int, w: bool, x: bool) -> MergedRange:
        return MergedRange(va, va + pages * 4096, 0, 4096, 0, False, w, x, pages)

    records: list[MergedRange] = [rng(i * 0x2000, 1, i % 2 == 0, i == 5) for i in range(10)]
    same, how = aggregate(list(records), 10)
    assert same == records and how is None
    joined, how = aggregate(list(records), 3)
    assert how is not None and "10 ranges drawn as" in how and len(joined) <= 3
    assert isinstance(joined[0], Span) and joined[0].vaddr == 0 and joined[-1].end == 0x13000
    assert sum(s.leaves for s in joined if isinstance(s, Span)) == 10
    wx = [s for s in joined if s.writable and s.executable]
    assert wx and wx[0].vaddr <= 5 * 0x2000 < wx[0].end


def test_aggregated_page_says_so(tmp_path: Path) -> None:
    page = _page(
        tmp_path, "--backend", "sim", "--scenario", str(SCENARIOS / "demo.json"),
        "--max-ranges", "3",
    )  # fmt: skip
    data = page_data(page)
    assert data["aggregated"].startswith("11 ranges drawn as ")
    assert len(data["r"]) // 4 <= 3


def _svg_rects(tmp_path: Path, scenario: str) -> list[dict[str, str]]:
    import xml.etree.ElementTree as ET

    out = tmp_path / f"{scenario}.svg"
    status, lines = run(["map", "--backend", "sim", "--scenario", str(SCENARIOS / scenario),
                         "--labels", "linux", "--format", "svg", "-o", str(out)])  # fmt: skip
    assert (status, lines) == (0, [])
    root = ET.parse(out).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    rects = []
    for rect in root.iter(f"{ns}rect"):
        tip = rect.find(f"{ns}title")
        rects.append({**rect.attrib, "title": "" if tip is None else (tip.text or "")})
    return rects


def test_svg_colours_wx_only_where_it_is(tmp_path: Path) -> None:
    from gdbext.render.mapsvg import PERM_COLORS

    wx = _svg_rects(tmp_path, "map-wx.json")
    clean = _svg_rects(tmp_path, "audit-space-clean.json")
    red = [r for r in wx if r.get("fill") == PERM_COLORS["rwx"] and r["title"]]
    # map-wx.json's one W+X range: four supervisor pages at 0xffffffffc0000000
    assert [r["title"] for r in red] == ["0xffffffffc0000000-0xffffffffc0004000 rwx kern"]
    assert not [r for r in clean if r.get("fill") == PERM_COLORS["rwx"] and r["title"]]
    # the user text is r-x in the user lane, above the kernel lane
    (text,) = [r for r in clean if r["title"].startswith("0x400000-0x404000 ")]
    assert text["fill"] == PERM_COLORS["r-x"] and text["title"].endswith("r-x user")
    (kernel_text,) = [r for r in clean if r["title"].startswith("0xffffffff81000000-")]
    assert float(text["y"]) < float(kernel_text["y"])
    # Linux's regions, labelled from the layout
    names = {r["title"] for r in clean if r.get("fill", "").startswith("#d6e0ee")
             or r.get("fill", "").startswith("#e8eef6")}  # fmt: skip
    assert {"user space", "direct mapping of all physical memory"} <= names


def test_json_is_the_pages_data(tmp_path: Path) -> None:
    argv = ["--backend", "sim", "--scenario", str(SCENARIOS / "demo.json")]
    page = _page(tmp_path, *argv)
    status, lines = run(["map", *argv, "--json"])
    assert status == 0 and json.loads(lines[0]) == page_data(page)


def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gdbext import cli

    demo = ["--backend", "sim", "--scenario", str(SCENARIOS / "demo.json")]
    assert cli.main(["map", *demo, "--max-ranges", "0"]) == 2
    assert capsys.readouterr().err == "gdbext: --max-ranges must be 1 or more, not 0\n"
    missing = tmp_path / "no" / "map.html"
    assert cli.main(["map", *demo, "-o", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gdbext: map: cannot write {missing}: ") and err.count("\n") == 1
    assert not missing.parent.exists()
