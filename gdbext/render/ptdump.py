"""``--format ptdump``: the lines of Linux's ``/sys/kernel/debug/page_tables`` for any walk.

Linux's ptdump (``arch/x86/mm/dump_pagetables.c`` over the generic ``mm/ptdump.c`` walker,
5.6 and later) calls ``note_page(addr, level, val)`` for every entry it meets and prints a line
whenever the raw protection bits, the effective protection, the level or the marker section
change::

    ---[ High Kernel Mapping ]---
    0xffffffff80000000-0xffffffff81000000          16M                               pmd
    0xffffffff81000000-0xffffffff82000000          16M     ro         PSE     GLB x  pmd

This module replays that walk on the tables (it does not go through the engine's leaf runs:
ptdump also prints holes, at the level where the walker found them, and non-present entries).

**What is noted, per level** (``mm/pagewalk.c`` with ``ptdump_ops``): an entry that is *none*
(zero; below the top, zero but for ACCESSED/DIRTY) is a hole at its level; a PUD entry with
PRESENT and PSE and a PMD entry with PSE are leaves; every PTE is noted, zero or not; a PGD or
P4D entry that is not none, a present PUD entry and a PMD entry with PRESENT or PROTNONE are
descended into; any other entry is not noted at all (its range joins the series before it).

**Level names.** Ptdump levels are 0-4, ``pgd p4d pud pmd pte``. With 5-level paging the PML5
is ``pgd`` and the PML4 ``p4d``. With 4-level paging the p4d level is folded into the pgd
(``PTRS_PER_P4D == 1``): the walker's ``real_depth()`` reports PML4 holes as ``pgd``, and
``p4d`` never appears. PDPT, PD and PT are ``pud``, ``pmd`` and ``pte``.

**Protections.** The raw prot is ``val & PTE_FLAGS_MASK`` (bits 0-11 and 52-63): bit 12 of a
large page, its PAT bit, is a frame bit to that mask, so ``PAT`` shows for 4 KiB pages only,
exactly as the kernel prints it. The effective prot of level *n* is
``(eff[n-1] & prot & (USR|RW)) | ((eff[n-1] | prot) & NX)``, the top level's is its prot, and a
zero entry's is 0.

**Walked ranges** are ptdump's: ``[0, end of the lower half)`` and ``[GUARD_HOLE_END_ADDR,
2^64)``; the non-canonical and guard holes are skipped. The last line ends at
``0x0000000000000000``, where the kernel's final ``note_page(0, -1, 0)`` ends it. With
``--range``, only entries that meet it are noted, the first section is the one holding the first
entry, and the last line ends at the range's end.

**Differences**, all outside what a real kernel's tables hold: entries the kernel's walker would
find "bad" (and clear) are walked as they are; tables that cannot be read (outside RAM, or not
in the dump) are not noted and are listed after the dump as ``#`` lines.

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
    OutputLimitError,
    PhysMemoryError,
    TableNotCapturedError,
    TableOutsideRamError,
    UsageError,
    WalkLimitError,
)
from gdbext.flags import (
    ACCESSED_DIRTY,
    ADDR_MASK_52,
    FLAGS_MASK,
    GLOBAL,
    HUGE_PAGE,
    NO_EXECUTE,
    PAT_LARGE,
    PRESENT,
    USER_ACCESSIBLE,
    WRITABLE,
    PageTableFlags,
)
from gdbext.frontend.commands import DEFAULT_MAX_LINES_PTDUMP, WalkResult
from gdbext.geometry import ENTRIES_PER_TABLE, entry_span, level_name
from gdbext.linux.layout import Layout, detect_layout
from gdbext.mapper import read_table
from gdbext.x86.paging import Anomaly, X86PageTable

#: Linux's ``PTE_FLAGS_MASK`` (~PTE_PFN_MASK with a 52-bit physical mask): bits 0-11, 52-63.
PTE_FLAGS_MASK = FLAGS_MASK
#: Ptdump's level names, by its level index.
LEVEL_NAMES = ("pgd", "p4d", "pud", "pmd", "pte")
UNITS = "BKMGTPE"
_TOP = 1 << 64
_UW = USER_ACCESSIBLE | WRITABLE
_UWNX = _UW | NO_EXECUTE
_PWT = int(PageTableFlags.WRITE_THROUGH)
_PCD = int(PageTableFlags.NO_CACHE)
_PAT_4K = HUGE_PAGE
_LEAF_PUD = PRESENT | HUGE_PAGE
#: PROTNONE (the GLOBAL bit) counts as present for pmd_present().
_PMD_PRESENT = PRESENT | GLOBAL
_NO_FLAGS = " " * 30

#: (ptdump level, raw prot, effective prot) of a series.
Key = tuple[int, int, int]
_FLUSH: Key = (-1, 0, 0)


def prot_flags(prot: int, level: int) -> str:
    """The fixed-width flag tokens ptdump prints for ``prot`` at ``level`` (30 characters).

    >>> prot_flags(0x8000000000000163, 4)
    '    RW                 GLB NX '
    >>> prot_flags(0x1F9, 3)
    '    ro PWT PCD PSE     GLB x  '
    >>> prot_flags(0, 2) == " " * 30
    True
    """
    if not prot & PRESENT:
        return _NO_FLAGS
    return (
        ("USR " if prot & USER_ACCESSIBLE else "    ")
        + ("RW " if prot & WRITABLE else "ro ")
        + ("PWT " if prot & _PWT else "    ")
        + ("PCD " if prot & _PCD else "    ")
        + ("PSE " if level <= 3 and prot & HUGE_PAGE else "    ")
        + (
            "PAT "
            if (level == 4 and prot & _PAT_4K) or (level in (2, 3) and prot & PAT_LARGE)
            else "    "
        )
        + ("GLB " if prot & GLOBAL else "    ")
        + ("NX " if prot & NO_EXECUTE else "x  ")
    )


def size_field(delta: int) -> str:
    """``%9lu%c``: the size divided by 1024 while it divides, with its unit from ``BKMGTPE``.

    >>> size_field(0x2000), size_field(0x1800), size_field(1 << 60)
    ('        8K', '        6K', '        1E')
    """
    unit = 0
    while not delta & 1023 and unit < len(UNITS) - 1:
        delta >>= 10
        unit += 1
    return f"{delta:9d}{UNITS[unit]}"


def ptdump_line(start: int, end: int, level: int, prot: int) -> str:
    """One ptdump line for the series ``[start, end)`` (``end`` taken modulo 2^64).

    >>> ptdump_line(0xFFFFFFFF81000000, 0xFFFFFFFF82000000, 3, 0x1A1)
    '0xffffffff81000000-0xffffffff82000000          16M     ro         PSE     GLB x  pmd'
    """
    end %= _TOP
    return (
        f"0x{start:016x}-0x{end:016x}   {size_field((end - start) % _TOP)} "
        f"{prot_flags(prot, level)}{LEVEL_NAMES[level]}"
    )


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


class _Ptdump:
    """One ptdump walk: the kernel's ``pg_state`` plus compiled tables."""

    def __init__(self, pt: X86PageTable, layout: Layout, lo: int, hi: int, limit: int | None):
        self.pt = pt
        self.levels = pt.levels
        self.lo, self.hi = lo, hi
        self.limit = limit
        # Ptdump level index of each hardware level (1 = PT ... 5 = PML5).
        self.plevel = {1: 4, 2: 3, 3: 2, 4: 1 if pt.levels == 5 else 0, 5: 0}
        geo = pt.geometry
        half = geo.lower_half_end
        # GUARD_HOLE_END_ADDR: 16 top-level entries above the start of the higher half.
        guard_end = geo.higher_half_start + 16 * entry_span(pt.levels)
        self.walked = [(0, half), (guard_end, _TOP)]
        self.programs: dict[tuple[int, int, int], _Program | _Unreadable] = {}
        self.tables: dict[int, tuple[int, ...]] = {}
        self.anomalies: list[Anomaly] = []
        self.leaves = 0
        self.out: list[str] = []
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
        self.max_lines = self.markers[index].max_lines
        nxt = index + 1
        # The kernel's list ends with { -1, NULL }.
        self.next_start = self.markers[nxt].start if nxt < len(self.markers) else _TOP - 1
        self.out.append(f"---[ {self.markers[index].name} ]---")

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
            level, prot, _ = self.key
            self.out.append(ptdump_line(self.start, addr, level, prot))
        self.lines += 1
        if addr >= self.next_start:
            if self.max_lines and self.lines > self.max_lines:
                skipped = self.lines - self.max_lines
                self.out.append(f"... {skipped} entr{'y' if skipped == 1 else 'ies'} skipped ... ")
            self._enter(self.marker + 1)
        self.start, self.key = addr, key

    def flush(self, addr: int) -> None:
        """The final series, ended at ``addr`` (the kernel's ``note_page(0, -1, 0)``)."""
        if self.started and (not self.max_lines or self.lines < self.max_lines):
            level, prot, _ = self.key
            self.out.append(ptdump_line(self.start, addr, level, prot))

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
            entries = self.tables[table] = read_table(self.pt.mapper, table)
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
            keys = [e & PTE_FLAGS_MASK if e else -1 for e in entries]
            starts = [0, *(i for i in range(1, ENTRIES_PER_TABLE) if keys[i] != keys[i - 1])]
            starts.append(ENTRIES_PER_TABLE)
            for a, b in pairwise(starts):
                prot = keys[a]
                if prot < 0:
                    key: Key = (4, 0, 0)
                else:
                    key = (4, prot, (eff_in & prot & _UW) | ((eff_in | prot) & NO_EXECUTE))
                n = b - a if prot > 0 and prot & PRESENT else 0
                last = items[-1] if items else None
                if type(last) is _Run and last.key == key:
                    items[-1] = _Run(last.start, b, key, last.leaves + n)
                else:
                    items.append(_Run(a, b, key, n))
            return items
        level = self.plevel[hw]
        top = hw == self.levels
        hole: Key = (level, 0, 0)
        if not any(entries):
            return [_Run(0, ENTRIES_PER_TABLE, hole, 0)]
        for i, e in enumerate(entries):
            key_: Key | None = None
            leaves = 0
            # pgd_none() of a real PML5 is "zero"; the others ignore ACCESSED and DIRTY.
            none = e == 0 if top and self.levels == 5 else not e & ~ACCESSED_DIRTY
            if none:
                key_ = hole
            elif hw == 3 and e & _LEAF_PUD == _LEAF_PUD:
                key_ = (level, e & PTE_FLAGS_MASK, _eff(eff_in, e))
                leaves = 1
            elif hw == 2 and e & HUGE_PAGE:
                key_ = (level, e & PTE_FLAGS_MASK, _eff(eff_in, e))
                leaves = e & PRESENT
            elif hw >= 4 or e & (_PMD_PRESENT if hw == 2 else PRESENT):
                # walk_pgd_range()/walk_p4d_range() descend into any entry that is not none;
                # walk_pud_range()/walk_pmd_range() only into present ones.
                eff = e & _UWNX if top else _eff(eff_in, e)
                child = e & ADDR_MASK_52
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

    def walk(self) -> Iterator[list[str]]:
        pt = self.pt
        hw = self.levels
        try:
            self._entries(pt.root)
        except NotCapturedError:
            raise TableNotCapturedError(0, hw, None, pt.root) from None
        except PhysMemoryError:
            raise TableOutsideRamError(0, hw, None, pt.root) from None
        top = self.program(pt.root, hw, _UWNX)
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
        for a in self.anomalies:
            self.out.append(
                f"# 0x{a.vaddr:016x}: {level_name(a.level)}[{a.index}] entry 0x{a.entry:x} "
                f"in table 0x{a.table:x}: {a.kind} ({a.detail})"
            )
        yield self.out

    def emit(self, prog: _Program, hw: int, base: int, lo: int, hi: int) -> Iterator[list[str]]:
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
    ) -> Iterator[list[str]]:
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


def _eff(higher: int, entry: int) -> int:
    return (higher & entry & _UW) | ((higher | entry) & NO_EXECUTE)


def render_walk(result: WalkResult) -> Iterator[str]:
    """The walk in ptdump's line format, with Linux's x86-64 markers.

    Shared tables are not collapsed (ptdump prints every link's series), so a table linked
    under every entry above it can multiply the lines: they stop at ``--max-lines`` (default
    :data:`~gdbext.frontend.commands.DEFAULT_MAX_LINES_PTDUMP`) with
    :class:`~gdbext.errors.OutputLimitError`."""
    pt = result.page_table
    options = result.options
    if options.perm is not None:
        raise UsageError("--format ptdump prints every entry, holes too: --filter does not apply")
    layout = detect_layout(pt, result.facts)
    rng = result.has_range() if options.has is not None else options.range
    lo, hi = (0, _TOP) if rng is None else (rng.start, rng.end)
    dump = _Ptdump(pt, layout, lo, hi, result.options.max_leaves)
    stats = result.stats
    limit = options.line_limit(DEFAULT_MAX_LINES_PTDUMP)
    written = 0
    try:
        for batch in dump.walk():
            stats["leaves"] = dump.leaves
            if limit is not None and written + len(batch) > limit:
                yield from batch[: limit - written]
                over = batch[limit - written]
                at = int(over[2:18], 16) if over.startswith("0x") else dump.start
                raise OutputLimitError("ptdump", limit, at)
            written += len(batch)
            yield from batch
    finally:
        stats["leaves"] = dump.leaves
        stats["anomalies"] = len(dump.anomalies)
