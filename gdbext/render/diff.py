"""``diff``'s output: a line per changed range (``+`` added, ``-`` removed, ``~`` changed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from gdbext.frontend.diff import DiffResult
from gdbext.render.common import PLAIN, Style, leaf_flag_names, perms
from gdbext.units import format_size, plural
from gdbext.x86.diff import ADDED, CHANGED, REMOVED, Change, Side

_MARK = {ADDED: "+", REMOVED: "-", CHANGED: "~"}


def _mapping(side: Side, style: Style) -> str:
    """``-> 0x1234000 rw- kern 4K G`` (a leaf) or ``alias of 0x... (table 0x..., level 2)``."""
    access = perms(side.user, side.writable, side.executable, style)
    if side.is_alias:
        first = "" if side.first_vaddr is None else f" first walked at 0x{side.first_vaddr:x}"
        return f"alias: table 0x{side.paddr:x} (level {side.alias_level}){first} {access}"
    scattered = "" if side.pa_contiguous else " (frames scattered)"
    tokens = [n for n in _flag_tokens(side.flags, side.page_size)]
    extra = (" " + " ".join(tokens)) if tokens else ""
    return f"-> 0x{side.paddr:x}{scattered} {access} {format_size(side.page_size)} pages{extra}"


_SHORT = {"GLOBAL": "G", "NO_CACHE": "PCD", "WRITE_THROUGH": "PWT"}
#: Shown by the permissions or the page size, or not compared by default.
_QUIET = {"PRESENT", "WRITABLE", "USER_ACCESSIBLE", "NO_EXECUTE", "HUGE_PAGE", "ACCESSED", "DIRTY"}


def _flag_tokens(flags: int, page_size: int) -> list[str]:
    return [_SHORT.get(n, n) for n in leaf_flag_names(flags, page_size) if n not in _QUIET]


def _what(change: Change, style: Style) -> str:
    old, new = change.old, change.new
    assert old is not None and new is not None
    parts = []
    for what in change.what:
        if what == "frame":
            parts.append(f"frame 0x{old.paddr:x} -> 0x{new.paddr:x}")
        elif what == "permissions":
            before = perms(old.user, old.writable, old.executable, style)
            after = perms(new.user, new.writable, new.executable, style)
            parts.append(f"permissions {before} -> {after}")
        elif what == "page-size":
            parts.append(f"page size {format_size(old.page_size)} -> {format_size(new.page_size)}")
        elif what == "flags":
            size = new.page_size
            set_ = _names(change.flags_changed & new.flags, size)
            cleared = _names(change.flags_changed & old.flags, size)
            parts.append(
                "flags " + " ".join([*(f"+{n}" for n in set_), *(f"-{n}" for n in cleared)])
            )
        elif what == "alias":
            parts.append(f"was {_mapping(old, style)}; now {_mapping(new, style)}")
    return "; ".join(parts)


def _names(bits: int, page_size: int) -> list[str]:
    from gdbext.flags import flag_names

    names = flag_names(bits)
    if page_size == 4096:
        names = ["PAT" if n == "HUGE_PAGE" else n for n in names]
    return [_SHORT.get(n, n) for n in names]


def render_text(result: DiffResult, style: Style = PLAIN) -> Iterator[str]:
    """A header, then ``+ 0xSTART-0xEND  SIZE  -> PA perms ...  [region]`` per change."""
    counts = result.counts.changes
    n = len(result.changes)
    summary = (
        "no differences"
        if not n
        else f"{n} change{plural(n)}: {counts[ADDED]} added, {counts[REMOVED]} removed, "
        f"{counts[CHANGED]} changed"
    )
    yield style.paint(
        style.comment,
        f"# A: {result.old_name} (root 0x{result.old_root:x}); B: {result.new_name} "
        f"(root 0x{result.new_root:x}); {result.levels}-level: {summary}",
    )
    for change, region in zip(result.changes, result.regions, strict=True):
        head = (
            f"{_MARK[change.kind]} 0x{change.start:016x}-0x{change.end:016x} "
            f"{format_size(change.size):>6}  "
        )
        if change.kind == ADDED:
            assert change.new is not None
            body = _mapping(change.new, style)
        elif change.kind == REMOVED:
            assert change.old is not None
            body = "was " + _mapping(change.old, style)
        else:
            body = _what(change, style)
        label = "" if region is None else style.paint(style.comment, f"  [{region}]")
        yield head + body + label


def _side(side: Side | None) -> dict[str, Any] | None:
    if side is None:
        return None
    doc: dict[str, Any] = {
        "paddr": f"0x{side.paddr:x}",
        "user": side.user,
        "writable": side.writable,
        "executable": side.executable,
    }
    if side.is_alias:
        doc |= {"alias_level": side.alias_level, "first_vaddr": f"0x{side.first_vaddr or 0:x}"}
    else:
        doc |= {
            "page_size": side.page_size,
            "flags": _names(side.flags, side.page_size),
            "pa_contiguous": side.pa_contiguous,
        }
    return doc


def _page_size(change: Change) -> int:
    side = change.new if change.new is not None else change.old
    return 0 if side is None else side.page_size


def render_json(result: DiffResult) -> Iterator[str]:
    """``{"a", "b", "levels", "equal", "counts", "changes": [{"kind", "start", "end", "size",
    "region", "what", "flags_changed", "old", "new"}], "warnings"}``."""
    doc = {
        "a": {"name": result.old_name, "root": f"0x{result.old_root:x}"},
        "b": {"name": result.new_name, "root": f"0x{result.new_root:x}"},
        "levels": result.levels,
        "equal": result.equal,
        "counts": result.counts.changes,
        "changes": [
            {
                "kind": c.kind,
                "start": f"0x{c.start:x}",
                "end": f"0x{c.end:x}",
                "size": c.size,
                "region": region,
                "what": list(c.what),
                "flags_changed": _names(
                    c.flags_changed,
                    (c.new or c.old or Side(0, 0, 0, False, False, False)).page_size,
                ),
                "old": _side(c.old),
                "new": _side(c.new),
            }
            for c, region in zip(result.changes, result.regions, strict=True)
        ],
        "warnings": result.warnings,
    }
    yield json.dumps(doc, indent=1)
