"""``who-maps`` and ``aliases`` as text and JSON.

Text: one line per mapping, ``VADDR -> PADDR`` with size, page size, permissions and region;
an alias repeated over many links is one line with ``xN every STRIDE``. JSON: one document,
addresses as hex strings, repetitions as ``[count, stride]`` pairs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from gdbext.flags import perm_text
from gdbext.frontend.whomaps import AliasesResult, Hit, WhoMapsResult
from gdbext.render.common import hexs
from gdbext.units import format_size, plural


def _hit_line(hit: Hit, sized: bool = True) -> str:
    """``VADDR -> PADDR  SIZE  PAGE page  PERMS  [xN (...)]  [REGION]`` (no SIZE for a single
    address asked)."""
    p = hit.place
    size = f"{format_size(p.size):>8}  " if sized else ""
    line = (
        f"0x{p.vaddr:016x} -> 0x{p.paddr:x}  {size}"
        f"{format_size(p.page_size)} page  {perm_text(p.user, p.writable, p.executable)}"
    )
    if p.reps:
        line += f"  x{p.copies} (" + ", ".join(f"{c} every 0x{s:x}" for c, s in p.reps) + ")"
    if hit.region:
        line += f"  {hit.region}"
    return line


def _hit_json(hit: Hit) -> dict[str, Any]:
    p = hit.place
    return {
        "vaddr": hexs(p.vaddr),
        "paddr": hexs(p.paddr),
        "size": p.size,
        "page_size": p.page_size,
        "user": p.user,
        "writable": p.writable,
        "executable": p.executable,
        "copies": p.copies,
        "repeats": [[c, hexs(s)] for c, s in p.reps],
        "region": hit.region,
    }


def render_who_maps_text(result: WhoMapsResult) -> Iterator[str]:
    """A header naming the range and root, then one line per mapping (or ``not mapped``)."""
    what = (
        f"0x{result.start:x}"
        if result.end == result.start + 1
        else f"0x{result.start:x}-0x{result.end:x}"
    )
    copies = sum(h.place.copies for h in result.hits)
    yield (
        f"physical {what} (root 0x{result.root:x}, {result.levels}-level): "
        + (f"{copies} mapping{plural(copies)}" if result.hits else "not mapped")
    )
    sized = result.end != result.start + 1
    if result.spaces is not None and result.hits:
        yield "kernel half (every address space's):"
    for hit in result.hits:
        yield _hit_line(hit, sized)
    for space in result.spaces or ():
        if not space.hits:
            continue
        owners = ", ".join(f"{pid} {comm}" for pid, comm in space.owners)
        who = " ".join(x for x in (f"[{owners}]" if owners else "", space.identity or "") if x)
        yield f"address space {space.space}{' ' + who if who else ''}:"
        for hit in space.hits:
            yield _hit_line(hit, sized)


def render_who_maps_json(result: WhoMapsResult) -> Iterator[str]:
    """``{"start", "end", "root", "levels", "mappings": [...]}``; with ``--all-roots`` also
    ``"address_spaces": [{"id", "tasks", "identity", "mappings"}]`` (``mappings``: the kernel
    half's)."""
    yield json.dumps(
        {
            "start": hexs(result.start),
            "end": hexs(result.end),
            "root": hexs(result.root),
            "levels": result.levels,
            "mappings": [_hit_json(h) for h in result.hits],
            **(
                {}
                if result.spaces is None
                else {
                    "address_spaces": [
                        {
                            "id": s.space,
                            "tasks": [{"pid": pid, "comm": comm} for pid, comm in s.owners],
                            "identity": s.identity,
                            "mappings": [_hit_json(h) for h in s.hits],
                        }
                        for s in result.spaces
                    ]
                }
            ),
        }
    )


def render_aliases_text(result: AliasesResult) -> Iterator[str]:
    """One block per finding (most serious first), then the direct map's one line."""
    n = len(result.findings)
    yield (
        f"root 0x{result.root:x} ({result.levels}-level): {n} physical range{plural(n)} "
        "mapped with different permissions"
    )
    for f in result.findings:
        yield f"0x{f.start:x}-0x{f.end:x} ({format_size(f.end - f.start)}): {f.kind}"
        for hit in f.places:
            yield "  " + _hit_line(hit)
    dm = result.direct_map
    if dm is not None:
        yield (
            f"direct map (0x{dm.base:x} + PA): maps again {dm.ranges} range{plural(dm.ranges)} "
            f"({format_size(dm.size)}) mapped elsewhere with other permissions"
            + (
                f", {dm.writable_of_executable} of them writable here and executable there"
                if dm.writable_of_executable
                else ""
            )
        )


def render_aliases_json(result: AliasesResult) -> Iterator[str]:
    """``{"root", "levels", "findings": [...], "direct_map": {...} | null}``."""
    dm = result.direct_map
    yield json.dumps(
        {
            "root": hexs(result.root),
            "levels": result.levels,
            "findings": [
                {
                    "start": hexs(f.start),
                    "end": hexs(f.end),
                    "kind": f.kind,
                    "mappings": [_hit_json(h) for h in f.places],
                }
                for f in result.findings
            ],
            "direct_map": None
            if dm is None
            else {
                "base": hexs(dm.base),
                "ranges": dm.ranges,
                "size": dm.size,
                "writable_of_executable": dm.writable_of_executable,
            },
        }
    )
