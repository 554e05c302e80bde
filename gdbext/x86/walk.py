"""Walking a whole page table: every leaf in a range, in virtual-address order, as runs.

:class:`Walker` is what :meth:`~gdbext.x86.paging.X86PageTable.iter_runs` runs. It descends only
into subtrees that meet the range (and, with a permission filter, only into subtrees that may
hold a leaf that passes it), reads each shared table once per walk, reports self-referencing
(recursive) entries and entries with reserved bits as :class:`~gdbext.x86.records.Anomaly`
instead of following them, and tells the mapper which tables it is about to read
(``prefetch``) so that a live target can fetch them in one go. Leaf tables are summarised into
runs by :mod:`gdbext.x86.runs`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from gdbext.errors import (
    NotCapturedError,
    PhysMemoryError,
    TableNotCapturedError,
    TableOutsideRamError,
)
from gdbext.flags import HUGE_PAGE, NO_EXECUTE, PRESENT, USER_ACCESSIBLE, WRITABLE
from gdbext.geometry import ENTRIES_PER_TABLE, HUGE_LEAF_LEVELS, geometry
from gdbext.permfilter import PermFilter, perm_index
from gdbext.x86.entries import PERM_KEY, ROOT_ACCESS, EntryRules, fold
from gdbext.x86.records import AliasRun, Anomaly, Batch, LeafRun, WalkRecord, missing_table, new_run
from gdbext.x86.runs import (
    LeafSummary,
    SummaryStore,
    WalkMemo,
    add_anomaly,
    limit_leaves,
    merge_aliases,
    perm_table,
    present_indices,
    stored_summary,
    summarise,
)

__all__ = ["WalkMemo", "Walker", "reachable_tables"]

#: A leaf table summary with at most this many runs is memoised for the whole walk.
_COMPACT_RUNS = 64
#: How many larger summaries a walk keeps (least recently used goes first).
_BIG_MEMO_TABLES = 64
#: How many big summaries the page tables of one memory keep (:class:`WalkMemo`).
_SHARED_BIG_TABLES = 256


class _Walk:
    """State of one walk."""

    __slots__ = (
        "big_limit",
        "big_memo",
        "collapse",
        "hi",
        "keep",
        "leaf_memo",
        "leaf_ok",
        "lo",
        "may_match",
        "memo_limit",
        "path",
        "prefetch",
        "seen",
        "store",
        "table_memo",
    )

    def __init__(
        self,
        lo: int,
        hi: int,
        collapse: bool,
        keep: int,
        leaf_memo: dict[tuple[int, int], LeafSummary],
        big_memo: dict[tuple[int, int], LeafSummary],
        table_memo: dict[tuple[int, int], tuple[int, ...]],
        seen: dict[tuple[int, int], tuple[int, int, int, int]],
        path: list[int],
    ) -> None:
        self.lo = lo
        self.hi = hi
        self.collapse = collapse
        #: Entry bits that must agree for leaves to share a run (all but the ignored ones).
        self.keep = keep
        self.leaf_memo = leaf_memo
        self.big_memo = big_memo
        self.table_memo = table_memo
        # (table, level) -> (first va, leaves, mapped, effective permissions of the path there)
        self.seen = seen
        self.path = path
        #: With a permission filter: by combination index (:func:`perm_index`), whether a leaf
        #: passes, and whether a subtree reached with those accumulated permissions may hold
        #: one.
        self.leaf_ok: tuple[bool, ...] | None = None
        self.may_match: tuple[bool, ...] | None = None
        #: The mapper's optional ``prefetch(paddrs)``: told which tables the walk is about to
        #: read.
        self.prefetch: Callable[[list[int]], object] | None = None
        #: How many entries ``leaf_memo`` and ``table_memo`` may hold (shared ones are bounded).
        self.memo_limit = 1 << 62
        #: How many ``big_memo`` keeps.
        self.big_limit = _BIG_MEMO_TABLES
        #: Summaries by the tables' contents, kept across changes of the memory.
        self.store: SummaryStore | None = None


class Walker:
    """Walks of the page table rooted at ``root`` (``levels`` 4 or 5) under ``rules``.

    :param read_table: the 512 entries of a table by physical address; raises
        :class:`~gdbext.errors.PhysMemoryError` for a table that is not there.
    :param prefetch: the mapper's optional ``prefetch(paddrs)``.
    :param memo: what earlier walks of the same memory left (see :class:`WalkMemo`).
    """

    def __init__(
        self,
        read_table: Callable[[int], tuple[int, ...]],
        root: int,
        levels: int,
        rules: EntryRules,
        prefetch: Callable[[list[int]], object] | None = None,
        memo: WalkMemo | None = None,
    ) -> None:
        self.read_table = read_table
        self.root = root
        self.levels = levels
        self.rules = rules
        self.nx_bit = rules.nx_bit
        self.canonicalize = geometry(levels).canonicalize
        self.prefetch = prefetch
        self.memo = memo
        # By level (index 0 unused): reserved bits of a link, bytes an entry maps, index shift.
        self._link_reserved = (0, *(r.link_reserved for r in rules.levels))
        self._span = (0, *(r.span for r in rules.levels))
        self._shift = (0, *(r.shift for r in rules.levels))

    def runs(
        self,
        lo: int,
        hi: int,
        *,
        collapse: bool = False,
        keep: int = (1 << 64) - 1,
        max_leaves: int | None = None,
        perm: PermFilter | None = None,
    ) -> Iterator[WalkRecord]:
        """The records of the leaves in ``[lo, hi)`` (see
        :meth:`~gdbext.x86.paging.X86PageTable.iter_runs`); ``keep`` are the entry bits that
        must agree within a run."""
        if lo >= hi:
            return
        memo = self.memo
        key = (self.root, lo, hi, collapse, keep)
        batches: Iterator[Batch]
        if memo is not None and perm is None and key in memo.walks:
            batches = iter(memo.walks[key])
        else:
            if memo is None:
                walk = _Walk(lo, hi, collapse, keep, {}, {}, {}, {}, [self.root])
            else:
                summaries = memo.summaries.setdefault(keep, {})
                big = memo.big.setdefault(keep, {})
                walk = _Walk(lo, hi, collapse, keep, summaries, big, memo.tables, {}, [self.root])
                walk.memo_limit = memo.limit
                walk.big_limit = _SHARED_BIG_TABLES
                walk.store = memo.store
            walk.prefetch = self.prefetch
            if perm is not None:
                if perm.empty:
                    return
                walk.leaf_ok = perm.leaf_ok
                walk.may_match = perm.may_match(self.rules.nxe)
            # Internally the walk produces batches (lists of records, one per table or so), so
            # that the nested generators pass along one object per table rather than one per run.
            batches = self._walk_top(walk)
            if memo is not None and perm is None:
                batches = memo.kept(key, batches)
        if max_leaves is not None:
            batches = limit_leaves(batches, max_leaves)
        if not collapse:
            for batch in batches:
                yield from batch
            return
        yield from merge_aliases(batches)

    def _link_fault(self, level: int, entry: int) -> int:
        """The reserved bits of the linking ``entry`` at ``level``: HUGE_PAGE alone where the
        level forbids it, else the reserved bits set (0 for a good link)."""
        if level >= 4 and entry & HUGE_PAGE:  # entries.huge_forbidden
            return HUGE_PAGE
        return entry & self._link_reserved[level]

    def _walk_top(self, walk: _Walk) -> Iterator[Batch]:
        level = self.levels
        shift = self._shift[level]
        span = 1 << shift
        entries = walk.table_memo.get((self.root, level))
        if entries is None:
            try:
                entries = self.read_table(self.root)
            except NotCapturedError:
                raise TableNotCapturedError(0, level, None, self.root) from None
            except PhysMemoryError:
                # Nothing to walk at all: an error of the input (a wrong CR3), not an anomaly.
                raise TableOutsideRamError(0, level, None, self.root) from None
            walk.table_memo[(self.root, level)] = entries
        canon = self.canonicalize
        lo, hi = walk.lo, walk.hi
        # The present entries whose span meets the range, in index order.
        present = [(index, canon(index << shift)) for index in present_indices(entries)]
        present = [(index, base) for index, base in present if base < hi and lo < base + span]
        if walk.prefetch is not None:
            self._prefetch(walk, level, ROOT_ACCESS, [entries[index] for index, _ in present])
        for index, base in present:
            yield from self._visit_or_alias(
                walk, self.root, level, index, entries[index], base, ROOT_ACCESS
            )

    def _visit_entry(
        self, walk: _Walk, table: int, level: int, index: int, entry: int, va: int, acc: int
    ) -> Iterator[Batch]:
        """A present non-leaf-table entry at ``level`` (``level >= 2``) covering ``va``."""
        bad = self._link_fault(level, entry)
        if bad:
            kind = "huge-page-forbidden" if bad == HUGE_PAGE else "reserved-bits"
            yield [Anomaly(kind, va, level, table, index, entry, f"bits 0x{bad:x}")]
            return
        child = entry & self.rules.addr_mask
        if child in walk.path:
            detail = f"links table 0x{child:x}"
            yield [Anomaly("recursive", va, level, table, index, entry, detail)]
            return
        acc = fold(acc, entry, self.nx_bit)
        if walk.may_match is not None and not walk.may_match[perm_index(acc)]:
            return  # nothing below can pass the permission filter: do not read it
        yield from self._walk_table(walk, child, level - 1, va, acc, table, index, entry)

    def _walk_table(
        self,
        walk: _Walk,
        table: int,
        level: int,
        base: int,
        acc: int,
        parent: int,
        parent_index: int,
        parent_entry: int,
    ) -> Iterator[Batch]:
        """Walk the table at ``level`` whose first entry maps ``base``."""
        shift = self._shift[level]
        span = 1 << shift
        lo, hi = walk.lo, walk.hi
        first = 0 if lo <= base else (lo - base) >> shift
        last = ENTRIES_PER_TABLE - 1 if hi >= base + (span << 9) else (hi - 1 - base) >> shift
        key = (table, level)
        if level == 1 or level in HUGE_LEAF_LEVELS:
            summary = walk.leaf_memo.get(key)
            if summary is None:
                summary = walk.big_memo.pop(key, None)
                if summary is not None:
                    walk.big_memo[key] = summary  # most recently used last
            if summary is None:
                try:
                    leaves = self.read_table(table)
                    rules = self.rules.level(level)
                    store = walk.store
                    summary = (
                        summarise(leaves, rules, walk.keep)
                        if store is None
                        else stored_summary(store, leaves, rules, walk.keep)
                    )
                except PhysMemoryError as exc:
                    missing = missing_table(
                        exc, base, level, parent, parent_index, parent_entry, table
                    )
                    yield [missing]
                    return
                if walk.prefetch is not None and not summary.plain:
                    self._prefetch(
                        walk,
                        level,
                        acc,
                        [e for i, c, e in summary.runs if not c and first <= i <= last],
                    )
                if (
                    len(summary.runs) + len(summary.anomalies) <= _COMPACT_RUNS
                    and len(walk.leaf_memo) < walk.memo_limit
                ):
                    walk.leaf_memo[key] = summary
                else:
                    # Big summaries (scattered leaves) are kept for a few recent tables only, so
                    # that a walk's memory grows with its tables, not its leaves; links to one
                    # table come in bursts (ESPFIX), which a short LRU catches.
                    walk.big_memo[key] = summary
                    if len(walk.big_memo) > walk.big_limit:
                        del walk.big_memo[next(iter(walk.big_memo))]
            yield from self._emit_table(walk, table, level, base, acc, summary, first, last)
        else:
            entries = walk.table_memo.get(key)
            if entries is None:
                try:
                    entries = self.read_table(table)
                except PhysMemoryError as exc:
                    missing = missing_table(
                        exc, base, level, parent, parent_index, parent_entry, table
                    )
                    yield [missing]
                    return
                if len(walk.table_memo) < walk.memo_limit:
                    walk.table_memo[key] = entries
                new = True
            else:
                new = False
            # Upper tables are mostly empty (a 5-level kernel's preallocated vmalloc P4Ds hold
            # nothing).
            present = present_indices(entries, first, last)
            if new and walk.prefetch is not None:
                self._prefetch(walk, level, acc, [entries[index] for index in present])
            if not present:
                return
            walk.path.append(table)
            try:
                for index in present:
                    yield from self._visit_or_alias(
                        walk, table, level, index, entries[index], base + (index << shift), acc
                    )
            finally:
                walk.path.pop()

    def _visit_or_alias(
        self, walk: _Walk, table: int, level: int, index: int, entry: int, va: int, acc: int
    ) -> Iterator[Batch]:
        if walk.collapse:
            child_key = (entry & self.rules.addr_mask, level - 1)
            first = walk.seen.get(child_key)
            if first is not None and not self._link_fault(level, entry):
                eff = fold(acc, entry, self.nx_bit)
                if walk.may_match is not None:
                    if not walk.may_match[perm_index(eff)]:
                        return
                    if eff != first[3]:
                        # Other permissions on this path: other leaves pass. Walk it again.
                        yield from self._visit_entry(walk, table, level, index, entry, va, acc)
                        return
                    if not first[1]:
                        return  # the first walk found no leaf that passes
                yield [self._alias(va, 1, child_key, first, eff)]
                return
            # Remember the first walk of this child, with its totals once known.
            leaves = mapped = 0
            followed = True
            for batch in self._visit_entry(walk, table, level, index, entry, va, acc):
                for record in batch:
                    if type(record) is LeafRun:
                        leaves += record.count
                        mapped += record.count * record.page_size
                    elif type(record) is AliasRun:
                        leaves += record.leaves * record.count
                        mapped += record.mapped * record.count
                    elif (
                        type(record) is Anomaly
                        and record.level == level
                        and record.table == table
                        and record.index == index
                    ):
                        followed = False  # this very link was not followed
                yield batch
            if (
                followed
                and child_key not in walk.seen
                and self._covers(walk, va, self._span[level])
            ):
                walk.seen[child_key] = (va, leaves, mapped, fold(acc, entry, self.nx_bit))
            return
        yield from self._visit_entry(walk, table, level, index, entry, va, acc)

    def _alias(
        self,
        va: int,
        count: int,
        child_key: tuple[int, int],
        first: tuple[int, int, int, int],
        eff: int,
    ) -> AliasRun:
        """The record of ``count`` consecutive links from ``va`` to the table ``child_key``
        (its address and level) walked first as ``first`` (see :attr:`_Walk.seen`), each with
        the permissions ``eff`` down to it."""
        return AliasRun(
            va,
            va + count * self._span[child_key[1] + 1],
            count,
            child_key[0],
            child_key[1],
            first[0],
            first[1],
            first[2],
            bool(eff & USER_ACCESSIBLE),
            bool(eff & WRITABLE),
            not eff & NO_EXECUTE,
            eff == first[3],
        )

    def _repeated_links(
        self, walk: _Walk, level: int, entry: int, va: int, acc: int, count: int
    ) -> AliasRun | None:
        """``count`` consecutive links equal to ``entry``, the first of them at ``va``, as one
        record, when they are all aliases: the table they link was walked before. Asked only
        by a walk that collapses aliases, with no permission filter (:meth:`_emit_table`). One
        record stands for what :func:`~gdbext.x86.runs.merge_aliases` makes of their records one
        by one (a Linux ESPFIX table links one table from all its 512 entries)."""
        if self._link_fault(level, entry):
            return None
        child_key = (entry & self.rules.addr_mask, level - 1)
        first = walk.seen.get(child_key)
        if first is None:
            return None
        return self._alias(va, count, child_key, first, fold(acc, entry, self.nx_bit))

    def _prefetch(self, walk: _Walk, level: int, acc: int, links: list[int]) -> None:
        """Tell the mapper which tables the present entries ``links`` of a level-``level``
        table lead to, before the walk reads them one by one (entries the walk will not follow,
        for reserved bits or the permission filter, are left out)."""
        prefetch = walk.prefetch
        assert prefetch is not None
        rsvd = self.rules.level(level).link_reserved
        may_match = walk.may_match
        mask = self.rules.addr_mask
        children = [
            entry & mask
            for entry in links
            if not entry & rsvd
            and (may_match is None or may_match[perm_index(fold(acc, entry, self.nx_bit))])
        ]
        if children:
            prefetch(children)

    @staticmethod
    def _covers(walk: _Walk, va: int, span: int) -> bool:
        """True if the walk's range covers all of ``[va, va + span)`` (totals are complete)."""
        return walk.lo <= va and va + span <= walk.hi

    def _emit_table(
        self,
        walk: _Walk,
        table: int,
        level: int,
        base: int,
        acc: int,
        summary: LeafSummary,
        first: int,
        last: int,
    ) -> Iterator[Batch]:
        """The records of a summarised table between indices ``first`` and ``last``."""
        step = self._span[level]
        mask = self.rules.addr_mask & ~(step - 1)
        if first == 0 and last == ENTRIES_PER_TABLE - 1 and summary.plain:
            # The common case, built in one comprehension: every run, whole.
            perm = perm_table(acc, summary, self.nx_bit)
            leaf_ok = walk.leaf_ok
            if leaf_ok is None:
                batch: Batch = [
                    new_run((base + i * step, e & mask, c, step, e, *perm[e & PERM_KEY]))
                    for i, c, e in summary.runs
                ]
            else:
                ok = {key: leaf_ok[perm_index(fold(acc, key, self.nx_bit))] for key in perm}
                batch = [
                    new_run((base + i * step, e & mask, c, step, e, *perm[e & PERM_KEY]))
                    for i, c, e in summary.runs
                    if ok[e & PERM_KEY]
                ]
            if batch:
                yield batch
            return
        anomalies = summary.anomalies
        a_pos = 0
        # Equal links after a link become one record (_repeated_links) only in this case.
        collapsing = walk.collapse and walk.may_match is None
        out: Batch = []
        runs = summary.runs
        n_runs = len(runs)
        pos = 0
        while pos < n_runs:
            index, count, entry = runs[pos]
            pos += 1
            while a_pos < len(anomalies) and anomalies[a_pos][0] < index:
                add_anomaly(out, table, level, base, step, anomalies[a_pos], first, last)
                a_pos += 1
            if count == 0:
                # A table link inside a PD/PDPT.
                if first <= index <= last:
                    if out:
                        yield out
                        out = []
                    walk.path.append(table)
                    try:
                        yield from self._visit_or_alias(
                            walk, table, level, index, entry, base + index * step, acc
                        )
                        # Equal links right after it (to the table just walked or aliased),
                        # looked for only where they can be one record (else each link of
                        # ESPFIX's 512 would scan all those after it).
                        same = pos
                        while (
                            collapsing
                            and same < n_runs
                            and runs[same][2] == entry
                            and not runs[same][1]
                            and runs[same][0] == index + 1 + same - pos
                            and runs[same][0] <= last
                        ):
                            same += 1
                        if same > pos:
                            alias = self._repeated_links(
                                walk, level, entry, base + (index + 1) * step, acc, same - pos
                            )
                            if alias is not None:
                                yield [alias]
                                pos = same
                    finally:
                        walk.path.pop()
                continue
            start = index if index > first else first
            stop = index + count if index + count <= last else last + 1
            if start >= stop:
                continue
            eff = fold(acc, entry, self.nx_bit)
            if walk.leaf_ok is not None and not walk.leaf_ok[perm_index(eff)]:
                continue
            skip = start - index
            out.append(
                new_run(
                    (
                        base + start * step,
                        (entry & mask) + skip * step,
                        stop - start,
                        step,
                        entry + skip * step,
                        bool(eff & USER_ACCESSIBLE),
                        bool(eff & WRITABLE),
                        not eff & NO_EXECUTE,
                    )
                )
            )
        while a_pos < len(anomalies):
            add_anomaly(out, table, level, base, step, anomalies[a_pos], first, last)
            a_pos += 1
        if out:
            yield out

    # ------------------------------------------------------------------------------------------


def reachable_tables(
    read_table: Callable[[int], tuple[int, ...]], root: int, levels: int, rules: EntryRules
) -> dict[int, int]:
    """Every page-table frame reachable from ``root`` -> its level (the root included).

    Tables are found by following present links that the MMU would follow (no reserved bits,
    no HUGE_PAGE in a PML4/PML5), in a pass over tables only; a frame linked at several levels
    keeps the first level found. Page tables (level 1) are listed from their parents' entries
    and not read; a table that cannot be read (outside RAM, not in the dump) is listed but not
    descended.
    """
    found = {root: levels}
    stack = [(root, levels)]
    while stack:
        table, level = stack.pop()
        try:
            entries = read_table(table)
        except PhysMemoryError:
            continue
        lr = rules.levels[level - 1]
        # Links: present, neither a leaf (PS at levels 2 and 3) nor with reserved bits (PS
        # among them at levels 4 and 5); picked in one comprehension (tables are mostly
        # sparse or all leaves).
        skip = lr.link_reserved | HUGE_PAGE
        mask = lr.link_mask
        for child in {e & mask for e in entries if e & PRESENT and not e & skip}:
            if child not in found:
                found[child] = level - 1
                if level > 2:
                    stack.append((child, level - 1))
    return found
