"""Merging leaf runs into ranges, the way people read page tables.

A merged range covers leaves of one page size, contiguous in virtual and physical address,
whose flags agree on the bits of ``key_mask`` and whose effective permissions agree. Merged by
virtual address only (``walk --merge va``), the frames may be anywhere: a range whose frames
are not contiguous is *scattered* (its ``paddr`` is then the first leaf's frame).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from gdbext.flags import ACCESSED_DIRTY, FLAGS_MASK, PAT_LARGE
from gdbext.x86.records import AliasRun, Anomaly, LeafRun

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
    #: Merged by virtual address only: where the frames jump, as (vaddr, its frame), in
    #: order; ``None`` while they are contiguous.
    breaks: list[tuple[int, int]] | None = None

    @property
    def scattered(self) -> bool:
        """True when the frames are not contiguous (only when merged by virtual address)."""
        return bool(self.breaks)

    def split(self, cut: int) -> tuple[MergedRange, MergedRange]:
        """The range cut in two at ``cut`` (a page boundary inside it), each part with its
        own first frame and breaks."""
        delta = cut - self.vaddr
        head_leaves = delta // self.page_size
        breaks = self.breaks or []
        head_breaks = [b for b in breaks if b[0] < cut]
        tail_breaks = [b for b in breaks if b[0] > cut]
        va, pa = head_breaks[-1] if head_breaks else (self.vaddr, self.paddr)
        at_cut = next((b[1] for b in breaks if b[0] == cut), pa + (cut - va))
        perms = (self.user, self.writable, self.executable)
        head = MergedRange(
            self.vaddr, cut, self.paddr, self.page_size, self.entry, *perms, head_leaves,
            head_breaks or None,
        )  # fmt: skip
        # The entry is the frame and flag bits (disjoint): the tail's first leaf has its frame.
        tail_entry = self.entry - self.paddr + at_cut
        tail = MergedRange(
            cut, self.end, at_cut, self.page_size, tail_entry, *perms, self.leaves - head_leaves,
            tail_breaks or None,
        )  # fmt: skip
        return head, tail

    @property
    def size(self) -> int:
        return self.end - self.vaddr


def merge_runs(
    records: Iterable[LeafRun | AliasRun | Anomaly],
    key_mask: int = KEY_ALL_FLAGS,
    by_va: bool = False,
) -> Iterator[MergedRange | AliasRun | Anomaly]:
    """Merge consecutive :class:`LeafRun` records; pass aliases and anomalies through.

    With ``by_va`` leaves merge whatever their frames (:attr:`MergedRange.scattered` says
    when the frames are not contiguous)."""
    cur: MergedRange | None = None
    cur_key = 0
    expected_pa = 0  # the frame the next leaf of ``cur`` has if contiguous
    for rec in records:
        if type(rec) is not LeafRun:
            if cur is not None:
                yield cur
                cur = None
            yield rec  # type: ignore[misc]
            continue
        # One unpacking instead of eight attribute reads: this loop runs once per leaf run.
        vaddr, paddr, count, page_size, entry, user, writable, executable = rec
        key = entry & key_mask
        if page_size == 4096:
            key &= ~PAT_LARGE  # bit 12 of a 4 KiB entry is an address bit
        size = count * page_size
        if (
            cur is not None
            and vaddr == cur.end
            and (by_va or paddr == expected_pa)
            and page_size == cur.page_size
            and key == cur_key
            and user == cur.user
            and writable == cur.writable
            and executable == cur.executable
        ):
            if by_va and paddr != expected_pa:
                if cur.breaks is None:
                    cur.breaks = []
                cur.breaks.append((vaddr, paddr))
            expected_pa = paddr + size
            cur.end = vaddr + size
            cur.leaves += count
            continue
        if cur is not None:
            yield cur
        cur = MergedRange(
            vaddr, vaddr + size, paddr, page_size, entry, user, writable, executable, count
        )
        cur_key = key
        expected_pa = paddr + size
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
