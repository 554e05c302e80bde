"""Leaves grouped into runs, and runs merged: the bookkeeping of a walk (:mod:`gdbext.x86.walk`).

A table that may hold leaves (PT, PD, PDPT) is summarised once per walk (:func:`summarise`):
its present entries grouped into runs of leaves contiguous in VA and PA with equal flags, its
links to lower tables and the leaves it did not follow (reserved bits). Collapsed alias runs
that continue each other are merged (:func:`merge_aliases`); a walk's leaves are counted
against a limit (:func:`limit_leaves`). What walks of one memory share is a :class:`WalkMemo`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import reduce
from itertools import compress, pairwise, repeat
from operator import and_, itemgetter, or_, sub

from gdbext.errors import WalkLimitError
from gdbext.flags import HUGE_PAGE, NO_EXECUTE, PRESENT, USER_ACCESSIBLE, WRITABLE
from gdbext.geometry import ENTRIES_PER_TABLE, SIZE_4K
from gdbext.mapper import TABLE_STRUCT
from gdbext.x86.entries import PERM_KEY, LevelRules, fold
from gdbext.x86.records import AliasRun, Anomaly, Batch, LeafRun, WalkRecord

__all__ = [
    "ALL_BITS",
    "SUMMARY_STORE_TABLES",
    "LeafSummary",
    "SummaryStore",
    "WalkMemo",
    "add_anomaly",
    "limit_leaves",
    "merge_aliases",
    "perm_table",
    "present_indices",
    "stored_summary",
    "summarise",
]

#: A ``keep`` mask that keeps every bit of an entry.
ALL_BITS = (1 << 64) - 1
#: A run's count (0 for a link), and the step between the indices of neighbours in a run.
_COUNT = itemgetter(1)
_ONE = 1


class LeafSummary:
    """Per-walk memo of a leaf-bearing table: runs by index, anomalies, and totals. (A plain
    class: every command that walks imports it, and making a dataclass costs start-up time.)"""

    __slots__ = ("anomalies", "leaves", "mapped", "plain", "runs")

    def __init__(
        self,
        runs: list[tuple[int, int, int]],
        anomalies: list[tuple[int, str, int, str]],
        leaves: int,
        mapped: int,
    ) -> None:
        #: (first index, count, first entry); a count of 0 is a link to a lower table.
        self.runs = runs
        self.anomalies = anomalies  # (index, kind, entry, detail)
        self.leaves = leaves
        self.mapped = mapped
        #: Only leaf runs: no links to lower tables, no anomalies (set once, read per emission).
        self.plain = not anomalies and all(map(_COUNT, runs))


#: How many whole walks (their records) the page tables of one memory keep, and the most
#: records each may have.
_KEPT_WALKS = 8
_KEPT_WALK_RECORDS = 1 << 16

#: Leaf-table summaries by what they are computed from: the level's rules, the kept bits and
#: the table's 4 KiB (a summary depends on nothing else, so it holds whatever the memory does).
SummaryStore = dict[tuple[LevelRules, int, bytes], LeafSummary]
#: How many summaries a :data:`SummaryStore` keeps (the oldest goes first): 4 KiB of key each.
SUMMARY_STORE_TABLES = 4096


def stored_summary(
    store: SummaryStore, entries: tuple[int, ...], rules: LevelRules, keep: int
) -> LeafSummary:
    """:func:`summarise` of ``entries``, taken from ``store`` when a table with the same
    entries was summarised before (under the same rules and kept bits), else made and kept.

    >>> from gdbext.x86.entries import entry_rules
    >>> store: SummaryStore = {}
    >>> pt = (0x5003, 0x6003) + (0,) * 510
    >>> rules = entry_rules(40, nxe=False).level(1)
    >>> stored_summary(store, pt, rules, ALL_BITS) is stored_summary(store, pt, rules, ALL_BITS)
    True
    """
    key = (rules, keep, TABLE_STRUCT.pack(*entries))
    summary = store.get(key)
    if summary is None:
        summary = summarise(entries, rules, keep)
        if len(store) >= SUMMARY_STORE_TABLES:
            del store[next(iter(store))]
        store[key] = summary
    return summary


class WalkMemo:
    """What the walks of page tables share while their memory does not change (a page table
    with ``cache=True`` keeps one, shares it with the tables of other roots made from it, and
    clears it on every change): the summaries of leaf tables, by the entry bits a walk keeps,
    and the entries of upper tables (by table, whatever the root: a kernel's half is shared by
    every process); at most ``limit`` of each, and of the big summaries of scattered leaves the
    most recent few; and the records of the last few whole walks without a permission filter,
    by root (a front end walks the same range again at the same stop: it reads and summarises
    nothing).

    A plain class, not a dataclass: every command that walks imports it, and making a
    dataclass costs start-up time."""

    __slots__ = ("big", "limit", "store", "summaries", "tables", "walks")

    def __init__(self, limit: int, store: SummaryStore | None = None) -> None:
        self.limit = limit
        #: Summaries by the tables' contents, kept across changes of the memory (not cleared).
        self.store = store
        self.summaries: dict[int, dict[tuple[int, int], LeafSummary]] = {}
        #: The big summaries, by kept bits: the most recently used few.
        self.big: dict[int, dict[tuple[int, int], LeafSummary]] = {}
        self.tables: dict[tuple[int, int], tuple[int, ...]] = {}
        #: Whole walks by ``(root, lo, hi, collapse, keep)``: their batches, as the walk
        #: yielded them.
        self.walks: dict[tuple[int, int, int, bool, int], tuple[Batch, ...]] = {}

    def clear(self) -> None:
        self.summaries.clear()
        self.big.clear()
        self.tables.clear()
        self.walks.clear()

    def kept(
        self, key: tuple[int, int, int, bool, int], batches: Iterator[Batch]
    ) -> Iterator[Batch]:
        """``batches`` as they come; once they are all through (and not too many records),
        kept under ``key`` for the next walk of the same range."""
        seen: list[Batch] | None = []
        records = 0
        for batch in batches:
            if seen is not None:
                records += len(batch)
                if records > _KEPT_WALK_RECORDS:
                    seen = None
                else:
                    seen.append(batch)
            yield batch
        if seen is not None:
            walks = self.walks
            if len(walks) >= _KEPT_WALKS:
                del walks[next(iter(walks))]
            walks[key] = tuple(seen)


def present_indices(
    entries: tuple[int, ...], first: int = 0, last: int = ENTRIES_PER_TABLE - 1
) -> list[int]:
    """The indices of the present entries among ``entries[first:last + 1]``, picked in C: a
    sparse table's (most tables of a real kernel) from its nonzero entries.

    >>> present_indices((0, 3, 0x1000, 0x2001) + (0,) * 508)
    [1, 3]
    """
    part = entries if first == 0 and last == len(entries) - 1 else entries[first : last + 1]
    zeros = part.count(0)
    if zeros == len(part):
        return []
    if zeros >= len(part) // 2:
        return [i for i in compress(range(first, last + 1), part) if entries[i] & PRESENT]
    return list(compress(range(first, last + 1), map(PRESENT.__and__, part)))


def summarise(entries: tuple[int, ...], rules: LevelRules, keep: int = ALL_BITS) -> LeafSummary:
    """Group the leaves of ``entries``, a table at ``rules.level`` (1..3), into runs.

    Leaves join a run when their entries, masked with ``keep``, continue the run's first
    entry by one page each. A link to a lower table is a run of count 0; a leaf with reserved
    bits set is an anomaly.

    >>> from gdbext.x86.entries import entry_rules
    >>> pt = (0x5003, 0x6003, 0x9003, 0x8000000000000001) + (0,) * 508
    >>> s = summarise(pt, entry_rules(40, nxe=False).level(1))
    >>> s.runs, s.leaves
    ([(0, 2, 20483), (2, 1, 36867)], 3)
    >>> [(index, kind, detail) for index, kind, _, detail in s.anomalies]
    [(3, 'reserved-bits', 'bits 0x8000000000000000')]
    """
    step = rules.span
    addr_mask = rules.addr_mask
    runs: list[tuple[int, int, int]] = []
    anomalies: list[tuple[int, str, int, str]] = []
    leaf_rsvd = rules.leaf_reserved
    e0 = entries[0]
    n = ENTRIES_PER_TABLE
    # Fast path: 512 leaves, equal flags, contiguous frames (direct maps): compared in C.
    if (
        e0 & PRESENT
        and (rules.always_leaf or e0 & HUGE_PAGE)
        and not e0 & leaf_rsvd
        and (e0 & addr_mask) + n * step <= addr_mask + SIZE_4K
    ):
        uniform = entries[-1] == e0 + (n - 1) * step and entries == tuple(
            range(e0, e0 + n * step, step)
        )
        if not uniform and keep != ALL_BITS:
            m0 = e0 & keep
            uniform = (entries[-1] & keep) == m0 + (n - 1) * step and list(
                map(keep.__and__, entries)
            ) == list(range(m0, m0 + n * step, step))
        if uniform:
            return LeafSummary([(0, n, e0)], [], n, n * step)
    # The present entries and their indices.
    common = 0
    present: Sequence[int]
    values: Sequence[int]
    if not entries.count(0) and (common := reduce(and_, entries)) & PRESENT:
        present = range(n)
    else:
        present = present_indices(entries)
    count = len(present)
    if count == n:
        values = entries
    elif count > 1:
        values = itemgetter(*present)(entries)  # a tuple
    elif count:
        values = (entries[present[0]],)
    else:
        return LeafSummary([], [], 0, 0)
    some = reduce(or_, values)
    if not rules.always_leaf and not some & HUGE_PAGE:
        # Links only (a PD of Linux's ESPFIX area links one table 512 times).
        return LeafSummary(list(zip(present, repeat(0), values)), [], 0, 0)
    # Every present entry a well-formed leaf (a used kernel's tables, whose neighbours differ
    # in ACCESSED/DIRTY): runs start where the index or the kept bits do not continue the
    # entry before, found in C (differences of neighbours), not in a loop. The bits all
    # entries have, and those any has, are folded in C.
    if (
        (rules.always_leaf or (common or reduce(and_, values)) & HUGE_PAGE)
        and not some & leaf_rsvd
        and (
            (some & addr_mask) + step <= addr_mask  # no address near the top: no carry
            or max(e & addr_mask for e in values) + step <= addr_mask
        )
    ):
        keyed = values if keep == ALL_BITS else list(map(keep.__and__, values))
        breaks: Iterator[bool] = map(step.__ne__, map(sub, keyed[1:], keyed))
        if count != n:
            breaks = map(or_, breaks, map(_ONE.__ne__, map(sub, present[1:], present)))
        starts = [0, *compress(range(1, count), breaks), count]
        runs = [(present[a], b - a, values[a]) for a, b in pairwise(starts)]
        return LeafSummary(runs, [], count, count * step)
    run_index = run_count = run_entry = 0
    expect = -1
    leaves = 0
    for index, entry in zip(present, values, strict=True):
        if not rules.always_leaf and not entry & HUGE_PAGE:
            # A link to a lower table inside a PD or PDPT: handled by the caller's loop.
            if run_count:
                runs.append((run_index, run_count, run_entry))
                run_count = 0
            runs.append((index, 0, entry))
            expect = -1
            continue
        bad = entry & leaf_rsvd
        if bad:
            if run_count:
                runs.append((run_index, run_count, run_entry))
                run_count = 0
            anomalies.append((index, "reserved-bits", entry, f"bits 0x{bad:x}"))
            expect = -1
            continue
        leaves += 1
        masked = entry & keep
        if masked == expect and index == run_index + run_count:
            run_count += 1
        else:
            if run_count:
                runs.append((run_index, run_count, run_entry))
            run_index, run_count, run_entry = index, 1, entry
        expect = masked + step
        if (entry & addr_mask) + step > addr_mask:
            expect = -1  # the next address would carry into the flag bits
    if run_count:
        runs.append((run_index, run_count, run_entry))
    return LeafSummary(runs, anomalies, leaves, leaves * step)


def perm_table(acc: int, summary: LeafSummary, nx_bit: int) -> dict[int, tuple[bool, bool, bool]]:
    """Effective (user, writable, executable) by a leaf's permission bits, under ``acc``."""
    table: dict[int, tuple[bool, bool, bool]] = {}
    for _, _, entry in summary.runs:
        key = entry & PERM_KEY
        if key not in table:
            eff = fold(acc, key, nx_bit)
            table[key] = (
                bool(eff & USER_ACCESSIBLE),
                bool(eff & WRITABLE),
                not eff & NO_EXECUTE,
            )
    return table


def add_anomaly(
    out: Batch,
    table: int,
    level: int,
    base: int,
    step: int,
    item: tuple[int, str, int, str],
    first: int,
    last: int,
) -> None:
    """Append the summarised anomaly ``item`` to ``out`` if its index is in ``first..last``."""
    index, kind, entry, detail = item
    if first <= index <= last:
        out.append(Anomaly(kind, base + index * step, level, table, index, entry, detail))


def limit_leaves(batches: Iterator[Batch], limit: int) -> Iterator[Batch]:
    """``batches`` as they come, raising :class:`~gdbext.errors.WalkLimitError` once more than
    ``limit`` leaves went by."""
    total = 0
    for batch in batches:
        for record in batch:
            if type(record) is LeafRun:
                total += record.count
                if total > limit:
                    raise WalkLimitError(limit, record.vaddr)
        yield batch


def merge_aliases(batches: Iterator[Batch]) -> Iterator[WalkRecord]:
    """The records of ``batches``, with consecutive alias runs that continue each other (same
    table and access, adjacent addresses) merged into one."""
    pending: AliasRun | None = None
    for batch in batches:
        for record in batch:
            if type(record) is AliasRun:
                if pending is not None and _extends(pending, record):
                    pending = _merge_alias(pending, record)
                    continue
                if pending is not None:
                    yield pending
                pending = record
                continue
            if pending is not None:
                yield pending
                pending = None
            yield record
    if pending is not None:
        yield pending


def _extends(a: AliasRun, b: AliasRun) -> bool:
    return (
        a.end == b.vaddr
        and a.table == b.table
        and a.level == b.level
        and (a.user, a.writable, a.executable, a.same_access)
        == (b.user, b.writable, b.executable, b.same_access)
    )


def _merge_alias(a: AliasRun, b: AliasRun) -> AliasRun:
    return AliasRun(
        a.vaddr,
        b.end,
        a.count + b.count,
        a.table,
        a.level,
        a.first_vaddr,
        a.leaves,
        a.mapped,
        a.user,
        a.writable,
        a.executable,
        a.same_access,
    )
