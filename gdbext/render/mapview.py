"""``map --format html``: one self-contained page that draws an address space.

The page is this module's template with the drawing code (``mapview.js``, a small canvas
renderer shipped with the package) and the styles (``mapview.css``) inlined, and the map's data
embedded as compact JSON (:func:`map_data`): nothing is fetched when it is viewed.

The data counts in 4 KiB pages (a 64-bit address is not a JavaScript number, its page number
is: at most 2^52). Ranges are one flat array of four numbers each: the pages from the previous
range's end to this one's start, the range's pages, the index of its attributes in ``attrs``
(permissions, user or kernel, the flags shown, the page size, what kind of record it is, its
change state with ``--diff``: ``added``, ``removed``, ``changed`` or ``""``) and
its first frame less the previous range's end frame. Successive ranges are mostly adjacent, so
most of these numbers are short.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from html import escape
from importlib.resources import files
from typing import Any

from gdbext.flags import perm_text
from gdbext.frontend.addrmap import MapResult, Span
from gdbext.render.common import extra_tokens
from gdbext.x86.diff import Side
from gdbext.x86.merge import MergedRange
from gdbext.x86.records import AliasRun

#: Attribute kinds: a merged range, an aggregated span, an alias of a table walked elsewhere.
KIND_RANGE, KIND_SPAN, KIND_ALIAS = "r", "s", "a"

_PAGE = 12

#: The most changes embedded for hovering (``--diff``); the states drawn are all there.
MAX_CHANGES = 20_000


def _vpn(address: int) -> int:
    return address >> _PAGE


def map_data(result: MapResult) -> dict[str, Any]:
    """The map as the page reads it (see the module's docstring for ``r``)."""
    attrs: dict[tuple[str, int, str, int, str, str], int] = {}
    flat: list[int] = []
    aliases: list[list[Any]] = []
    prev_end = 0
    prev_frame = 0
    states = result.states
    for k, rec in enumerate(result.records):
        state = states[k] if states is not None else ""
        if type(rec) is MergedRange:
            key = (
                perm_text(rec.user, rec.writable, rec.executable)[:3],
                int(rec.user),
                extra_tokens(rec.entry),
                rec.page_size,
                KIND_RANGE,
                state,
            )
            frame = _vpn(rec.paddr)
            dframe = frame - prev_frame
            prev_frame = frame + _vpn(rec.end - rec.vaddr)
        else:
            kind = KIND_ALIAS if type(rec) is AliasRun else KIND_SPAN
            perm = perm_text(rec.user, rec.writable, rec.executable)[:3]
            key = (perm, int(rec.user), "", 0, kind, state)
            dframe = 0
            if type(rec) is AliasRun:
                aliases.append(
                    [
                        f"0x{rec.table:x}",
                        rec.level,
                        _vpn(rec.first_vaddr),
                        rec.count,
                        rec.leaves,
                        rec.same_access,
                    ]
                )
            elif type(rec) is Span:
                aliases.append([rec.ranges, rec.leaves])
        index = attrs.setdefault(key, len(attrs))
        start, end = _vpn(rec.vaddr), _vpn(rec.end + 4095)
        flat += (start - prev_end, end - start, index, dframe)
        prev_end = end
    return {
        "levels": result.levels,
        "root": f"0x{result.root:x}",
        "vbits": result.virtual_bits,
        "layout": result.layout_title,
        "aggregated": result.aggregated,
        "warnings": result.warnings,
        "leaves": result.stats.get("leaves", 0),
        "regions": [[_vpn(r.start), _vpn(r.end + 4095), r.name] for r in result.regions],
        "attrs": [list(k) for k in attrs],
        "r": flat,
        "extra": aliases,
        "findings": [
            [_vpn(f.vaddr or 0), _vpn((f.end or 0) + 4095), str(f.severity), f.rule, f.message]
            for f in result.findings[:5000]
        ],
        "diff": _diff_data(result),
        "anomalies": [
            [_vpn(a.vaddr), a.kind, a.level, f"0x{a.table:x}", a.index, a.detail]
            for a in result.anomalies[:1000]
        ],
    }


def _side(side: Side | None) -> str:
    """One side of a change, as the page's hover shows it."""
    if side is None:
        return "not mapped"
    perm = perm_text(side.user, side.writable, side.executable)[:3]
    who = "user" if side.user else "kern"
    if side.is_alias:
        return f"{perm} {who}, alias of the level-{side.alias_level} table 0x{side.paddr:x}"
    text = f"{perm} {who} at 0x{side.paddr:x}, {side.page_size // 1024} KiB pages"
    flags = extra_tokens(side.flags)
    return text + (f", flags {flags}" if flags else "")


def _diff_data(result: MapResult) -> dict[str, Any] | None:
    """``--diff``: the sides' names and the changes (at most :data:`MAX_CHANGES`: the start
    and end page, the kind, what differs, the old and the new mapping)."""
    if result.diff_names is None:
        return None
    return {
        "old": result.diff_names[0],
        "new": result.diff_names[1],
        "count": len(result.changes),
        "changes": [
            [
                _vpn(c.start),
                _vpn(c.end + 4095),
                c.kind,
                " ".join(c.what),
                _side(c.old),
                _side(c.new),
            ]
            for c in result.changes[:MAX_CHANGES]
        ],
    }


def _asset(name: str) -> str:
    return files("gdbext.render").joinpath(name).read_text(encoding="utf-8")


def _script_json(data: dict[str, Any]) -> str:
    """JSON that can stand inside a ``<script>`` element (no ``</``)."""
    return json.dumps(data, separators=(",", ":")).replace("</", "<\\/")


def render_json(result: MapResult) -> Iterator[str]:
    """The data the page draws (:func:`map_data`), as one line of JSON."""
    yield json.dumps(map_data(result), separators=(",", ":"))


def render_html(result: MapResult) -> Iterator[str]:
    """The page, a few long lines."""
    title = f"Address space, root 0x{result.root:x}"
    if result.diff_names is not None:
        title = f"Changes from {result.diff_names[0]} to {result.diff_names[1]}"
    yield "<!DOCTYPE html>"
    yield '<html lang="en"><head><meta charset="utf-8">'
    yield f"<title>{escape(title)}</title>"
    yield f"<style>{_asset('mapview.css')}</style></head><body>"
    yield (
        f'<header><h1>{escape(title)}</h1><span id="mode"></span>'
        '<button id="reset" type="button">whole address space</button></header>'
    )
    yield '<div id="notes"></div><canvas id="map"></canvas>'
    yield '<div id="legend"></div><pre id="info">hover or click a mapping</pre>'
    yield '<pre id="drawn" hidden></pre>'
    yield f'<script id="data" type="application/json">{_script_json(map_data(result))}</script>'
    yield f"<script>{_asset('mapview.js')}</script>"
    yield "</body></html>"
