"""Sweeps over physical frames, for the rules that compare mappings of the same frames.

``alias-wx``, ``pt-writable-alias`` and ``heap-contract`` ask "which other mappings share these
frames?". They never expand pages: each view's :attr:`~gdbext.audit.views.AuditView.frame_index`
lists its leaves as :class:`~gdbext.audit.context.LeafSpan` objects sorted by physical address
(a collapsed alias is one span per leaf run of its first walk, whatever its number of links),
and :func:`overlap_pairs` sweeps two such lists against each other once, in physical order.

>>> from gdbext.x86.records import LeafRun
>>> from gdbext.audit.spans import LeafSpan
>>> w = LeafSpan(LeafRun(0xffff888000000000, 0x0, 4, 4096, 0x8000000000000003, False, True, False))
>>> x = LeafSpan(LeafRun(0xffffffff81000000, 0x2000, 1, 4096, 0x2001, False, False, True))
>>> [(hex(a.vaddr), hex(b.vaddr), hex(lo), hex(hi)) for a, b, lo, hi in overlap_pairs([w], [x])]
[('0xffff888000000000', '0xffffffff81000000', '0x2000', '0x3000')]
>>> hex(va_at(w, 0x2000))
'0xffff888000002000'
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from gdbext.flags import perm_text

if TYPE_CHECKING:
    from gdbext.audit.spans import LeafSpan

__all__ = [
    "is_offset_mapping",
    "mapping_lines",
    "overlap_pairs",
    "perm_key",
    "places",
    "span_text",
    "va_at",
    "where",
]


#: Mappings listed one by one in a finding's evidence.
LISTED = 8


def va_at(span: LeafSpan, paddr: int) -> int:
    """The virtual address (of the span's first copy) that maps ``paddr``."""
    return span.vaddr + (paddr - span.paddr)


def is_offset_mapping(span: LeafSpan, base: int | None) -> bool:
    """True if ``span`` maps its frames at ``VA == base + PA`` (a direct map at ``base``),
    without copies elsewhere."""
    return base is not None and not span.reps and span.vaddr - span.paddr == base


def places(spans: Sequence[LeafSpan], lo: int, hi: int) -> tuple[int, int, int]:
    """Where ``spans`` map the frames ``[lo, hi)``: the lowest virtual address of a copy, the
    highest, and how many mappings (copies counted) there are."""
    firsts = [va_at(s, lo) for s in spans]
    lasts = [va_at(s, lo) + s.last_end - s.end for s in spans]
    return min(firsts), max(lasts), sum(s.copies for s in spans)


def where(spans: Sequence[LeafSpan], lo: int, hi: int) -> str:
    """``0xV-0xE``: the lowest virtual range at which ``spans`` map ``[lo, hi)``, then
    ``" and N more mappings up to 0xL"`` when there are more (collapsed aliases' copies, or
    several spans)."""
    first, last, count = places(spans, lo, hi)
    text = f"0x{first:x}-0x{first + hi - lo:x}"
    if count > 1:
        more = count - 1
        text += f" and {more} more mapping{'s' if more != 1 else ''} up to 0x{last + hi - lo:x}"
    return text


def span_text(spans: Sequence[LeafSpan], lo: int, hi: int) -> str:
    """:func:`where`, with the first span's effective permissions: ``0xV-0xE (rw- kern)``."""
    run = spans[0].run
    return f"{where(spans, lo, hi)} ({perm_text(run.user, run.writable, run.executable)})"


def mapping_lines(spans: Sequence[LeafSpan], lo: int, hi: int, label: str) -> list[str]:
    """Evidence lines: ``"LABEL 0xV-0xE (rw- kern)"`` for each of ``spans`` (at most
    :data:`LISTED`), with each one's copies when a collapsed alias maps it again."""
    lines = [f"{label} {span_text([s], lo, hi)}" for s in spans[:LISTED]]
    if len(spans) > LISTED:
        lines.append(f"{label} ... {len(spans) - LISTED} more")
    return lines


def perm_key(span: LeafSpan) -> tuple[bool, bool, bool]:
    """The span's effective permissions: ``(user, writable, executable)``."""
    run = span.run
    return run.user, run.writable, run.executable


def overlap_pairs(
    left: Sequence[LeafSpan], right: Sequence[LeafSpan]
) -> Iterator[tuple[LeafSpan, LeafSpan, int, int]]:
    """Every pair of a span of ``left`` and a span of ``right`` that share frames, with the
    shared physical range ``[lo, hi)``; both lists sorted by physical address.

    One sweep over both lists in physical order, keeping the spans that cover the current
    address: the cost is the spans plus the pairs found (plus, per span, the spans that map
    its first frame too), never the pages. A span in both lists is paired with itself.
    """
    i = j = 0
    active_left: list[LeafSpan] = []
    active_right: list[LeafSpan] = []
    nl, nr = len(left), len(right)
    while i < nl or j < nr:
        take_left = j >= nr or (i < nl and left[i].paddr <= right[j].paddr)
        if take_left:
            span = left[i]
            i += 1
            mine, theirs = active_left, active_right
        else:
            span = right[j]
            j += 1
            mine, theirs = active_right, active_left
        start = span.paddr
        if theirs and any(t.paddr_end <= start for t in theirs):
            theirs[:] = [t for t in theirs if t.paddr_end > start]
        end = span.paddr_end
        for other in theirs:
            hi = other.paddr_end if other.paddr_end < end else end
            if take_left:
                yield span, other, start, hi
            else:
                yield other, span, start, hi
        mine.append(span)
