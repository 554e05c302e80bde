"""Rule ``heap-contract``: the seed kernel's heap contract.

The seed kernel (booted by the rust-osdev ``bootloader`` crate) puts its heap in the largest
usable region of the memory map, seen through the direct map at ``physical_memory_offset``
(:func:`gdbext.heap.locate_kernel_heap`; the ``heap`` command). The contract: that virtual
range is

1. mapped, every page of it;
2. writable and not executable (effective permissions; NX counts only with EFER.NXE);
3. the only mapping of its frames, but for the direct map itself (``VA == offset + PA``): any
   other mapping of a heap frame lets a write through one name change what the other reads,
   and an executable one runs what the heap holds.

The heap comes from the audit's heap options, as ``gdbext heap`` takes them (``--memmap
bootinfo|e820|json``, ``--at``, ``--phys-offset``); without them the rule is skipped.
Points 1 and 2 are checked in the kernel's table (the kernel half of a PTI pair, else the
selected table), from the audit's shared walk; point 3 in every table audited (the selected
one and, under PTI, both halves), by one sweep of each view's frame index (sorted by
physical address) against the heap's frames, never page by page.

Severities: ``high`` (the default) for a hole, wrong permissions, or another mapping that is
writable or executable; ``medium`` for another read-only, no-execute mapping (it still shows
the heap's contents where the contract says nothing else does).

On Linux (the committed dumps, with ``--memmap e820``) the contract does not hold and is not
meant to: the largest usable e820 region holds the kernel image (mapped again at
``__START_KERNEL_map``), vmalloc'd memory, the fixmap, cpu_entry_area, ESPFIX stacks and
every process's pages, and the direct map of the kernel's text and read-only data is
read-only.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise

from gdbext.addr import AddrRange, merge_ranges
from gdbext.audit.context import AuditContext
from gdbext.audit.frames import (
    is_offset_mapping,
    mapping_lines,
    perm_key,
    places,
    span_text,
    va_at,
)
from gdbext.audit.model import Finding, Severity
from gdbext.audit.spans import LeafSpan
from gdbext.audit.views import AuditView
from gdbext.flags import perm_text
from gdbext.frontend.heap import HeapResult
from gdbext.geometry import SIZE_4K
from gdbext.x86.records import AliasRun, LeafRun

__all__ = ["HeapContractRule", "HeapPiece", "heap_pieces"]


@dataclass(frozen=True, slots=True)
class HeapPiece:
    """``[vaddr, end)`` of the heap, mapped to ``paddr`` onward with ``run``'s permissions."""

    vaddr: int
    end: int
    paddr: int
    run: LeafRun


def heap_pieces(view: AuditView, heap: AddrRange) -> list[HeapPiece]:
    """The mapped parts of ``heap`` in ``view``, in virtual-address order, from the view's
    shared walk (leaf runs, and the copies of collapsed aliases that meet the range)."""
    records = view.records
    lo, hi = heap.start, heap.end
    first = max(0, bisect_right(records, lo, key=lambda r: r.vaddr) - 1)
    pieces: list[HeapPiece] = []
    for rec in records[first:]:
        if rec.vaddr >= hi:
            break
        if type(rec) is LeafRun:
            _clip(pieces, rec, rec.vaddr, lo, hi)
        elif type(rec) is AliasRun and rec.end > lo:
            for span in view.alias_spans(rec):
                if span.last_end <= lo or span.vaddr >= hi:
                    continue
                for start in span.starts_in(lo, hi):
                    _clip(pieces, span.run, start, lo, hi)
    pieces.sort(key=lambda p: p.vaddr)
    return pieces


def _clip(pieces: list[HeapPiece], run: LeafRun, start: int, lo: int, hi: int) -> None:
    """Add the part of ``run`` (moved to ``start``) inside ``[lo, hi)``."""
    end = start + run.count * run.page_size
    a, b = max(start, lo), min(end, hi)
    if a < b:
        pieces.append(HeapPiece(a, b, run.paddr + (a - start), run))


def _problems(run: LeafRun) -> tuple[str, ...]:
    out = []
    if not run.writable:
        out.append("not writable")
    if run.executable:
        out.append("executable")
    return tuple(out)


def _frames(pieces: list[HeapPiece]) -> list[AddrRange]:
    """The physical ranges the heap's pages map, sorted and merged."""
    return merge_ranges(AddrRange(p.paddr, p.paddr + p.end - p.vaddr) for p in pieces)


@dataclass
class _Other:
    """Heap frames ``[paddr, paddr_end)`` that ``spans`` of ``view`` map too (with equal
    permissions; several spans when collapsed aliases or other mappings map them again)."""

    view: AuditView
    spans: list[LeafSpan]
    paddr: int
    paddr_end: int

    def plain(self) -> LeafSpan | None:
        """The one span, when there is one and no alias maps it again."""
        return self.spans[0] if len(self.spans) == 1 and not self.spans[0].reps else None


def _other_mappings(
    views: list[AuditView], frames: list[AddrRange], offset: int
) -> Iterator[_Other]:
    """For each view, the mappings but the direct map at ``offset`` that meet ``frames``: one
    per frame range and permissions, then plain ones that continue each other merged."""
    starts = [r.start for r in frames]
    ends = [r.end for r in frames]
    for view in views:
        groups: dict[tuple[object, ...], _Other] = {}
        for span in view.frame_index.spans:
            if is_offset_mapping(span, offset):
                continue
            i = bisect_right(ends, span.paddr)
            stop = bisect_left(starts, span.paddr_end, i)
            for a, b in zip(starts[i:stop], ends[i:stop], strict=True):
                lo, hi = max(a, span.paddr), min(b, span.paddr_end)
                key = (lo, hi, perm_key(span))
                group = groups.get(key)
                if group is None:
                    groups[key] = _Other(view, [span], lo, hi)
                else:
                    group.spans.append(span)
        yield from _merge_others(list(groups.values()))


def _merge_others(found: list[_Other]) -> Iterator[_Other]:
    """Plain hits that continue each other (contiguous in VA and PA, same permissions)."""
    found.sort(key=lambda o: (va_at(o.spans[0], o.paddr) if o.plain() else -1, o.paddr))
    last: _Other | None = None
    for other in found:
        a, b = (None, None) if last is None else (last.plain(), other.plain())
        if (
            last is not None
            and a is not None
            and b is not None
            and va_at(a, last.paddr_end) == va_at(b, other.paddr)
            and last.paddr_end == other.paddr
            and perm_key(a) == perm_key(b)
        ):
            last = _Other(last.view, last.spans, last.paddr, other.paddr_end)
            continue
        if last is not None:
            yield last
        last = other
    if last is not None:
        yield last


class HeapContractRule:
    id = "heap-contract"
    severity = Severity.HIGH
    summary = "the heap is mapped, writable, no-execute, and its frames nowhere else"

    def check(self, ctx: AuditContext) -> Iterator[Finding]:
        heap = ctx.heap()
        pti = ctx.pti
        view = pti.kernel if pti is not None else ctx.main
        pieces = heap_pieces(view, heap.range)
        yield from self._holes(ctx, view, heap, pieces)
        yield from self._permissions(ctx, view, heap, pieces)
        heap_va = _HeapVa(pieces)
        for other in _other_mappings(ctx.views, _frames(pieces), heap.physical_memory_offset):
            yield self._other(ctx, heap, heap_va, other)

    def _heap_text(self, heap: HeapResult) -> str:
        return f"heap 0x{heap.range.start:x}-0x{heap.range.end:x}"

    def _holes(
        self, ctx: AuditContext, view: AuditView, heap: HeapResult, pieces: list[HeapPiece]
    ) -> Iterator[Finding]:
        cursor = heap.range.start
        for piece in [*pieces, None]:
            stop = heap.range.end if piece is None else piece.vaddr
            if cursor < stop:
                n = (stop - cursor) // SIZE_4K
                yield ctx.finding(
                    self,
                    view,
                    f"{self._heap_text(heap)}: 0x{cursor:x}-0x{stop:x} ({n} page"
                    f"{'s' if n != 1 else ''}) is not mapped",
                    vaddr=cursor,
                    end=stop,
                    pages=n,
                )
            if piece is not None:
                cursor = max(cursor, piece.end)

    def _permissions(
        self, ctx: AuditContext, view: AuditView, heap: HeapResult, pieces: list[HeapPiece]
    ) -> Iterator[Finding]:
        group: list[HeapPiece] = []
        for piece in [*pieces, None]:
            if group and (
                piece is None
                or piece.vaddr != group[-1].end
                or (piece.run.user, piece.run.writable, piece.run.executable)
                != (group[0].run.user, group[0].run.writable, group[0].run.executable)
            ):
                problems = _problems(group[0].run)
                if problems:
                    yield self._bad_permissions(ctx, view, heap, group, problems)
                group = []
            if piece is not None:
                group.append(piece)

    def _bad_permissions(
        self,
        ctx: AuditContext,
        view: AuditView,
        heap: HeapResult,
        group: list[HeapPiece],
        problems: tuple[str, ...],
    ) -> Finding:
        first, last = group[0], group[-1]
        contiguous = all(b.paddr == a.paddr + (a.end - a.vaddr) for a, b in pairwise(group))
        run = first.run
        return ctx.finding(
            self,
            view,
            f"{self._heap_text(heap)}: 0x{first.vaddr:x}-0x{last.end:x} is "
            f"{' and '.join(problems)} ({perm_text(run.user, run.writable, run.executable)})",
            vaddr=first.vaddr,
            end=last.end,
            paddr=first.paddr,
            paddr_end=last.paddr + (last.end - last.vaddr) if contiguous else None,
            user=run.user,
            writable=run.writable,
            executable=run.executable,
        )

    def _other(
        self, ctx: AuditContext, heap: HeapResult, heap_va_of: _HeapVa, other: _Other
    ) -> Finding:
        spans, run = other.spans, other.spans[0].run
        lo, hi = other.paddr, other.paddr_end
        heap_va = heap_va_of(lo)
        severity = Severity.HIGH if run.writable or run.executable else Severity.MEDIUM
        va, _, count = places(spans, lo, hi)
        at = f" (heap 0x{heap_va:x}-0x{heap_va + hi - lo:x})" if heap_va is not None else ""
        message = f"heap frames 0x{lo:x}-0x{hi:x}{at} are also mapped at {span_text(spans, lo, hi)}"
        evidence = mapping_lines(spans, lo, hi, "also mapped at")
        if heap_va is not None:
            evidence.append(
                f"direct map: 0x{heap.physical_memory_offset:x} + PA (physical_memory_offset)"
            )
        return ctx.finding(
            self,
            other.view,
            message,
            vaddr=va,
            end=va + hi - lo,
            paddr=lo,
            paddr_end=hi,
            user=run.user,
            writable=run.writable,
            executable=run.executable,
            pages=(hi - lo) // SIZE_4K * count,
            severity=severity,
            evidence=evidence,
        )


class _HeapVa:
    """The heap address that maps a frame: the pieces sorted by physical address, bisected."""

    def __init__(self, pieces: list[HeapPiece]) -> None:
        self.pieces = sorted(pieces, key=lambda p: p.paddr)
        self.starts = [p.paddr for p in self.pieces]

    def __call__(self, paddr: int) -> int | None:
        i = bisect_right(self.starts, paddr)
        # The last piece starting at or below it, else (pieces may overlap physically, when
        # the heap maps a frame twice) any earlier one.
        for piece in reversed(self.pieces[:i]):
            if paddr < piece.paddr + (piece.end - piece.vaddr):
                return piece.vaddr + (paddr - piece.paddr)
        return None


RULES = (HeapContractRule(),)
