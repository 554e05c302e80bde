"""``map``'s page shown by headless Chromium: screenshots at three zoom levels of a real dump and
of scenarios with and without a W+X page, their pixels checked against what the page reports it
drew, and that against the dump's own walk (``walk --json``) and the scenarios' mappings.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.cli import cli_lines as run
from support.mappage import Browser, Image, chromium, dom, drawn, element_text, rgb, screenshot

SCENARIOS = Path(__file__).resolve().parents[2] / "fixtures" / "scenarios"
RWX = "#e53935"
ALIAS = "#ff9800"


def _close(a: tuple[int, int, int], b: tuple[int, int, int]) -> bool:
    return all(abs(x - y) <= 6 for x, y in zip(a, b, strict=True))


def _page(tmp_path: Path, *argv: str) -> Path:
    chromium()
    out = tmp_path / "map.html"
    status, lines = run(["map", *argv, "-o", str(out)])
    assert (status, lines) == (0, [])
    return out


def _check_boxes(image: Image, report: dict[str, Any]) -> None:
    """Each box the page says it drew has its colour in the screenshot (at its middle, away
    from the separator line at its left edge)."""
    assert report["boxes"], "no box drawn"
    for box in report["boxes"]:
        x, y = box["x"] + box["w"] / 2 + 1, box["y"] + box["h"] / 2
        if box["kind"] == "a":  # an alias: its colour hatched in orange
            row = [image.pixel(x, y) for x in range(box["x"] + 1, box["x"] + box["w"] - 1)]
            assert any(_close(p, rgb(box["color"])) for p in row), box
            assert any(_close(p, rgb(ALIAS)) for p in row), box
        else:
            assert _close(image.pixel(x, y), rgb(box["color"])), box


def _walk(dump: str) -> list[dict[str, Any]]:
    status, lines = run(["walk", dump, "--json", "--max-lines", "0"])
    assert status == 0
    return list(json.loads("\n".join(lines))["mappings"])


def _perm(m: dict[str, Any]) -> str:
    return "r" + "-w"[m["writable"]] + "-x"[m["executable"]]


def _covering(walked: list[dict[str, Any]], va: int, end: int | None = None) -> dict[str, Any]:
    """The walk's mapping that holds ``va``; with ``end``, the first one in ``[va, end)`` (an
    alias's leaves lie where the table it links again has them, not at its start)."""
    for m in walked:
        start = int(m["vaddr"], 16)
        if start <= va < start + m["size"] or (end is not None and va <= start < end):
            return m
    raise AssertionError(f"0x{va:x} is not in the walk")


def test_real_dump_three_zoom_levels(
    kernel_dump: Callable[[str], Path], tmp_path: Path, browser: Browser
) -> None:
    dump = str(kernel_dump("kaslr-pti"))
    page = _page(tmp_path, dump)
    walked = _walk(dump)

    # 1. the whole space, log-scaled: the regions labelled, both halves drawn
    whole = drawn(page, browser=browser)
    image = screenshot(page, tmp_path / "whole.png", browser=browser)
    assert whole["mode"] == "log" and whole["window"][0] == "0x0000000000000000"
    names = {r["name"] for r in whole["regions"]}
    assert {"user space", "direct mapping of all physical memory"} <= names
    assert "user space" in {label["text"] for label in whole["labels"]}
    lanes = {b["lane"] for b in whole["boxes"]}
    assert lanes == {"user", "kernel"}
    _check_boxes(image, whole)
    for box in whole["boxes"]:
        m = _covering(walked, int(box["va"], 16), int(box["end"], 16))
        assert (box["perm"], box["lane"] == "user") == (_perm(m), m["user"]), box
    assert "rwx" not in whole["colors"]  # this kernel maps nothing W+X (its audit says so)

    # 2. the kernel image's 1 GiB: linear; the kernel text labelled
    fragment = "zoom=0xffffffff80000000-0xffffffffc0000000"
    image_gib = drawn(page, fragment, browser)
    assert image_gib["mode"] == "lin"
    assert image_gib["window"] == ["0xffffffff80000000", "0xffffffffc0000000"]
    assert any(label["name"].startswith("kernel text mapping") for label in image_gib["labels"])
    _check_boxes(screenshot(page, tmp_path / "gib.png", fragment, browser), image_gib)
    for box in image_gib["boxes"]:
        m = _covering(walked, int(box["va"], 16))
        assert box["perm"] == _perm(m) and box["lane"] == "kernel", box

    # 3. sixteen pages around where the kernel's text ends and its next range begins: each page
    # 1/16 of the width, the boundary in the middle
    kernel = sorted(
        (int(m["vaddr"], 16), m) for m in walked if int(m["vaddr"], 16) >= 0xFFFFFFFF80000000
    )
    text = next(m for va, m in kernel if _perm(m) == "r-x")
    cut = int(text["vaddr"], 16) + text["size"]
    after = _covering(walked, cut)
    fragment = f"zoom=0x{cut - 0x8000:x}-0x{cut + 0x8000:x}"
    pages = drawn(page, fragment, browser)
    shot = screenshot(page, tmp_path / "pages.png", fragment, browser)
    assert pages["mode"] == "lin"
    left, _, width, _ = pages["canvas"]
    boxes = sorted(pages["boxes"], key=lambda b: b["x"])
    assert [b["perm"] for b in boxes][-2:] == ["r-x", _perm(after)]
    middle = boxes[-1]["x"]
    span = width - 8 - 64
    assert abs(middle - (left + 64 + span / 2)) <= 2, (middle, left, span)
    y = (pages["lanes"]["kernel"][0] + pages["lanes"]["kernel"][1]) / 2
    assert _close(shot.pixel(middle - span / 32, y), rgb("#1e88e5"))  # half a page before
    assert _close(shot.pixel(middle + span / 32, y), rgb(boxes[-1]["color"]))  # and after


@pytest.mark.parametrize(("scenario", "has_wx"), [("map-wx.json", True),
                                                   ("audit-space-clean.json", False)])  # fmt: skip
def test_wx_colour_where_there_is_wx(
    tmp_path: Path, browser: Browser, scenario: str, has_wx: bool
) -> None:
    page = _page(tmp_path, "--backend", "sim", "--scenario", str(SCENARIOS / scenario),
                 "--labels", "linux")  # fmt: skip
    report = drawn(page, browser=browser)
    image = screenshot(page, tmp_path / "whole.png", browser=browser)
    lane = report["lanes"]["kernel"]
    row_y = (lane[0] + lane[1]) / 2
    left, _, width, _ = report["canvas"]
    red = [
        x for x in range(int(left), int(left + width)) if _close(image.pixel(x, row_y), rgb(RWX))
    ]
    assert bool(red) == has_wx
    assert ("rwx" in report["colors"]) == has_wx
    if has_wx:  # map-wx.json's four pages at 0xffffffffc0000000, and nothing else
        (box,) = [b for b in report["boxes"] if b["perm"] == "rwx"]
        assert (box["va"], box["end"]) == ("0xffffffffc0000000", "0xffffffffc0004000")
        assert box["x"] - 1 <= red[0] and red[-1] <= box["x"] + box["w"] + 1
        zoomed = drawn(page, "zoom=0xffffffffc0000000-0xffffffffc0010000", browser)
        (wide,) = [b for b in zoomed["boxes"] if b["perm"] == "rwx"]
        assert wide["w"] == pytest.approx((width - 72) / 4, abs=2)
    _check_boxes(image, report)
    assert {"user space", "direct mapping of all physical memory"} <= {
        r["name"] for r in report["regions"]
    }


def test_audit_findings_marked_where_they_are(tmp_path: Path, browser: Browser) -> None:
    """``--audit``: the findings ``gdbext audit --json`` gives, each marked at its range in
    its severity's colour."""
    scenario = str(SCENARIOS / "map-wx.json")
    page = _page(tmp_path, "--backend", "sim", "--scenario", scenario, "--audit")
    status, lines = run(["audit", "--backend", "sim", "--scenario", scenario, "--json"])
    assert status == 0
    audited = json.loads("\n".join(lines))["findings"]
    expected = {(f["rule"], f["vaddr"], f["end"]) for f in audited if f.get("vaddr")}
    assert ("wx", "0xffffffffc0000000", "0xffffffffc0004000") in expected
    report = drawn(page, browser=browser)
    image = screenshot(page, tmp_path / "audit.png", browser=browser)
    got = {(f["rule"], hex(int(f["va"], 16)), hex(int(f["end"], 16))) for f in report["findings"]}
    assert got == expected
    colours = {"critical": "#6a1b9a", "high": "#b71c1c", "medium": "#f57c00"}
    wx = next(f for f in report["findings"] if f["rule"] == "wx")
    assert wx["severity"] == "high"
    # the wx mark is at the W+X range's box, in the lane below
    (box,) = [b for b in report["boxes"] if b["perm"] == "rwx"]
    assert abs(wx["x"] - box["x"]) <= 1
    for f in report["findings"]:
        if f["w"] >= 3:
            pixel = image.pixel(f["x"] + f["w"] / 2, f["y"] + f["h"] / 2)
            assert any(_close(pixel, rgb(colours[s])) for s in colours), (f, pixel)


def test_a_mapping_described_as_translate_sees_it(
    kernel_dump: Callable[[str], Path], tmp_path: Path, browser: Browser
) -> None:
    """``#at=VA`` shows what a click there shows: the range, its frames, permissions, region,
    page size and the walk's indices, as ``gdbext translate --json`` gives them."""
    dump = str(kernel_dump("kaslr-pti"))
    page = _page(tmp_path, dump)
    walked = _walk(dump)
    for m in (
        next(m for m in walked if m["page_size"] == 2 << 20 and not m["user"]),
        next(m for m in walked if _perm(m) == "r-x" and not m["user"]),
        next(m for m in walked if m["user"]),
    ):
        va = int(m["vaddr"], 16)
        text = element_text(dom(page, f"at=0x{va:x}", browser), "info")
        status, lines = run(["translate", dump, hex(va), "--json"])
        assert status == 0
        (t,) = json.loads("\n".join(lines))
        names = ("PML4", "PDPT", "PD", "PT")
        steps = " ".join(f"{n}[{s['index']}]" for n, s in zip(names, t["steps"], strict=False))
        assert f"walk of 0x{va:016x}: {steps} " in text, text
        assert f"physical: 0x{int(t['paddr'], 16):016x} - " in text, text
        user = "user" if t["user"] else "kern"
        assert f"permissions: {_perm(t)} {user}" in text, text
        assert f"page size: {t['page_size'] // 1024}K" in text or (
            f"page size: {t['page_size'] >> 20}M" in text
        ), text
        assert text.startswith(f"0x{va:016x} - "), text
        assert "region: " in text and "region: -" not in text, text


def test_an_aggregated_page_says_so(tmp_path: Path, browser: Browser) -> None:
    page = _page(tmp_path, "--backend", "sim", "--scenario", str(SCENARIOS / "demo.json"),
                 "--max-ranges", "3")  # fmt: skip
    document = dom(page, browser=browser)
    notes = element_text(document, "notes")
    assert "Aggregated: 11 ranges drawn as " in notes, notes
    report = json.loads(element_text(document, "drawn"))
    assert report["boxes"] and {b["kind"] for b in report["boxes"]} == {"s"}
