"""Merging leaf runs into ranges, the way people read page tables.

A merged range covers leaves of one page size, contiguous in virtual and physical address,
whose flags agree on the bits of ``key_mask`` and whose effective permissions agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from gdbext.flags import ACCESSED_DIRTY, FLAGS_MASK, PAT_LARGE
from gdbext.paging import AliasRun, Anomaly, LeafRun

#: Merge key for JSON: every flag bit of the leaf (and the PAT bit of large pages).
KEY_ALL_FLAGS = FLAGS_MASK | PAT_LARGE
#: Merge key for text: every flag bit but ACCESSED and DIRTY, which the text does not show.
KEY_SHOWN_FLAGS = KEY_ALL_FLAGS & ~ACCESSED_DIRTY


@dataclass(slots=True)
class MergedRange:
    vaddr: int
    end: int
    paddr: int
    page_size: int
    #: The first leaf's raw entry.
    entry: int
    user: bool
    writable: bool
    executable: bool
    leaves: int

    @property
    def size(self) -> int:
        return self.end - self.vaddr


def merge_runs(
    records: Iterable[LeafRun | AliasRun | Anomaly], key_mask: int = KEY_ALL_FLAGS
) -> Iterator[MergedRange | AliasRun | Anomaly]:
    """Merge consecutive :class:`LeafRun` records; pass aliases and anomalies through."""
    cur: MergedRange | None = None
    cur_key = 0
    for rec in records:
        if type(rec) is not LeafRun:
            if cur is not None:
                yield cur
                cur = None
            yield rec  # type: ignore[misc]
            continue
        key = rec.entry & key_mask
        if rec.page_size == 4096:
            key &= ~PAT_LARGE  # bit 12 of a 4 KiB entry is an address bit
        if (
            cur is not None
            and rec.vaddr == cur.end
            and rec.paddr == cur.paddr + (cur.end - cur.vaddr)
            and rec.page_size == cur.page_size
            and key == cur_key
            and rec.user == cur.user
            and rec.writable == cur.writable
            and rec.executable == cur.executable
        ):
            cur.end = rec.end
            cur.leaves += rec.count
            continue
        if cur is not None:
            yield cur
        cur = MergedRange(
            rec.vaddr,
            rec.end,
            rec.paddr,
            rec.page_size,
            rec.entry,
            rec.user,
            rec.writable,
            rec.executable,
            rec.count,
        )
        cur_key = key
    if cur is not None:
        yield cur


def as_merged(records: Iterable[LeafRun | AliasRun | Anomaly]) -> Iterator[MergedRange | Anomaly]:
    """One :class:`MergedRange` per leaf run, unmerged (``--no-merge`` expands runs first)."""
    for rec in records:
        if type(rec) is LeafRun:
            for m in rec.mappings():
                yield MergedRange(
                    m.vaddr,
                    m.vaddr + m.page_size,
                    m.paddr,
                    m.page_size,
                    m.entry,
                    m.user,
                    m.writable,
                    m.executable,
                    1,
                )
        elif type(rec) is Anomaly:
            yield rec
