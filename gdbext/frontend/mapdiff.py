"""``map --diff``: a picture of what changed from one page table (A, old) to another (B, new).

The picture is B's address space (:func:`~gdbext.frontend.addrmap.address_map`) with the
ranges only A maps added from A's own map, each drawn range carrying its change state from
:func:`gdbext.frontend.diff.diff`: ``added`` and ``changed`` where B's ranges fall in such a
change (a merged range is cut at a change's ends, so that a state is never smeared over its
neighbours), ``removed`` for A's pieces inside a removed change, ``""`` elsewhere. The
changes themselves go with the map, for what the page shows on hover.

Each table is walked twice (once by the diff, once for the picture): the diff stays the one
comparison ``diff`` makes, and a walk of a merged map costs about what a diff does.
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_right
from collections.abc import Sequence

from gdbext.frontend.addrmap import MapOptions, MapResult, Span, address_map, aggregate_states
from gdbext.frontend.commands import RootOptions
from gdbext.frontend.diff import DiffOptions, diff
from gdbext.plugin.target import Target
from gdbext.x86.diff import REMOVED, Change
from gdbext.x86.merge import MergedRange
from gdbext.x86.records import AliasRun

_Record = MergedRange | AliasRun | Span


def diff_map(
    old_target: Target, new_target: Target, old_root: RootOptions, options: MapOptions
) -> MapResult:
    """B's map (``options.root`` on ``new_target``) with A's removed ranges (``old_root`` on
    ``old_target``), every range with its change state.

    :raises UsageError: the two tables have different paging modes (as ``diff``).
    """
    result = diff(
        old_target,
        new_target,
        DiffOptions(
            old=old_root, new=options.root, labels=options.labels, max_leaves=options.max_leaves
        ),
    )
    whole = dataclasses.replace(options, max_ranges=1 << 62)
    new_map = address_map(new_target, whole)
    present = [c for c in result.changes if c.kind != REMOVED]
    removed = [c for c in result.changes if c.kind == REMOVED]
    records, states = cut(new_map.records, present, keep_outside=True)
    if removed:
        old_map = address_map(old_target, dataclasses.replace(whole, root=old_root))
        old_records, old_states = cut(old_map.records, removed, keep_outside=False)
        pairs = sorted(
            zip(records + old_records, states + old_states, strict=True),
            key=lambda p: p[0].vaddr,
        )
        records = [p[0] for p in pairs]
        states = [p[1] for p in pairs]
    drawn, drawn_states, how = aggregate_states(records, states, options.max_ranges)
    warnings = list(result.warnings)
    warnings += [w for w in new_map.warnings if w not in warnings]
    return dataclasses.replace(
        new_map,
        records=drawn,
        states=drawn_states,
        aggregated=how,
        warnings=warnings,
        changes=result.changes,
        diff_names=(result.old_name, result.new_name),
    )


def cut(
    records: Sequence[_Record], changes: Sequence[Change], *, keep_outside: bool
) -> tuple[list[_Record], list[str]]:
    """``records`` cut at the ends of ``changes`` (sorted, disjoint) that fall inside merged
    ranges, each piece with the kind of the change it lies in (``""`` outside any); pieces
    outside every change are dropped unless ``keep_outside``. An alias is not cut: it takes
    the first change it overlaps."""
    ends = [c.end for c in changes]
    out: list[_Record] = []
    states: list[str] = []

    def put(rec: _Record, state: str) -> None:
        if state or keep_outside:
            out.append(rec)
            states.append(state)

    for rec in records:
        i = bisect_right(ends, rec.vaddr)
        overlapping = []
        while i < len(changes) and changes[i].start < rec.end:
            overlapping.append(changes[i])
            i += 1
        if not overlapping:
            put(rec, "")
            continue
        if not isinstance(rec, MergedRange):
            put(rec, overlapping[0].kind)
            continue
        piece = rec
        for c in overlapping:
            for edge, state in ((c.start, ""), (c.end, c.kind)):
                if piece.vaddr < edge < piece.end and edge % 4096 == 0:
                    head, piece = piece.split(edge)
                    put(head, state)
        last = overlapping[-1]
        put(piece, last.kind if piece.vaddr >= last.start and piece.vaddr < last.end else "")
    return out, states
