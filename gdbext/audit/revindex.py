"""The reverse index of one walk: physical frames to the virtual addresses that map them.

:class:`ReverseIndex` is built from the leaf spans of ONE collapsed walk
(:attr:`~gdbext.audit.views.TableWalk.spans`): a collapsed alias stays one span with its
repetitions (``count`` links ``stride`` bytes apart), never expanded. The spans' physical
boundaries cut the physical address space into elementary segments, each with the spans that
cover it all; a lookup is a bisection over the segment starts, then the few spans of the
segments it meets, so its cost does not grow with the size of the walk (only with the number
of mappings answered). A range inside one segment (a frame, usually) is answered from that
segment's spans kept in answer order: every span covers all of it, so each answer is the span's
VA-PA offset plus the range, no clipping and no sort (Linux's ESPFIX frame is 129 spans).

>>> from gdbext.audit.spans import LeafSpan
>>> from gdbext.x86.records import LeafRun
>>> NX = 1 << 63
>>> dm = LeafSpan(LeafRun(0xffff888000000000, 0, 512, 4096, NX | 0x63, False, True, False))
>>> tx = LeafSpan(LeafRun(0xffffffff81000000, 0x1000, 2, 4096, 0x161, False, False, True))
>>> ix = ReverseIndex([dm, tx])
>>> [(hex(p.vaddr), p.size, p.writable) for p in ix.lookup(0x1800, 0x1801)]
[('0xffff888000001800', 1, True), ('0xffffffff81000800', 1, False)]
>>> [(hex(lo), hex(hi), len(s)) for lo, hi, s in ix.shared()]
[('0x1000', '0x3000', 2)]
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator, Sequence
from functools import partial
from itertools import repeat
from operator import add
from typing import Any, NamedTuple

from gdbext.addr import hex_repr
from gdbext.audit.spans import LeafSpan

__all__ = ["Place", "ReverseIndex", "brute_force", "place_of"]


@hex_repr("vaddr", "paddr", "size", "page_size")
class Place(NamedTuple):
    """Where ``size`` bytes of physical memory at ``paddr`` are mapped: at ``vaddr`` and, when
    a collapsed alias repeats the leaves, again at every ``vaddr + k1*stride1 + ...`` with
    ``0 <= ki < counti`` (``reps``, innermost first; :attr:`copies` in all), with the same
    effective permissions in each copy."""

    vaddr: int
    paddr: int
    size: int
    page_size: int
    #: The leaf's raw entry (the first leaf of its run).
    entry: int
    user: bool
    writable: bool
    executable: bool
    reps: tuple[tuple[int, int], ...] = ()

    @property
    def copies(self) -> int:
        return math.prod(c for c, _ in self.reps)

    @property
    def perm(self) -> tuple[bool, bool, bool]:
        """``(user, writable, executable)``."""
        return (self.user, self.writable, self.executable)

    def vaddrs(self, limit: int | None = None) -> list[int]:
        """The virtual address of each copy, lowest first (at most ``limit``)."""
        starts = [self.vaddr]
        for count, stride in self.reps:
            starts = [a + k * stride for k in range(count) for a in starts]
            if limit is not None and len(starts) > limit:
                starts = sorted(starts)[:limit]
        return sorted(starts)[:limit]


def place_of(span: LeafSpan, lo: int, hi: int) -> Place:
    """The part of ``span`` that maps the physical ``[lo, hi)`` (which it covers)."""
    run = span.run
    return Place(
        run.vaddr + (lo - run.paddr),
        lo,
        hi - lo,
        run.page_size,
        run.entry,
        run.user,
        run.writable,
        run.executable,
        span.reps,
    )


_new_place = partial(tuple.__new__, Place)

#: What a :class:`Place` holds after ``(vaddr, paddr, size)``.
_Tail = tuple[int, int, bool, bool, bool, tuple[tuple[int, int], ...]]

#: Segments covered by more spans than this answer from columns (a lookup's C loops then
#: outrun its bytecode one: Linux's ESPFIX frame, 129 spans).
_COLUMNS_FROM = 8


class ReverseIndex:
    """Physical ranges to the leaf spans that map them, for logarithmic lookups.

    Memory: one segment per distinct span boundary, each holding the spans that cover it
    (a handful where frames are mapped once or twice, as in Linux's direct map and image),
    twice: as span numbers, and in answer order with what an answer copies from each.
    """

    def __init__(self, spans: Iterable[LeafSpan]) -> None:
        #: The spans, by physical start.
        self.spans: list[LeafSpan] = sorted(spans, key=lambda s: (s.paddr, s.vaddr))
        events: list[tuple[int, int, int]] = []  # (paddr, 0 end / 1 start, span)
        for i, s in enumerate(self.spans):
            events.append((s.paddr, 1, i))
            events.append((s.paddr_end, 0, i))
        events.sort()
        starts: list[int] = []
        covers: list[tuple[int, ...]] = []
        active: dict[int, None] = {}
        n = len(events)
        k = 0
        while k < n:
            at = events[k][0]
            while k < n and events[k][0] == at:
                _, kind, i = events[k]
                if kind:
                    active[i] = None
                else:
                    del active[i]
                k += 1
            starts.append(at)
            covers.append(tuple(active))
        #: Each span's fields a lookup needs, flat: (paddr, paddr_end, vaddr, page_size, entry,
        #: user, writable, executable, reps).
        self._rows = [
            (
                s.run.paddr,
                s.paddr_end,
                s.run.vaddr,
                s.run.page_size,
                s.run.entry,
                s.run.user,
                s.run.writable,
                s.run.executable,
                s.reps,
            )
            for s in self.spans
        ]
        #: Segment ``j`` is ``[starts[j], starts[j + 1])``, covered by the spans ``covers[j]``
        #: (the last one, after every span's end, by none).
        self.starts = starts
        self.covers = covers
        # Per segment, its spans in the order of their places for any range inside it (by VA,
        # then the rest, as lookup sorts): (vaddr - paddr, the rest of a Place) each, and as
        # columns where it holds many (built by C loops, the spans' VAs then cost no bytecode).
        keyed = [(r[2] - r[0], r[3:]) for r in self._rows]
        self._ordered: list[tuple[tuple[int, _Tail], ...]] = [
            tuple(sorted([keyed[i] for i in cover])) for cover in covers
        ]
        self._columns: dict[int, tuple[tuple[Any, ...], ...]] = {
            j: tuple(zip(*[(d, *t) for d, t in ordered], strict=True))
            for j, ordered in enumerate(self._ordered)
            if len(ordered) > _COLUMNS_FROM
        }

    def __len__(self) -> int:
        return len(self.spans)

    def lookup(self, start: int, end: int) -> list[Place]:
        """Every mapping of the physical range ``[start, end)``, each clipped to it, by
        virtual address."""
        starts, covers, rows = self.starts, self.covers, self._rows
        n = len(starts)
        j = bisect.bisect_right(starts, start) - 1
        if j >= 0 and start < end and (j + 1 == n or end <= starts[j + 1]):
            # Inside segment j: every span of it covers [start, end) whole.
            size = end - start
            new = tuple.__new__
            columns = self._columns.get(j)
            if columns is None:
                return [new(Place, (d + start, start, size, *t)) for d, t in self._ordered[j]]
            deltas, *tail = columns
            fixed = (map(add, deltas, repeat(start)), repeat(start), repeat(size))
            return list(map(new, repeat(Place), zip(*fixed, *tail, strict=False)))
        j = max(0, j)
        seen: dict[int, None] = {}
        while j < n and starts[j] < end:
            seen.update(dict.fromkeys(covers[j]))
            j += 1
        out = []
        for i in seen:
            pa, pa_end, va, ps, entry, user, writable, executable, reps = rows[i]
            lo = start if start > pa else pa
            hi = end if end < pa_end else pa_end
            out.append(
                _new_place((va + lo - pa, lo, hi - lo, ps, entry, user, writable, executable, reps))
            )
        out.sort()
        return out

    def shared(self) -> Iterator[tuple[int, int, Sequence[LeafSpan]]]:
        """``(start, end, spans)``: the physical ranges more than one span maps (a span's own
        copies aside), maximal over equal sets of spans, in physical order."""
        starts, covers, spans = self.starts, self.covers, self.spans
        j = 0
        while j < len(covers):
            cover = covers[j]
            if len(cover) < 2:
                j += 1
                continue
            k = j + 1
            while k < len(covers) and covers[k] == cover:
                k += 1
            yield starts[j], starts[k], [spans[i] for i in cover]
            j = k


def brute_force(spans: Sequence[LeafSpan], start: int, end: int) -> list[Place]:
    """:meth:`ReverseIndex.lookup` by scanning every span (for tests and comparison)."""
    out = [
        place_of(s, max(start, s.paddr), min(end, s.paddr_end))
        for s in spans
        if s.paddr < end and s.paddr_end > start
    ]
    out.sort()
    return out
