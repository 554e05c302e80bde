"""``kaslr``'s core: what KASLR chose, and (``--leaks``) the values in memory that give it away.

:func:`kaslr` reports the randomised bases of :func:`~gdbext.linux.kaslr.kaslr_report`; with
``leaks`` it reads every user-accessible leaf of the selected root in ``range`` (default: the
user half) and keeps the 8-byte values that point into the kernel image, the modules area or the
direct map (:func:`~gdbext.linux.kaslr.pointer_regions`). Physical memory is read through
:func:`~gdbext.frontend.memread.read_memory` (its gaps skipped) in pieces of at most
:data:`PIECE` bytes, and the pointers found are kept, up to :data:`KEPT_POINTERS`, for the other
virtual addresses that map the same frames, every one of which is reported: what the command
holds is bounded by the tables and these two constants, not by the RAM or the leaks in it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field

from gdbext.addr import AddrRange
from gdbext.defaults import DEFAULT_MAX_LEAKS
from gdbext.flags import perm_text
from gdbext.frontend.commands import RootOptions, open_page_table, root_warnings, target_layout
from gdbext.frontend.memread import Chunk, ReadOptions, read_memory
from gdbext.geometry import PAGE_SIZE
from gdbext.linux.kaslr import (
    KaslrReport,
    PointerRegion,
    kaslr_report,
    pointer_regions,
    scan_pointers,
)
from gdbext.linux.layout import params
from gdbext.plugin.target import Target
from gdbext.x86.records import LeafRun

#: The most physical memory read and scanned at once (a run of leaves is split into pieces).
PIECE = 4 << 20

#: The most pointers kept for frames mapped again later; past it the frames read so far are
#: forgotten (and read again if a later run maps them).
KEPT_POINTERS = 1 << 17


@dataclass(frozen=True)
class KaslrOptions:
    root: RootOptions = field(default_factory=RootOptions)
    leaks: bool = False
    #: Where to look for leaks (default: the selected root's user half).
    range: AddrRange | None = None
    #: Only user-accessible pages (``--all-pages``: every page in the range).
    user_only: bool = True
    max_leaks: int = DEFAULT_MAX_LEAKS


@dataclass(frozen=True)
class Leak:
    """An 8-byte value at ``vaddr`` (frame ``paddr``) that points into ``region``."""

    vaddr: int
    paddr: int
    value: int
    region: str
    perms: str


@dataclass(frozen=True)
class KaslrResult:
    report: KaslrReport
    #: With ``leaks``: the regions searched for, the range searched, the leaks (at most
    #: ``max_leaks``) and how many there are in all.
    regions: tuple[PointerRegion, ...] = ()
    searched: AddrRange | None = None
    leaks: tuple[Leak, ...] | None = None
    total_leaks: int = 0
    root: int = 0
    warnings: tuple[str, ...] = ()

    def groups(self) -> dict[str, list[Leak]]:
        """The leaks by the region they point into, in region order."""
        out: dict[str, list[Leak]] = {r.name: [] for r in self.regions}
        for leak in self.leaks or ():
            out[leak.region].append(leak)
        return {k: v for k, v in out.items() if v}


def kaslr(target: Target, options: KaslrOptions = KaslrOptions()) -> KaslrResult:
    """KASLR's choices on ``target``, and with ``options.leaks`` the pointers that leak them."""
    pt = open_page_table(target, options.root)
    layout = target_layout(target, pt)
    report = kaslr_report(pt, target.facts, layout)
    warnings = tuple(root_warnings(pt, options.root))
    if not options.leaks:
        return KaslrResult(report, root=pt.root, warnings=warnings)
    ram_end = max((r.end for r in target.ram), default=None) if target.ram else None
    regions = pointer_regions(pt, target.facts, layout, ram_end)
    searched = options.range or AddrRange(0, params(pt.levels).user_end)
    leaks: list[Leak] = []
    total = 0
    runs = pt.iter_runs(searched, aliases="expand")
    for pointers, delta, perms in _leaks(target, runs, regions, options):
        if total < options.max_leaks:
            kept = pointers[: options.max_leaks - total]
            leaks += (Leak(at + delta, at, value, name, perms) for at, value, name in kept)
        total += len(pointers)
    return KaslrResult(report, tuple(regions), searched, tuple(leaks), total, pt.root, warnings)


#: The largest answer :class:`_Scanned` remembers by its range (64 of them at most).
_MEMO_POINTERS = 1024

#: A pointer in physical memory: ``(paddr, value, region name)``.
_Pointer = tuple[int, int, str]


def _leaks(
    target: Target,
    runs: Iterator[object],
    regions: list[PointerRegion],
    options: KaslrOptions,
) -> Iterator[tuple[list[_Pointer], int, str]]:
    """The leaks of each leaf run that has some, in virtual-address order: its pointers (by
    physical address), what to add to one's physical address for its virtual address, and the
    page's permissions (a :class:`Leak` is made only for those kept).

    A run is taken in pieces of at most :data:`PIECE` physical bytes. Each 4 KiB frame is read
    once while :class:`_Scanned` keeps its pointers for the other virtual addresses that map it,
    which are reported without reading it again. A piece costs with its pointers, not with its
    frames, and a run of frames met just before (ESPFIX's 65,536 copies of its stacks) costs
    one lookup.
    """
    searched = options.range
    scanned = _Scanned(target, regions, KEPT_POINTERS)
    for rec in runs:
        if type(rec) is not LeafRun or (options.user_only and not rec.user):
            continue
        lo, hi = rec.vaddr, rec.vaddr + rec.count * rec.page_size
        if searched is not None:
            lo, hi = max(lo, searched.start), min(hi, searched.end)
        if lo >= hi:
            continue
        delta = rec.vaddr - rec.paddr
        perms = perm_text(rec.user, rec.writable, rec.executable)
        for start in range(lo, hi, PIECE):
            pointers = scanned.pointers(start - delta, min(start + PIECE, hi) - delta)
            if pointers:
                yield pointers, delta, perms


class _Scanned:
    """The physical ranges read lately (disjoint, by address) and the pointers in each, by
    address: a frame is read once however many runs map it, while at most
    ``limit`` pointers are kept (past that, everything read before is forgotten)."""

    def __init__(self, target: Target, regions: list[PointerRegion], limit: int) -> None:
        self._target = target
        self._regions = regions
        self._limit = limit
        self._kept = 0
        self._starts: list[int] = []
        self._ends: list[int] = []
        #: Per range, its pointers ``(paddr, value, region name)`` and their addresses.
        self._found: list[list[_Pointer]] = []
        self._at: list[list[int]] = []
        #: The answer of the last ranges asked, again (a table linked many times over).
        self._last: dict[tuple[int, int], list[_Pointer]] = {}

    def pointers(self, lo: int, hi: int) -> list[_Pointer]:
        """The pointers at physical ``[lo, hi)``, by address; the frames of it not read yet are
        read (whole)."""
        key = (lo, hi)
        known = self._last.get(key)
        if known is not None:
            return known
        if self._kept > self._limit:
            self._forget()
        self._read_missing(lo - lo % PAGE_SIZE, hi + (-hi) % PAGE_SIZE)
        starts, ends = self._starts, self._ends
        out: list[_Pointer] = []
        k = max(0, bisect_right(starts, lo) - 1)
        while k < len(starts) and starts[k] < hi:
            if ends[k] > lo:
                at = self._at[k]
                a = bisect_left(at, lo) if starts[k] < lo else 0
                b = bisect_left(at, hi) if ends[k] > hi else len(at)
                out += self._found[k][a:b]
            k += 1
        if len(out) <= _MEMO_POINTERS:
            if len(self._last) > 64:
                self._last.clear()
            self._last[key] = out
        return out

    def _forget(self) -> None:
        self._starts, self._ends, self._found, self._at = [], [], [], []
        self._last.clear()
        self._kept = 0

    def _read_missing(self, lo: int, hi: int) -> None:
        starts, ends = self._starts, self._ends
        k = bisect_right(starts, lo) - 1
        pos = lo
        if k >= 0 and ends[k] > pos:
            pos = ends[k]
        k += 1
        while pos < hi:
            stop = starts[k] if k < len(starts) and starts[k] < hi else hi
            if pos < stop:
                found = _frame_hits(self._target, pos, stop - pos, self._regions)
                starts.insert(k, pos)
                ends.insert(k, stop)
                self._found.insert(k, found)
                self._kept += len(found)
                self._at.insert(k, [f[0] for f in found])
                k += 1
            if k < len(starts) and starts[k] < hi:
                pos = ends[k]
                k += 1
            else:
                break


def _frame_hits(
    target: Target, paddr: int, size: int, regions: list[PointerRegion]
) -> list[_Pointer]:
    """The pointers in physical ``[paddr, paddr + size)``, by address; the bytes that cannot be
    read (not captured, outside RAM) are skipped."""
    result = read_memory(target, ReadOptions(paddr, size, physical=True, max_size=None))
    out: list[_Pointer] = []
    for piece in result.chunks():
        if isinstance(piece, Chunk):
            at = piece.address
            out += [(at + off, v, r.name) for off, v, r in scan_pointers(piece.data, regions)]
    return out
