"""Linux's ptdump walk (``/sys/kernel/debug/page_tables``), replayed on the tables, as records.

Linux's ptdump (``arch/x86/mm/dump_pagetables.c`` over the generic ``mm/ptdump.c`` walker,
5.6 and later) calls ``note_page(addr, level, val)`` for every entry it meets and ends a
*series* whenever the raw protection bits, the effective protection, the level or the marker
section change. :class:`PtdumpWalk` replays that walk with the rules of
:mod:`gdbext.linux.ptdump_rules` (what is noted at each level, protections, walked ranges) and
yields records: the :class:`~gdbext.linux.layout.Marker` of each section entered, each
:class:`Series`, a :class:`Skipped` count where a section's line limit was reached, and after
the walk an :class:`~gdbext.x86.records.Anomaly` per table that could not be read.
:mod:`gdbext.render.ptdump` formats them; the walk carries the layout it was given.

The last series ends at ``0`` (the kernel's final ``note_page(0, -1, 0)``), or at the end of the
range asked for; with a range, only entries that meet it are noted and the first section is the
one holding the first entry. It does not go through the engine's leaf runs: ptdump also notes
holes, at the level where the walker found them, and entries that are not present.

**Differences**, all outside what a real kernel's tables hold: entries the kernel's walker would
find "bad" (and clear) are walked as they are; tables that cannot be read (outside RAM, or not
in the dump) are not noted and are reported after the walk.

Shared tables are compiled once per walk (and effective-permission context), and repeated
links are accounted for in bulk where nothing is printed, so the 65,536 ESPFIX aliases (a
section capped at 16 lines) cost a few table compilations, not 65,536 leaves.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise

from gdbext.errors import (
    NotCapturedError,
    PhysMemoryError,
    TableNotCapturedError,
    TableOutsideRamError,
    WalkLimitError,
)
from gdbext.geometry import ENTRIES_PER_TABLE, entry_span
from gdbext.linux.layout import Layout, Marker
from gdbext.linux.ptdump_rules import (
    HOLE,
    LEAF,
    PTE_FLAGS_MASK,
    TABLE,
    UWNX,
    effective,
    is_wx,
    note_kinds,
    pfn_address,
    ptdump_level,
    walked_ranges,
)
from gdbext.x86.entries import is_present
from gdbext.x86.paging import X86PageTable
from gdbext.x86.records import Anomaly

__all__ = ["PtdumpRecord", "PtdumpWalk", "Series", "Skipped"]

_TOP = 1 << 64


# --- the records ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Series:
    """Notes ``[start, end)`` (``end`` modulo 2^64) with one ptdump ``level``, raw ``prot`` and
    effective ``eff``: one line of Linux's ptdump."""

    start: int
    end: int
    #: Ptdump's level index (0 ``pgd`` .. 4 ``pte``).
    level: int
    prot: int
    eff: int

    @property
    def size(self) -> int:
        return (self.end - self.start) % _TOP

    @property
    def wx(self) -> bool:
        """Whether ``CONFIG_DEBUG_WX`` counts its pages."""
        return is_wx(self.eff)


@dataclass(frozen=True, slots=True)
class Skipped:
    """``count`` series of a section past its line limit (ptdump prints only their number)."""

    count: int


#: What a walk yields: a section entered, a series, a count of series not shown, or (after the
#: walk) a table that could not be read.
PtdumpRecord = Marker | Series | Skipped | Anomaly
#: (ptdump level, raw prot, effective prot) of a series.
Key = tuple[int, int, int]
_FLUSH: Key = (-1, 0, 0)


# --- compiled tables -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Run:
    """Entries ``[start, end)`` of a table noted with one key; ``leaves`` of them present."""

    start: int
    end: int
    key: Key
    leaves: int


@dataclass(frozen=True, slots=True)
class _Sub:
    """``count`` consecutive equal entries from ``start`` that link the table ``child``."""

    start: int
    count: int
    child: int
    #: Effective prot of the path down to the child (USR, RW and NX only).
    eff: int
    entry: int


_Item = _Run | _Sub


@dataclass(frozen=True, slots=True)
class _Stats:
    """What a table's notes add up to, for accounting repeated links without replaying them.

    ``first``/``last``: the keys of the first and last series; ``breaks``: key changes inside;
    ``first_rel``: offset of the first note; ``last_rel``: offset where the last series starts
    (``None`` if everything is one series).
    """

    first: Key
    last: Key
    breaks: int
    leaves: int
    first_rel: int
    last_rel: int | None

    def shifted(self, off: int) -> _Stats:
        return _Stats(
            self.first,
            self.last,
            self.breaks,
            self.leaves,
            self.first_rel + off,
            None if self.last_rel is None else self.last_rel + off,
        )

    def repeated(self, count: int, span: int) -> _Stats:
        join = self.last != self.first
        breaks = count * self.breaks + (count - 1) * join
        last_rel = None
        if breaks:
            assert self.last_rel is not None  # a single series cannot change key
            last_rel = (count - 1) * span + self.last_rel
        return _Stats(self.first, self.last, breaks, count * self.leaves, self.first_rel, last_rel)

    def then(self, other: _Stats) -> _Stats:
        """These notes followed by ``other`` (already at its offset)."""
        join = self.last != other.first
        if other.last_rel is not None:
            last_rel: int | None = other.last_rel
        elif join:
            last_rel = other.first_rel
        else:
            last_rel = self.last_rel
        return _Stats(
            self.first,
            other.last,
            self.breaks + other.breaks + join,
            self.leaves + other.leaves,
            self.first_rel,
            last_rel,
        )


@dataclass
class _Program:
    """A table, compiled: what it notes and which tables it links, in index order."""

    table: int
    items: list[_Item]
    stats: _Stats | None = None
    stats_done: bool = False
    #: No table below it is unreadable (set with ``stats``): only then may links to it be
    #: accounted in bulk, since an unreadable table must still be reported at each link.
    clean: bool = True


@dataclass(frozen=True, slots=True)
class _Unreadable:
    """A table that cannot be read: ``table-outside-ram`` or ``table-not-captured``."""

    kind: str


class PtdumpWalk:
    """One ptdump walk of ``pt`` over ``[lo, hi)`` with ``layout``'s sections: the kernel's
    ``pg_state`` plus compiled tables. :meth:`batches` yields the records.

    :param limit: at most this many leaves (:class:`~gdbext.errors.WalkLimitError` beyond).
    :param capped: sections print at most their marker's ``max_lines`` series, as the kernel's
        do (ESPfix: 16); uncapped, every series is yielded (what the W+X count sums).
    """

    def __init__(
        self,
        pt: X86PageTable,
        layout: Layout,
        lo: int = 0,
        hi: int = _TOP,
        limit: int | None = None,
        *,
        capped: bool = True,
    ) -> None:
        self.pt = pt
        #: The layout whose markers section the walk.
        self.layout = layout
        self.levels = pt.levels
        self.lo, self.hi = lo, hi
        self.limit = limit
        self.capped = capped
        # Ptdump level index of each hardware level (1 = PT ... 5 = PML5).
        self.plevel = {hw: ptdump_level(hw, pt.levels) for hw in range(1, pt.levels + 1)}
        self.walked = walked_ranges(pt.levels)
        self.programs: dict[tuple[int, int, int], _Program | _Unreadable] = {}
        self.tables: dict[int, tuple[int, ...]] = {}
        #: Tables that could not be read, so far.
        self.anomalies: list[Anomaly] = []
        #: Leaves noted so far.
        self.leaves = 0
        self.out: list[PtdumpRecord] = []
        # pg_state
        self.started = False
        self.key: Key = _FLUSH
        self.start = 0
        self.lines = 0
        self.marker = 0
        self.markers = layout.markers
        self.next_start = _TOP
        self.max_lines = 0

    # --- the kernel's note_page ---------------------------------------------------------

    def _enter(self, index: int) -> None:
        self.marker = index
        self.lines = 0
        self.max_lines = self.markers[index].max_lines if self.capped else 0
        nxt = index + 1
        # The kernel's list ends with { -1, NULL }.
        self.next_start = self.markers[nxt].start if nxt < len(self.markers) else _TOP - 1
        self.out.append(self.markers[index])

    def note(self, addr: int, key: Key) -> None:
        if not self.started:
            self.started = True
            self.key, self.start = key, addr
            index = 0
            while index + 1 < len(self.markers) and self.markers[index + 1].start <= addr:
                index += 1
            self._enter(index)
            return
        if key == self.key and addr < self.next_start:
            return
        if not self.max_lines or self.lines < self.max_lines:
            self.out.append(Series(self.start, addr, *self.key))
        self.lines += 1
        if addr >= self.next_start:
            if self.max_lines and self.lines > self.max_lines:
                self.out.append(Skipped(self.lines - self.max_lines))
            self._enter(self.marker + 1)
        self.start, self.key = addr, key

    def flush(self, addr: int) -> None:
        """The final series, ended at ``addr`` (the kernel's ``note_page(0, -1, 0)``)."""
        if self.started and (not self.max_lines or self.lines < self.max_lines):
            self.out.append(Series(self.start, addr, *self.key))

    def run(self, a: int, b: int, step: int, key: Key, leaves: int) -> None:
        """Notes at ``a, a + step, ... < b``, all with ``key``: only the first and those that
        cross a marker can break the series."""
        self.note(a, key)
        addr = a
        while self.next_start < b:
            m = self.next_start
            e = a + -(-(m - a) // step) * step
            if e <= addr:
                e = addr + step
            if e >= b:
                break
            self.note(e, key)
            addr = e
        if leaves:
            self._count(leaves, a)

    def _count(self, leaves: int, vaddr: int) -> None:
        self.leaves += leaves
        if self.limit is not None and self.leaves > self.limit:
            raise WalkLimitError(self.limit, vaddr)

    def bulk(self, stats: _Stats | None, base: int, end: int) -> bool:
        """Account for notes summed up in ``stats`` at ``base`` in one step, if that prints
        nothing but at most one line at ``base``: no marker inside ``[base, end)``, and the
        section is past its line limit or the notes are one series."""
        if not self.started or self.next_start < end:
            return False
        if stats is None:
            return True
        skipping = bool(self.max_lines) and self.lines >= self.max_lines
        if skipping:
            breaks = (self.key != stats.first) + stats.breaks
            if breaks:
                rel = stats.last_rel if stats.last_rel is not None else stats.first_rel
                self.start = base + rel
                self.lines += breaks
            self.key = stats.last
        elif stats.breaks == 0:
            self.note(base + stats.first_rel, stats.first)
        else:
            return False
        if stats.leaves:
            self._count(stats.leaves, base)
        return True

    # --- tables --------------------------------------------------------------------------

    def _entries(self, table: int) -> tuple[int, ...]:
        entries = self.tables.get(table)
        if entries is None:
            entries = self.tables[table] = self.pt.read_table(table)
        return entries

    def program(self, table: int, hw: int, eff_in: int) -> _Program | _Unreadable:
        """The compiled table at hardware level ``hw`` below a path allowing ``eff_in``."""
        memo_key = (table, hw, eff_in)
        prog = self.programs.get(memo_key)
        if prog is None:
            try:
                entries = self._entries(table)
            except NotCapturedError:
                prog = _Unreadable("table-not-captured")
            except PhysMemoryError:
                prog = _Unreadable("table-outside-ram")
            else:
                prog = _Program(table, self._compile(entries, hw, eff_in))
            self.programs[memo_key] = prog
        return prog

    def _compile(self, entries: tuple[int, ...], hw: int, eff_in: int) -> list[_Item]:
        items: list[_Item] = []
        if hw == 1:
            kinds = zip(entries, note_kinds(entries, 1, self.levels), strict=True)
            keys = [e & PTE_FLAGS_MASK if k == LEAF else -1 for e, k in kinds]
            starts = [0, *(i for i in range(1, ENTRIES_PER_TABLE) if keys[i] != keys[i - 1])]
            starts.append(ENTRIES_PER_TABLE)
            for a, b in pairwise(starts):
                prot = keys[a]
                if prot < 0:
                    key: Key = (4, 0, 0)
                else:
                    key = (4, prot, effective(eff_in, prot))
                n = b - a if prot > 0 and is_present(prot) else 0
                last = items[-1] if items else None
                if type(last) is _Run and last.key == key:
                    items[-1] = _Run(last.start, b, key, last.leaves + n)
                else:
                    items.append(_Run(a, b, key, n))
            return items
        level = self.plevel[hw]
        levels = self.levels
        top = hw == levels
        hole: Key = (level, 0, 0)
        if not any(entries):
            return [_Run(0, ENTRIES_PER_TABLE, hole, 0)]
        for i, (e, kind) in enumerate(zip(entries, note_kinds(entries, hw, levels), strict=True)):
            key_: Key | None = None
            leaves = 0
            if kind == HOLE:
                key_ = hole
            elif kind == LEAF:
                key_ = (level, e & PTE_FLAGS_MASK, effective(eff_in, e))
                leaves = int(is_present(e))
            elif kind == TABLE:
                eff = e & UWNX if top else effective(eff_in, e)
                child = pfn_address(e)
                last = items[-1] if items else None
                if type(last) is _Sub and last.entry == e and last.start + last.count == i:
                    items[-1] = _Sub(last.start, last.count + 1, child, eff, e)
                else:
                    items.append(_Sub(i, 1, child, eff, e))
                continue
            else:
                continue  # not noted by the kernel's walker
            last = items[-1] if items else None
            if type(last) is _Run and last.key == key_ and last.end == i:
                items[-1] = _Run(last.start, i + 1, key_, last.leaves + leaves)
            else:
                items.append(_Run(i, i + 1, key_, leaves))
        return items

    def stats(self, prog: _Program, hw: int) -> _Stats | None:
        """The sum of a table's notes (computed once; reads the whole subtree)."""
        if prog.stats_done:
            return prog.stats
        span = entry_span(hw)
        acc: _Stats | None = None
        for item in prog.items:
            part: _Stats | None
            if type(item) is _Run:
                part = _Stats(item.key, item.key, 0, item.leaves, item.start * span, None)
            elif type(item) is _Sub:
                child = self.program(item.child, hw - 1, item.eff)
                if type(child) is not _Program:
                    prog.clean = False
                    continue
                inner = self.stats(child, hw - 1)
                prog.clean = prog.clean and child.clean
                if inner is None:
                    continue
                part = inner.repeated(item.count, span).shifted(item.start * span)
            else:
                continue
            acc = part if acc is None else acc.then(part)
        prog.stats, prog.stats_done = acc, True
        return acc

    # --- the walk ------------------------------------------------------------------------

    def skipping(self) -> bool:
        """True when the section is past its line limit: notes only count lines."""
        return bool(self.max_lines) and self.lines >= self.max_lines

    def batches(self) -> Iterator[list[PtdumpRecord]]:
        """The records, in batches (the last holds the anomalies).

        :raises TableNotCapturedError: the root table is not in the dump.
        :raises TableOutsideRamError: the root table is outside RAM.
        :raises WalkLimitError: more than ``limit`` leaves.
        """
        pt = self.pt
        hw = self.levels
        try:
            self._entries(pt.root)
        except NotCapturedError:
            raise TableNotCapturedError(0, hw, None, pt.root) from None
        except PhysMemoryError:
            raise TableOutsideRamError(0, hw, None, pt.root) from None
        top = self.program(pt.root, hw, UWNX)
        assert type(top) is _Program
        span = entry_span(hw)
        # The lower half from index 0 at VA 0; the higher half as if index 0 were at
        # 2^64 - 512 * span (so that VA = base + index * span holds in each).
        high_base = _TOP - ENTRIES_PER_TABLE * span
        for (wlo, whi), base in zip(self.walked, (0, high_base), strict=True):
            lo, hi = max(wlo, self.lo), min(whi, self.hi)
            if lo < hi:
                yield from self.emit(top, hw, base, lo, hi)
        self.flush(self.hi % _TOP)
        self.out.extend(self.anomalies)
        yield self.out

    def emit(
        self, prog: _Program, hw: int, base: int, lo: int, hi: int
    ) -> Iterator[list[PtdumpRecord]]:
        """The notes of table ``prog`` (level ``hw``, first entry at ``base``) that meet
        ``[lo, hi)``."""
        span = entry_span(hw)
        end = base + span * ENTRIES_PER_TABLE
        whole = lo <= base and end <= hi
        if whole and self.started and self.skipping():
            stats = self.stats(prog, hw)
            if prog.clean and self.bulk(stats, base, end):
                return
        first_in = 0 if lo <= base else (lo - base) // span
        last_in = ENTRIES_PER_TABLE if end <= hi else -(-(hi - base) // span)
        for item in prog.items:
            if type(item) is _Run:
                a, b = max(item.start, first_in), min(item.end, last_in)
                if a < b:
                    self.run(
                        base + a * span,
                        base + b * span,
                        span,
                        item.key,
                        b - a if item.leaves else 0,
                    )
            elif type(item) is _Sub:
                k = max(first_in - item.start, 0)
                stop = min(item.count, last_in - item.start)
                while k < stop:
                    va = base + (item.start + k) * span
                    inside = (stop - k) if lo <= va else 0
                    if inside and hi < va + inside * span:
                        inside = (hi - va) // span
                    if inside and (k or self.skipping()) and self.started:
                        # Further links of one table: in bulk where that prints nothing.
                        child = self.program(item.child, hw - 1, item.eff)
                        if type(child) is _Program:
                            inner = self.stats(child, hw - 1)
                            total = None if inner is None else inner.repeated(inside, span)
                            if child.clean and self.bulk(total, va, va + inside * span):
                                k += inside
                                continue
                    yield from self.visit(prog.table, item, k, hw, va, lo, hi)
                    k += 1
            if len(self.out) >= 4096:
                yield self.out
                self.out = []

    def visit(
        self, table: int, link: _Sub, k: int, hw: int, va: int, lo: int, hi: int
    ) -> Iterator[list[PtdumpRecord]]:
        """The table linked by copy ``k`` of ``link``, an entry of ``table`` at level ``hw``."""
        prog = self.program(link.child, hw - 1, link.eff)
        if type(prog) is _Unreadable:
            self.anomalies.append(
                Anomaly(
                    prog.kind, va, hw, table, link.start + k, link.entry, f"table 0x{link.child:x}"
                )
            )
            return
        assert type(prog) is _Program
        yield from self.emit(prog, hw - 1, va, lo, hi)
