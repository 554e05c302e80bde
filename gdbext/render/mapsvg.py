"""``map --format svg``: the overview of an address space as a static picture, for reports.

The whole address space on the page's log-weighted scale (``mapview.js`` draws its overview
the same way): every range and every gap between ranges or region boundaries is as wide as
1 + log2 of its 4 KiB pages, the non-canonical hole as wide as :data:`HOLE_WEIGHT`, so that a
single page and a 128 TiB hole are both seen. Linux's regions are a band of labelled boxes,
user and kernel mappings lanes of their own, permissions colours (W+X red), aliases hatched.
With ``--diff`` the ranges are coloured by their change state instead (added, removed,
changed; unchanged grey), as on the page.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterator
from html import escape

from gdbext.frontend.addrmap import MapResult
from gdbext.x86.records import AliasRun

#: The weight of the non-canonical hole (as ``mapview.js``'s).
HOLE_WEIGHT = 12.0
#: Permission colours (as ``mapview.js``'s).
PERM_COLORS = {"r--": "#9e9e9e", "rw-": "#43a047", "r-x": "#1e88e5", "rwx": "#e53935"}
#: Change-state colours (``--diff``; as ``mapview.js``'s).
DIFF_COLORS = {"": "#dadada", "changed": "#1565c0", "removed": "#c62828", "added": "#2e7d32"}
REGION_COLORS = ("#e8eef6", "#d6e0ee")
ALIAS_STROKE = "#ff9800"

_TOP = 1 << 52  # pages
_WIDTH, _LEFT = 1200, 64
_REG, _USER, _KERNEL = (30, 62), (68, 108), (114, 154)
_HEIGHT = 200


class Scale:
    """Page numbers to x on the log-weighted scale of :func:`render_svg`."""

    def __init__(self, result: MapResult) -> None:
        lower_end = 1 << (result.virtual_bits - 1 - 12)
        higher_start = _TOP - lower_end
        points = {0, lower_end, higher_start, _TOP}
        for rec in result.records:
            points.add(rec.vaddr >> 12)
            points.add(rec.end >> 12)
        points.update(r.start >> 12 for r in result.regions)
        self.points = sorted(points)
        self.cumulative = [0.0]
        for a, b in zip(self.points, self.points[1:], strict=False):
            hole = (a, b) == (lower_end, higher_start)
            self.cumulative.append(
                self.cumulative[-1] + (HOLE_WEIGHT if hole else 1 + math.log2(b - a))
            )
        self.hole = (lower_end, higher_start)

    def x(self, vpn: int, width: float = _WIDTH - _LEFT - 8) -> float:
        p, c = self.points, self.cumulative
        i = min(max(bisect_right(p, vpn) - 1, 0), len(p) - 2)
        u = c[i] + (c[i + 1] - c[i]) * (vpn - p[i]) / (p[i + 1] - p[i])
        return _LEFT + u / c[-1] * width


def _perm(user: bool, writable: bool, executable: bool) -> str:
    return "r" + ("w" if writable else "-") + ("x" if executable else "-")


def render_svg(result: MapResult) -> Iterator[str]:
    """The picture, one element a line."""
    scale = Scale(result)
    yield (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" font-family="sans-serif" font-size="12">'
    )
    yield (
        '<defs><pattern id="alias" width="8" height="8" patternUnits="userSpaceOnUse">'
        f'<path d="M0 8L8 0" stroke="{ALIAS_STROKE}" stroke-width="2"/></pattern></defs>'
    )
    yield f'<rect width="{_WIDTH}" height="{_HEIGHT}" fill="#fff"/>'
    title = f"{result.levels}-level paging, root 0x{result.root:x}, {result.stats.get('leaves', 0)}"
    title += " leaves" + (f", {result.layout_title}" if result.layout_title else "")
    if result.diff_names is not None:
        old, new = result.diff_names
        title = f"{len(result.changes)} changes from {old} to {new}; {title}"
    yield f'<text x="4" y="16" font-weight="bold">{escape(title)}</text>'
    regions = [(r.start >> 12, -(-r.end >> 12), r.name) for r in result.regions]
    if not regions:
        regions = [(0, scale.hole[0], "user half"), (scale.hole[1], _TOP, "kernel half")]
    mid = (_REG[0] + _REG[1]) / 2
    for k, (start, end, name) in enumerate(regions):
        x0, x1 = scale.x(start), scale.x(end)
        yield (
            f'<rect x="{x0:.1f}" y="{_REG[0]}" width="{x1 - x0:.1f}" height="{_REG[1] - _REG[0]}" '
            f'fill="{REGION_COLORS[k % 2]}"><title>{escape(name)}</title></rect>'
        )
        fits = int((x1 - x0 - 6) / 6.5)  # characters of about 6.5 px
        label = name if len(name) <= fits else name[: fits - 1] + "\u2026"
        if fits >= 5:
            yield f'<text x="{x0 + 3:.1f}" y="{mid + 4}" fill="#123">{escape(label)}</text>'
    h0, h1 = scale.x(scale.hole[0]), scale.x(scale.hole[1])
    yield (
        f'<rect x="{h0:.1f}" y="{_REG[0]}" width="{h1 - h0:.1f}" height="{_KERNEL[1] - _REG[0]}" '
        'fill="#555"><title>non-canonical</title></rect>'
    )
    states = result.states
    for k, rec in enumerate(result.records):
        lane = _USER if rec.user else _KERNEL
        perm = _perm(rec.user, rec.writable, rec.executable)
        state = states[k] if states is not None else None
        notable = perm == "rwx" if state is None else bool(state)
        x0 = scale.x(rec.vaddr >> 12)
        w = max(2.0 if notable else 1.0, scale.x(rec.end >> 12) - x0)
        box = f'x="{x0:.1f}" y="{lane[0]}" width="{w:.1f}" height="{lane[1] - lane[0]}"'
        tip = f"0x{rec.vaddr:x}-0x{rec.end:x} {perm} {'user' if rec.user else 'kern'}"
        color = PERM_COLORS[perm] if state is None else DIFF_COLORS[state]
        if state:
            tip += f" {state}"
        yield f'<rect {box} fill="{color}"><title>{tip}</title></rect>'
        if isinstance(rec, AliasRun):
            yield f'<rect {box} fill="url(#alias)"/>'
    for name, lane in (("regions", _REG), ("user", _USER), ("kernel", _KERNEL)):
        yield f'<text x="4" y="{(lane[0] + lane[1]) / 2 + 4}" fill="#333">{name}</text>'
        if name != "regions":
            yield (
                f'<rect x="{_LEFT}" y="{lane[0]}" width="{_WIDTH - _LEFT - 8}" '
                f'height="{lane[1] - lane[0]}" fill="none" stroke="#ccc"/>'
            )
    x = _LEFT
    items = [
        (PERM_COLORS[p], f"{p} {name}")
        for p, name in (("r--", "read-only"), ("rw-", "read-write"), ("r-x", "executable"))
    ] + [(PERM_COLORS["rwx"], "rwx W+X")]
    if states is not None:
        items = [(DIFF_COLORS[s], s or "unchanged") for s in ("added", "removed", "changed", "")]
    for color, name in items:
        yield f'<rect x="{x}" y="172" width="12" height="12" fill="{color}"/>'
        yield f'<text x="{x + 16}" y="182">{name}</text>'
        x += 130
    yield f'<rect x="{x}" y="172" width="12" height="12" fill="url(#alias)" stroke="#999"/>'
    yield f'<text x="{x + 16}" y="182">alias (a table linked again)</text>'
    note = "log-scaled: each range and gap 1 + log2 of its pages wide"
    if result.aggregated:
        note = f"aggregated: {result.aggregated}"
    yield f'<text x="{x + 220}" y="182" fill="#555">{escape(note)}</text>'
    yield "</svg>"
