"""Leaf spans: a leaf run of a walk and where collapsed aliases map it again, and what is
built of them (a physical index, groups of spans that continue each other).

A table linked 65,536 times (Linux's ESPFIX area) is one :class:`LeafSpan` with a repetition,
not 65,536 runs: the audit works on spans and intervals, never page by page.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise

from gdbext.geometry import SIZE_4K
from gdbext.x86.records import AliasRun, LeafRun

__all__ = ["FrameIndex", "LeafSpan", "group_range", "merge_spans", "repeats_text"]


@dataclass(frozen=True, slots=True)
class LeafSpan:
    """A :class:`LeafRun`, and where collapsed aliases map the same leaves again.

    ``run`` is the first copy, with the effective permissions of the path that maps it. ``reps``
    lists ``(count, stride)`` repetitions, innermost first: the run is mapped at every
    ``run.vaddr + k1*stride1 + k2*stride2 ...`` with ``0 <= ki < counti`` (each copy maps the
    same frames with the same permissions). A run the walk reached directly has no
    repetitions. ``alias`` is the outermost :class:`AliasRun` the copies come from (``None``
    for a directly walked run).

    >>> run = LeafRun(0x1000, 0x5000, 2, 4096, 0x5003, False, True, True)
    >>> s = LeafSpan(run, ((3, 0x200000),))
    >>> s.copies, s.pages, hex(s.last_end)
    (3, 6, '0x403000')
    >>> s.pages_in(0, 0x200000 + 0x2000)
    3
    """

    run: LeafRun
    reps: tuple[tuple[int, int], ...] = ()
    alias: AliasRun | None = None

    @property
    def vaddr(self) -> int:
        return self.run.vaddr

    @property
    def end(self) -> int:
        """End of the first copy (exclusive)."""
        return self.run.vaddr + self.run.count * self.run.page_size

    @property
    def paddr(self) -> int:
        return self.run.paddr

    @property
    def paddr_end(self) -> int:
        return self.run.paddr + self.run.count * self.run.page_size

    @property
    def size(self) -> int:
        """Bytes of one copy."""
        return self.run.count * self.run.page_size

    @property
    def copies(self) -> int:
        return math.prod(c for c, _ in self.reps)

    @property
    def pages(self) -> int:
        """4 KiB units mapped, every copy counted."""
        return self.size // SIZE_4K * self.copies

    @property
    def last_end(self) -> int:
        """End of the last copy (exclusive): the span's copies all lie in ``[vaddr, last_end)``."""
        return self.end + sum((c - 1) * s for c, s in self.reps)

    def starts(self) -> Iterator[int]:
        """The virtual start of every copy (one per copy: use only where copies are few, else
        :meth:`starts_in`)."""
        starts = [self.run.vaddr]
        for count, stride in self.reps:
            starts = [a + k * stride for k in range(count) for a in starts]
        return iter(sorted(starts))

    def starts_in(self, lo: int, hi: int) -> Iterator[int]:
        """The virtual start of every copy that meets ``[lo, hi)``, in order, without visiting
        the copies that do not (a table linked at every level has millions).

        >>> run = LeafRun(0x1000, 0x5000, 1, 4096, 0x5003, False, True, True)
        >>> s = LeafSpan(run, ((512, 0x200000), (512, 0x40000000)))
        >>> [hex(a) for a in s.starts_in(0x40000000, 0x40400001)]
        ['0x40001000', '0x40201000']
        """
        return _starts_in(self.run.vaddr, self.size, self.reps, lo, hi)

    def pages_in(self, lo: int, hi: int) -> int:
        """4 KiB units of all copies that lie in ``[lo, hi)``, without expanding copies that
        lie wholly inside or outside."""
        return _bytes_in(self.run.vaddr, self.size, self.reps, lo, hi) // SIZE_4K

    def shifted(self, delta: int, rep: tuple[int, int] | None, alias: AliasRun | None) -> LeafSpan:
        """This span moved by ``delta`` in VA, with one more (outer) repetition ``rep``."""
        run = self.run._replace(vaddr=self.run.vaddr + delta) if delta else self.run
        reps = self.reps if rep is None else (*self.reps, rep)
        return LeafSpan(run, reps, alias if alias is not None else self.alias)


def _starts_in(
    start: int, size: int, reps: tuple[tuple[int, int], ...], lo: int, hi: int
) -> Iterator[int]:
    if not reps:
        if start < hi and start + size > lo:
            yield start
        return
    count, stride = reps[-1]
    inner = reps[:-1]
    extent = size + sum((c - 1) * s for c, s in inner)  # one outer copy
    first = max(0, (lo - extent - start) // stride + 1) if stride > 0 else 0
    last = min(count - 1, (hi - 1 - start) // stride) if stride > 0 else count - 1
    for k in range(first, last + 1):
        yield from _starts_in(start + k * stride, size, inner, lo, hi)


def _bytes_in(start: int, size: int, reps: tuple[tuple[int, int], ...], lo: int, hi: int) -> int:
    if not reps:
        return max(0, min(hi, start + size) - max(lo, start))
    count, stride = reps[-1]
    inner = reps[:-1]
    extent = size + sum((c - 1) * s for c, s in inner)  # one outer copy
    total = size * math.prod(c for c, _ in inner)
    if stride <= 0:
        return sum(_bytes_in(start + k * stride, size, inner, lo, hi) for k in range(count))
    # Copies wholly inside [lo, hi): k in [k_full_lo, k_full_hi].
    k_full_lo = max(0, -((start - lo) // stride))  # ceil((lo - start) / stride)
    k_full_hi = min(count - 1, (hi - extent - start) // stride)
    # Copies that meet [lo, hi): start + k*stride < hi and start + k*stride + extent > lo.
    k_any_lo = max(0, (lo - extent - start) // stride + 1)
    k_any_hi = min(count - 1, (hi - 1 - start) // stride)
    if k_any_lo > k_any_hi:
        return 0
    result = 0
    if k_full_lo <= k_full_hi:
        result = (k_full_hi - k_full_lo + 1) * total
        edges: Iterable[int] = (
            *range(k_any_lo, min(k_full_lo, k_any_hi + 1)),
            *range(max(k_full_hi + 1, k_any_lo), k_any_hi + 1),
        )
    else:
        edges = range(k_any_lo, k_any_hi + 1)
    for k in edges:
        result += _bytes_in(start + k * stride, size, inner, lo, hi)
    return result


# --- frame index -----------------------------------------------------------------------------


class FrameIndex:
    """Leaf spans sorted by physical address, for overlap queries and sweeps.

    Every span (aliases included: a collapsed alias maps the same frames as its first walk,
    with its own path's permissions) is one entry, whatever its number of copies.
    """

    def __init__(self, spans: Iterable[LeafSpan]) -> None:
        #: The spans, by (paddr, paddr_end, vaddr).
        self.spans: list[LeafSpan] = sorted(spans, key=lambda s: (s.paddr, s.size, s.vaddr))
        self._starts = [s.paddr for s in self.spans]
        self._longest = max((s.size for s in self.spans), default=0)

    def __len__(self) -> int:
        return len(self.spans)

    def __iter__(self) -> Iterator[LeafSpan]:
        return iter(self.spans)

    def overlapping(self, start: int, end: int) -> list[LeafSpan]:
        """The spans whose frames meet ``[start, end)``, by physical address."""
        lo = bisect.bisect_right(self._starts, start - self._longest)
        hi = bisect.bisect_left(self._starts, end)
        return [s for s in self.spans[lo:hi] if s.paddr_end > start]

    def groups(self) -> Iterator[list[LeafSpan]]:
        """Maximal groups of spans whose physical ranges overlap one another transitively (a
        sweep); a group of one span is a frame range mapped only once."""
        group: list[LeafSpan] = []
        reach = -1
        for span in self.spans:
            if group and span.paddr >= reach:
                yield group
                group = []
            group.append(span)
            reach = max(reach, span.paddr_end) if len(group) > 1 else span.paddr_end
        if group:
            yield group


def merge_spans(spans: Iterable[LeafSpan]) -> Iterator[list[LeafSpan]]:
    """Group spans without repetitions that follow each other in VA (each starts where the
    previous ends) and have the same effective permissions, for one finding per merged
    range; a span with repetitions is a group of its own."""
    group: list[LeafSpan] = []
    for span in spans:
        if group and not span.reps and not group[-1].reps:
            prev = group[-1].run
            run = span.run
            if run.vaddr == group[-1].end and (run.user, run.writable, run.executable) == (
                prev.user,
                prev.writable,
                prev.executable,
            ):
                group.append(span)
                continue
        if group:
            yield group
        group = [span]
    if group:
        yield group


def repeats_text(span: LeafSpan) -> str:
    """``"mapped 64 times, every 0x200000 bytes from 0xffffff0000000000 (a table first mapped
    at 0xffffff0000000000)"``: how a collapsed alias repeats ``span`` (which has repetitions)."""
    alias = span.alias
    first = f" (a table first mapped at 0x{alias.first_vaddr:x})" if alias is not None else ""
    return (
        f"mapped {span.copies} times, every 0x{span.reps[-1][1]:x} bytes from "
        f"0x{span.vaddr:x}{first}"
    )


def group_range(group: Sequence[LeafSpan]) -> tuple[int, int, int | None, int | None, int]:
    """``(vaddr, end, paddr, paddr_end, pages)`` of a group from :func:`merge_spans`;
    ``paddr_end`` is ``None`` when the frames are not contiguous."""
    first, last = group[0], group[-1]
    contiguous = all(b.paddr == a.paddr_end for a, b in pairwise(group))
    return (
        first.vaddr,
        last.end if not last.reps else last.last_end,
        first.paddr,
        last.paddr_end if contiguous else None,
        sum(s.pages for s in group),
    )
