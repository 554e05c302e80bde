"""``kaslr``'s core: what KASLR chose, and (``--leaks``) the values in memory that give it away.

:func:`kaslr` reports the randomised bases of :func:`~gdbext.linux.kaslr.kaslr_report`; with
``leaks`` it reads every user-accessible leaf of the selected root in ``range`` (default: the
user half) and keeps the 8-byte values that point into the kernel image, the modules area or the
direct map (:func:`~gdbext.linux.kaslr.pointer_regions`). Each physical frame is read once,
through :func:`~gdbext.frontend.memread.read_memory` (its gaps skipped), however many virtual
addresses map it; every one of them is reported.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from gdbext.addr import AddrRange
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

#: Default bound on the leaks reported (``--max``).
DEFAULT_MAX_LEAKS = 1000


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
    for leak in _leaks(target, pt.iter_runs(searched, aliases="expand"), regions, options):
        total += 1
        if len(leaks) < options.max_leaks:
            leaks.append(leak)
    return KaslrResult(report, tuple(regions), searched, tuple(leaks), total, pt.root, warnings)


def _leaks(
    target: Target,
    runs: Iterator[object],
    regions: list[PointerRegion],
    options: KaslrOptions,
) -> Iterator[Leak]:
    """The leaks of each leaf run, in virtual-address order.

    Each 4 KiB frame is read once: its pointers are kept (by frame) for the other virtual
    addresses that map it, which are reported without reading it again.
    """
    searched = options.range
    seen: set[int] = set()
    hits: dict[int, list[tuple[int, int, str]]] = {}
    for rec in runs:
        if type(rec) is not LeafRun or (options.user_only and not rec.user):
            continue
        lo, hi = rec.vaddr, rec.vaddr + rec.count * rec.page_size
        if searched is not None:
            lo, hi = max(lo, searched.start), min(hi, searched.end)
        if lo >= hi:
            continue
        first = lo - lo % PAGE_SIZE
        paddr = rec.paddr + (first - rec.vaddr)
        size = hi - first + (-(hi - first)) % PAGE_SIZE
        _read_unseen(target, paddr, size, regions, seen, hits)
        perms = perm_text(rec.user, rec.writable, rec.executable)
        for page in range(0, size, PAGE_SIZE):
            for off, value, name in hits.get(paddr + page, ()):
                va = first + page + off
                if lo <= va < hi:
                    yield Leak(va, paddr + page + off, value, name, perms)


def _read_unseen(
    target: Target,
    paddr: int,
    size: int,
    regions: list[PointerRegion],
    seen: set[int],
    hits: dict[int, list[tuple[int, int, str]]],
) -> None:
    """Read the frames of ``[paddr, paddr + size)`` not in ``seen`` (in runs of contiguous
    frames) and file their pointers in ``hits`` by frame."""
    start = None
    for frame in range(paddr, paddr + size + PAGE_SIZE, PAGE_SIZE):
        fresh = frame < paddr + size and frame not in seen
        if fresh:
            seen.add(frame)
            if start is None:
                start = frame
        elif start is not None:
            for at, value, name in _frame_hits(target, start, frame - start, regions):
                page = at - at % PAGE_SIZE
                hits.setdefault(page, []).append((at - page, value, name))
            start = None


def _frame_hits(
    target: Target, paddr: int, size: int, regions: list[PointerRegion]
) -> Iterator[tuple[int, int, str]]:
    """The pointers in physical ``[paddr, paddr + size)``: ``(paddr, value, region name)``;
    the bytes that cannot be read (not captured, outside RAM) are skipped."""
    result = read_memory(target, ReadOptions(paddr, size, physical=True, max_size=None))
    for piece in result.chunks():
        if isinstance(piece, Chunk):
            for off, value, region in scan_pointers(piece.data, regions):
                yield piece.address + off, value, region.name
