"""Linux 6.1's W+X count, literally: ptdump's ``note_page`` over the generic page walker.

The kernel's ``CONFIG_DEBUG_WX`` check (``arch/x86/mm/dump_pagetables.c`` over
``mm/ptdump.c`` and ``mm/pagewalk.c``) meets entries in address order and *notes* some of them;
consecutive notes with the same protections form a series, and a series whose effective
protection has RW and not NX adds its pages (from its first note to the next series' first
note) to the count. What is noted, per level (:mod:`gdbext.linux.ptdump_rules`, the rules
``walk --format ptdump`` follows too):

- an entry that is *none* (zero; below the top, zero but for ACCESSED and DIRTY): a hole, noted
  with protection 0 (never W+X);
- every PTE of a page table the walker descends into, zero or not, **present or not**;
- a PMD entry with PSE (``pmd_leaf`` tests PSE only: present or not) and a PUD entry with
  PRESENT and PSE: leaves;
- the walker descends into a top-level entry (PGD; P4D with 5 levels) that is not none, a
  present PUD entry and a PMD entry with PRESENT or PROTNONE (the GLOBAL bit: ``pmd_present``);
- any other entry (a PUD or PMD entry that is neither none, a leaf nor present) is not noted:
  its range joins the series before it;
- only ``[0, end of the lower half)`` and ``[end of the guard hole, 2^64)`` are walked: the
  non-canonical gap and the guard hole join the series before them as well.

An entry's effective protection is ``(parent & entry & (USER|RW)) | ((parent | entry) & NX)``,
the top level's its own. NX is bit 63 whatever EFER says: Linux sets it only with NX support,
and a CPU without NXE faults on it (a reserved bit), so such an entry maps nothing W+X either.

So, unlike the MMU, the check counts not-present leaf entries by their flags: under PTI,
Linux 6.1 unmaps the freed gaps of the kernel image with ``set_memory_np_noalias`` (PRESENT
cleared, RW kept), and without NX (``-cpu qemu64,-nx``) those count as W+X pages.

The count works on tables, never on pages: a table's :class:`WxTally` (its W+X pages given
whether the series before it is W+X) is computed once per (table, level, path's RW and NX) and
reused for every link to it, and a page table below a path that is not writable or is
no-execute cannot hold a W+X page, so it is not even read.

>>> from gdbext_sim.memory import SparsePhysMemory
>>> from gdbext.x86.paging import X86PageTable
>>> mem = SparsePhysMemory(1 << 20)
>>> CheckWx(X86PageTable(mem, 0x1000, 4)).count(0x1000).pages  # an empty PML4
0
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import compress
from operator import ne

from gdbext.addr import AddrRange
from gdbext.errors import PhysMemoryError
from gdbext.flags import NO_EXECUTE, USER_ACCESSIBLE, WRITABLE
from gdbext.geometry import ENTRIES_PER_TABLE, entry_span, geometry
from gdbext.linux.ptdump_rules import (
    HOLE,
    LEAF,
    TABLE,
    effective,
    guard_hole,
    is_wx,
    note_kind,
    pfn_address,
    walked_ranges,
)
from gdbext.x86.entries import is_present
from gdbext.x86.paging import X86PageTable

__all__ = ["CheckWx", "NotPresentRange", "WxCount", "WxTally"]

_TOP = 1 << 64


@dataclass(frozen=True, slots=True)
class WxTally:
    """What a subtree adds to the count, given the series before it.

    ``lead``: 4 KiB pages before its first note (they join the series before it: W+X pages if
    that one is); ``present`` and ``not_present``: W+X pages of noted leaf entries;
    ``not_noted``: pages of entries not noted that join a W+X series of the subtree;
    ``last``: whether its last series is W+X (``None``: it notes nothing at all).
    """

    lead: int = 0
    present: int = 0
    not_present: int = 0
    not_noted: int = 0
    last: bool | None = None


@dataclass(frozen=True)
class WxCount:
    """The kernel's count for the table at ``root``: W+X pages of present leaves, of
    not-present leaf entries (by their flags), and of ranges not noted that join a W+X series."""

    root: int
    present: int
    not_present: int
    not_noted: int

    @property
    def pages(self) -> int:
        """The number the kernel prints."""
        return self.present + self.not_present + self.not_noted


@dataclass
class NotPresentRange:
    """Not-present leaf entries that the check counts as W+X: ``[vaddr, end)``, frames from
    ``paddr`` (``paddr_end`` ``None`` if not contiguous), USER by the path, and the path to
    the first one (``(level, table, index, entry)`` per level)."""

    vaddr: int
    end: int
    paddr: int
    paddr_end: int | None
    user: bool
    steps: tuple[tuple[int, int, int, int], ...]

    @property
    def pages(self) -> int:
        return (self.end - self.vaddr) // 4096


@dataclass
class _Fold:
    """A running count over consecutive notes (see :class:`WxTally`)."""

    lead: int = 0
    present: int = 0
    not_present: int = 0
    not_noted: int = 0
    last: bool | None = None

    def note(self, wx: bool, pages: int, present: bool) -> None:
        if wx:
            if present:
                self.present += pages
            else:
                self.not_present += pages
        self.last = wx

    def skip(self, pages: int) -> None:
        """A range not noted: it joins the series before it."""
        if self.last is None:
            self.lead += pages
        elif self.last:
            self.not_noted += pages

    def sub(self, t: WxTally, count: int = 1, present: bool = True) -> None:
        """``count`` consecutive links to a subtree with tally ``t`` (through entries that are
        not present when ``present`` is false: then nothing below is mapped)."""
        mapped, absent = (t.present, t.not_present) if present else (0, t.present + t.not_present)
        self.skip(t.lead)
        self.present += mapped
        self.not_present += absent
        self.not_noted += t.not_noted
        if t.last is None:
            self.skip((count - 1) * t.lead)
            return
        self.last = t.last
        more = count - 1
        if more:
            self.present += more * mapped
            self.not_present += more * absent
            self.not_noted += more * (t.not_noted + (t.lead if t.last else 0))

    def tally(self) -> WxTally:
        return WxTally(self.lead, self.present, self.not_present, self.not_noted, self.last)


def _runs(entries: Sequence[int], start: int, stop: int) -> Iterator[tuple[int, int, int]]:
    """``(index, value, count)`` of each run of equal consecutive entries in ``[start, stop)``
    (where the value changes found without a Python loop: most tables are sparse)."""
    changes = map(ne, entries[start + 1 : stop], entries[start : stop - 1])
    cuts = list(compress(range(start + 1, stop), changes))
    cuts.append(stop)
    prev = start
    for cut in cuts:
        yield prev, entries[prev], cut - prev
        prev = cut


@dataclass
class CheckWx:
    """The kernel's W+X count over the tables ``pt`` reads (its memory and paging levels; the
    root is given to each count).

    One object per moment (it keeps every table tally it computed: tables shared by several
    roots, a process's PGD and ``init_mm``'s say, are counted once).
    """

    pt: X86PageTable
    _memo: dict[tuple[int, int, bool, bool], WxTally] = field(default_factory=dict, repr=False)

    @property
    def levels(self) -> int:
        return self.pt.levels

    # --- the count -----------------------------------------------------------------------

    @property
    def guard_hole(self) -> AddrRange:
        """The range the kernel does not walk at the start of the kernel half."""
        return guard_hole(self.levels)

    def count(self, root: int) -> WxCount:
        """The kernel's W+X count for the table at ``root``.

        :raises PhysMemoryError: the root table cannot be read.
        """
        entries = self.pt.read_table(root)
        (_, low_end), (high_start, _) = walked_ranges(self.levels)
        span = entry_span(self.levels)
        fold = _Fold()
        self._fold(fold, entries, self.levels, True, False, 0, low_end // span)
        # The walk's second range starts at the end of the guard hole: the non-canonical gap
        # and the hole join the series the lower half ended with.
        fold.skip((high_start - low_end) // 4096)
        first_high = ENTRIES_PER_TABLE - (_TOP - high_start) // span
        self._fold(fold, entries, self.levels, True, False, first_high, ENTRIES_PER_TABLE)
        # Before the first note nothing counts (the kernel's first series starts there).
        return WxCount(root, fold.present, fold.not_present, fold.not_noted)

    def tally(self, table: int, level: int, rw: bool, nx: bool) -> WxTally:
        """The tally of the table at ``level`` below a path allowing ``rw`` and ``nx``."""
        key = (table, level, rw, nx)
        found = self._memo.get(key)
        if found is not None:
            return found
        if level == 1 and (nx or not rw):
            # Every PTE is noted, none can be W+X below this path: nothing to read.
            found = WxTally(last=False)
        else:
            try:
                entries = self.pt.read_table(table)
            except PhysMemoryError:
                # Not noted (the walker's view of a table we cannot read is unknown).
                found = WxTally(lead=ENTRIES_PER_TABLE * entry_span(level) // 4096)
            else:
                if not any(entries):
                    found = WxTally(last=False)  # holes, or zero PTEs: nothing W+X
                elif level == 1:
                    found = _pt_tally(entries)
                else:
                    fold = _Fold()
                    self._fold(fold, entries, level, rw, nx, 0, ENTRIES_PER_TABLE)
                    found = fold.tally()
        self._memo[key] = found
        return found

    def _fold(
        self,
        fold: _Fold,
        entries: Sequence[int],
        level: int,
        rw: bool,
        nx: bool,
        start: int,
        stop: int,
    ) -> None:
        """Fold the notes of ``entries[start:stop]`` of a table at ``level`` (``>= 2``)."""
        pages = entry_span(level) // 4096
        levels = self.levels
        path = _path_prot(rw, nx)
        for _, e, n in _runs(entries, start, stop):
            kind = note_kind(e, level, levels)
            if kind == HOLE:
                fold.note(False, pages * n, True)
            elif kind == LEAF:
                fold.note(is_wx(effective(path, e)), pages * n, is_present(e))
            elif kind == TABLE:
                eff = effective(path, e)
                child = self.tally(
                    pfn_address(e), level - 1, bool(eff & WRITABLE), bool(eff & NO_EXECUTE)
                )
                fold.sub(child, n, is_present(e))
            else:
                fold.skip(pages * n)

    # --- where the not-present W+X entries are ------------------------------------------

    def not_present(self, root: int, limit: int = 1024) -> tuple[list[NotPresentRange], bool]:
        """The leaf entries of the table at ``root`` that the check counts as W+X although
        the MMU maps nothing there (not present, or below a not-present entry the walker
        descends into), merged into ranges, over the whole address space (the guard hole
        included), in VA order; at most ``limit`` ranges, and whether there were more.

        Only subtrees whose tally has such entries are visited, and each (table, level, path
        permissions) once: what a subtree holds is kept, relative to its start, and placed
        again for every other link to it (a table linked thousands of times, at several
        levels, costs its ranges once per link, not its entries).
        """
        finder = _Finder(self, limit, geometry(self.levels).canonicalize)
        return finder.table(self.pt.read_table(root), root, self.levels, _OPEN_PATH)


def _path_prot(rw: bool, nx: bool) -> int:
    """The effective prot (RW and NX; USR does not matter to the count) of a path."""
    return (WRITABLE if rw else 0) | (NO_EXECUTE if nx else 0)


@dataclass(frozen=True, slots=True)
class _Path:
    """The effective prot of a path (USR, RW, NX), and whether every entry on it is present."""

    eff: int
    present: bool

    @property
    def rw(self) -> bool:
        return bool(self.eff & WRITABLE)

    @property
    def nx(self) -> bool:
        return bool(self.eff & NO_EXECUTE)

    @property
    def user(self) -> bool:
        return bool(self.eff & USER_ACCESSIBLE)

    def then(self, e: int) -> _Path:
        return _Path(effective(self.eff, e), self.present and is_present(e))


_OPEN_PATH = _Path(USER_ACCESSIBLE | WRITABLE, True)
_Found = tuple[list[NotPresentRange], bool]


@dataclass
class _Finder:
    """Collects :meth:`CheckWx.not_present`'s ranges; a subtree's ranges are kept relative to
    its start (per table, level and path) and shifted for each link."""

    check: CheckWx
    limit: int
    canon: Callable[[int], int]
    _memo: dict[tuple[int, int, _Path], _Found] = field(default_factory=dict)

    def subtree(self, table: int, level: int, path: _Path) -> _Found:
        key = (table, level, path)
        found = self._memo.get(key)
        if found is None:
            entries = self.check.pt.read_table(table)
            found = self._memo[key] = self.table(entries, table, level, path, top=False)
        return found

    def table(
        self, entries: Sequence[int], table: int, level: int, path: _Path, *, top: bool = True
    ) -> _Found:
        """The ranges of one table (addresses relative to its start, canonical at the top),
        and whether ranges beyond :attr:`limit` were left out."""
        check = self.check
        levels = check.levels
        span = entry_span(level)
        out: list[NotPresentRange] = []
        for index, e in enumerate(entries):
            kind = note_kind(e, level, levels)
            if kind == HOLE:
                continue
            va = self.canon(index * span) if top else index * span
            step = (level, table, index, e)
            eff = path.then(e)
            if kind == LEAF and level <= 2:
                if eff.present or not is_wx(eff.eff):
                    continue
                paddr = pfn_address(e)
                if not _add(out, self.limit, va, va + span, paddr, paddr + span, eff.user, (step,)):
                    return out, True
                continue
            if kind != TABLE:
                continue  # a PUD leaf is present: the MMU maps it
            child = pfn_address(e)
            t = check.tally(child, level - 1, eff.rw, eff.nx)
            if not (t.not_present or (t.present and not eff.present)):
                continue
            sub, more = self.subtree(child, level - 1, eff)
            for r in sub:
                steps = (step, *r.steps)
                if not _add(out, self.limit, va + r.vaddr, va + r.end, r.paddr, r.paddr_end,
                            r.user, steps):  # fmt: skip
                    return out, True
            if more:
                return out, True
        return out, False


def _pt_tally(entries: Sequence[int]) -> WxTally:
    """A page table below a writable, executable path: every PTE is noted (counted with C-level
    maps: a W+X entry is one whose RW and NX bits are just RW)."""
    wx = [e for e in entries if is_wx(e)]
    absent = sum(1 for e in wx if not is_present(e))
    return WxTally(0, len(wx) - absent, absent, 0, is_wx(entries[-1]))


def _add(
    out: list[NotPresentRange],
    limit: int,
    vaddr: int,
    end: int,
    paddr: int,
    paddr_end: int | None,
    user: bool,
    steps: tuple[tuple[int, int, int, int], ...],
) -> bool:
    """Add ``[vaddr, end)`` to ``out``, merged with the last range when it continues it;
    false (and nothing added) when that would need a range beyond ``limit``."""
    if out and out[-1].end == vaddr and out[-1].user == user:
        last = out[-1]
        last.end = end
        if last.paddr_end is not None:
            last.paddr_end = (
                last.paddr_end + (end - vaddr)
                if last.paddr_end == paddr and paddr_end is not None
                else None
            )
        return True
    if len(out) >= limit:
        return False
    out.append(NotPresentRange(vaddr, end, paddr, paddr_end, user, steps))
    return True
