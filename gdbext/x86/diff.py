"""What differs between two page tables: their walks compared in virtual-address order.

Two walks (:meth:`~gdbext.x86.paging.X86PageTable.iter_runs`, aliases collapsed) are two
sorted streams of leaf runs and alias runs; :func:`diff_runs` merges them as sorted streams,
cutting each run where the other side's runs begin or end, so that the work is in runs, not in
pages. Each piece that is only in the old walk is *removed*, only in the new one *added*, in
both but mapped otherwise *changed* (naming what differs: the frame, the effective permissions,
the page size, flag bits such as G, PCD, PWT, or a leaf against a collapsed alias). Adjacent
pieces of the same kind with the same attributes are merged into one :class:`Change`, whatever
their frames (a module's pages are scattered in RAM): :attr:`Side.pa_contiguous` says whether
they are contiguous.

A collapsed alias (a link to a table walked elsewhere, say ESPFIX's 65,536 links to one table)
is compared as an alias: by where its table was first walked (whose leaves the sweep compares
there, once), its level and its path's permissions; a leaf against an alias is a change.

The result is plain values; Linux's region labels are added above this floor.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from gdbext.flags import ACCESSED_DIRTY, FLAGS_MASK, HUGE_PAGE, PRESENT
from gdbext.x86.records import AliasRun, Anomaly, LeafRun, WalkRecord

__all__ = [
    "ADDED",
    "CHANGED",
    "DEFAULT_IGNORE",
    "REMOVED",
    "Change",
    "DiffCounts",
    "Side",
    "diff_runs",
]

ADDED = "added"
REMOVED = "removed"
CHANGED = "changed"

#: The bits compared by default leave out ACCESSED and DIRTY: the CPU sets them as it runs, so
#: two stops of one machine differ there everywhere.
DEFAULT_IGNORE = ACCESSED_DIRTY

#: What a change may name in :attr:`Change.what`.
FRAME = "frame"
PERMISSIONS = "permissions"
PAGE_SIZE = "page-size"
FLAGS = "flags"
ALIAS = "alias"


@dataclass(frozen=True, slots=True)
class Side:
    """One side's mapping of a change's range: a leaf run's or a collapsed alias's.

    ``paddr`` is the physical address of the range's first byte (a leaf), or the linked table
    (an alias). ``flags`` are the leaf entry's flag bits (those compared); an alias has none.
    """

    paddr: int
    page_size: int
    flags: int
    user: bool
    writable: bool
    executable: bool
    #: An alias: the level of the linked table and where it was first walked.
    alias_level: int | None = None
    first_vaddr: int | None = None
    #: The range's pages continue each other in physical memory (always for an alias).
    pa_contiguous: bool = True

    @property
    def is_alias(self) -> bool:
        return self.alias_level is not None


@dataclass(frozen=True, slots=True)
class Change:
    """``[start, end)`` is mapped in only one walk (:data:`ADDED`, :data:`REMOVED`) or in both,
    otherwise (:data:`CHANGED`, with :attr:`what` differs)."""

    kind: str
    start: int
    end: int
    old: Side | None
    new: Side | None
    #: What differs, in order: ``frame``, ``permissions``, ``page-size``, ``flags``, ``alias``
    #: (a leaf on one side, a collapsed alias on the other); empty for added and removed.
    what: tuple[str, ...] = ()
    #: The flag bits that differ (``flags`` in :attr:`what`).
    flags_changed: int = 0

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass
class DiffCounts:
    """Filled while :func:`diff_runs` streams: the runs read and the anomalies skipped."""

    old_runs: int = 0
    new_runs: int = 0
    old_anomalies: int = 0
    new_anomalies: int = 0
    #: Bytes mapped by leaf runs in the higher half (bit 63 set: the kernel's); collapsed
    #: aliases are not counted.
    old_high_bytes: int = 0
    new_high_bytes: int = 0
    changes: dict[str, int] = field(default_factory=lambda: {ADDED: 0, REMOVED: 0, CHANGED: 0})


# A run as the sweep sees it: start, end, and the run (paddr at start is paddr + offset).
_Item = tuple[int, int, LeafRun | AliasRun]


def _items(records: Iterable[WalkRecord], counts: DiffCounts, old: bool) -> Iterator[_Item]:
    runs = high = 0
    try:
        for rec in records:
            if type(rec) is LeafRun:
                runs += 1
                end = rec.vaddr + rec.count * rec.page_size
                if rec.vaddr >> 63:
                    high += end - rec.vaddr
                yield rec.vaddr, end, rec
            elif type(rec) is AliasRun:
                yield rec.vaddr, rec.end, rec
            elif type(rec) is Anomaly:
                if old:
                    counts.old_anomalies += 1
                else:
                    counts.new_anomalies += 1
    finally:
        if old:
            counts.old_runs += runs
            counts.old_high_bytes += high
        else:
            counts.new_runs += runs
            counts.new_high_bytes += high


def _side(run: LeafRun | AliasRun, at: int, keep: int) -> Side:
    """``run``'s attributes at ``at``."""
    if type(run) is AliasRun:
        return Side(
            run.table,
            0,
            0,
            run.user,
            run.writable,
            run.executable,
            run.level,
            run.first_vaddr,
        )
    assert type(run) is LeafRun
    return Side(
        run.paddr + (at - run.vaddr),
        run.page_size,
        run.entry & keep,
        run.user,
        run.writable,
        run.executable,
    )


def _compare(old: Side, new: Side) -> tuple[tuple[str, ...], int]:
    """What differs between two sides of one piece, and the flag bits that do."""
    if old.is_alias or new.is_alias:
        # An alias maps again the leaves walked at ``first_vaddr``, which the sweep compares
        # there: two aliases of the same first walk, level and path permissions are equal,
        # whatever frame their table sits in (two dumps place it differently).
        same = old.is_alias and (
            old.alias_level,
            old.first_vaddr,
            old.user,
            old.writable,
            old.executable,
        ) == (new.alias_level, new.first_vaddr, new.user, new.writable, new.executable)
        return ((), 0) if same else ((ALIAS,), 0)
    what: list[str] = []
    if old.paddr != new.paddr:
        what.append(FRAME)
    if (old.user, old.writable, old.executable) != (new.user, new.writable, new.executable):
        what.append(PERMISSIONS)
    if old.page_size != new.page_size:
        what.append(PAGE_SIZE)
    # Bit 7 is PS in a large page and PAT in a 4 KiB one: with the size changed it says so.
    ignored = PRESENT | (HUGE_PAGE if old.page_size != new.page_size else 0)
    flags = (old.flags ^ new.flags) & ~ignored
    if flags:
        what.append(FLAGS)
    return tuple(what), flags


class _Builder:
    """The change being merged: pieces join it while they continue it."""

    __slots__ = ("end", "flags", "kind", "new", "old", "start", "what")

    def __init__(
        self,
        kind: str,
        start: int,
        end: int,
        old: Side | None,
        new: Side | None,
        what: tuple[str, ...],
        flags: int,
    ) -> None:
        self.kind, self.start, self.end = kind, start, end
        self.old, self.new, self.what, self.flags = old, new, what, flags

    def extend(
        self,
        kind: str,
        start: int,
        end: int,
        old: Side | None,
        new: Side | None,
        what: tuple[str, ...],
        flags: int,
    ) -> bool:
        """Take the piece if it continues this change with the same attributes."""
        if start != self.end or kind != self.kind or what != self.what or flags != self.flags:
            return False
        offset = start - self.start
        old_ok, old_c = _continues(self.old, old, offset)
        new_ok, new_c = _continues(self.new, new, offset)
        if not (old_ok and new_ok):
            return False
        self.old, self.new, self.end = old_c, new_c, end
        return True

    def change(self) -> Change:
        return Change(self.kind, self.start, self.end, self.old, self.new, self.what, self.flags)


def _continues(first: Side | None, piece: Side | None, offset: int) -> tuple[bool, Side | None]:
    """Whether ``piece``, ``offset`` bytes into a change, has the attributes of the change's
    ``first`` side (an absent side continues an absent one), and that side, its
    :attr:`~Side.pa_contiguous` updated."""
    if first is None or piece is None:
        return first is None and piece is None, None
    if (
        first.page_size,
        first.flags,
        first.user,
        first.writable,
        first.executable,
        first.alias_level,
    ) != (
        piece.page_size,
        piece.flags,
        piece.user,
        piece.writable,
        piece.executable,
        piece.alias_level,
    ):
        return False, None
    if first.is_alias:
        return first.first_vaddr == piece.first_vaddr, first
    if first.pa_contiguous and piece.paddr != first.paddr + offset:
        return True, Side(
            first.paddr,
            first.page_size,
            first.flags,
            first.user,
            first.writable,
            first.executable,
            pa_contiguous=False,
        )
    return True, first


def diff_runs(
    old: Iterable[WalkRecord],
    new: Iterable[WalkRecord],
    *,
    ignore: int = DEFAULT_IGNORE,
    counts: DiffCounts | None = None,
) -> Iterator[Change]:
    """The changes from ``old`` to ``new``, two walks' records in virtual-address order.

    :param ignore: leaf flag bits not compared (default ACCESSED and DIRTY).
    :param counts: filled while streaming (runs read, anomalies skipped, changes by kind).
    """
    counts = DiffCounts() if counts is None else counts
    keep = FLAGS_MASK & ~ignore
    builder: _Builder | None = None
    for piece in _pieces(_items(old, counts, True), _items(new, counts, False), keep):
        if builder is not None and builder.extend(*piece):
            continue
        if builder is not None:
            counts.changes[builder.kind] += 1
            yield builder.change()
        builder = _Builder(*piece)
    if builder is not None:
        counts.changes[builder.kind] += 1
        yield builder.change()


_Piece = tuple[str, int, int, Side | None, Side | None, tuple[str, ...], int]


def _pieces(a_items: Iterator[_Item], b_items: Iterator[_Item], keep: int) -> Iterator[_Piece]:
    """The sweep: the pieces where the two walks differ, in order."""
    a = next(a_items, None)
    b = next(b_items, None)
    a_lo = a[0] if a is not None else 0
    b_lo = b[0] if b is not None else 0
    while a is not None or b is not None:
        if b is None or (a is not None and a_lo < b_lo):
            assert a is not None
            end = a[1] if b is None else min(a[1], b_lo)
            yield REMOVED, a_lo, end, _side(a[2], a_lo, keep), None, (), 0
            a_lo = end
        elif a is None or b_lo < a_lo:
            end = b[1] if a is None else min(b[1], a_lo)
            yield ADDED, b_lo, end, None, _side(b[2], b_lo, keep), (), 0
            b_lo = end
        else:
            end = min(a[1], b[1])
            ra, rb = a[2], b[2]
            if not (
                type(ra) is LeafRun
                and type(rb) is LeafRun
                and ra.paddr - ra.vaddr == rb.paddr - rb.vaddr
                and ra.page_size == rb.page_size
                and (ra.entry ^ rb.entry) & keep == 0
                and (ra.user, ra.writable, ra.executable) == (rb.user, rb.writable, rb.executable)
            ):
                old_side, new_side = _side(ra, a_lo, keep), _side(rb, a_lo, keep)
                what, flags = _compare(old_side, new_side)
                if what:
                    yield CHANGED, a_lo, end, old_side, new_side, what, flags
            a_lo = b_lo = end
        if a is not None and a_lo >= a[1]:
            a = next(a_items, None)
            if a is not None:
                a_lo = a[0]
        if b is not None and b_lo >= b[1]:
            b = next(b_items, None)
            if b is not None:
                b_lo = b[0]
