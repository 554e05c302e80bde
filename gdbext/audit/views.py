"""One page table as the audit sees it: its shared, collapsed walk and what is derived from it.

- :class:`TableWalk` is ONE ``iter_runs(aliases="collapse")`` walk of a page table (or of a
  window of it), materialised; ``leaf_runs``, ``alias_runs`` and ``anomalies`` split it;
  ``spans`` adds the leaves that collapsed aliases map again, as
  :class:`~gdbext.audit.spans.LeafSpan` objects (a run plus how often and how far apart it is
  repeated), so that a table linked 65,536 times (Linux's ESPFIX area) costs one span, not
  65,536 runs; ``frame_index`` sorts the spans by physical address for overlap sweeps;
  ``tables`` lists every page-table frame reachable from the root with its level.
- :class:`AuditView` is a page table under a name (``cr3``, ``kernel``, ``user``) and its walk.

Everything is computed on first use and kept. Under collapsed walks, a run's ``entry`` is its
first leaf's entry, and leaves of one run may differ in ACCESSED and DIRTY (the walk ignores
those bits when grouping).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from functools import cached_property

from gdbext.addr import AddrRange
from gdbext.audit.spans import FrameIndex, LeafSpan
from gdbext.errors import AliasLimitError
from gdbext.flags import ACCESSED_DIRTY
from gdbext.geometry import entry_span
from gdbext.x86.paging import X86PageTable
from gdbext.x86.records import AliasRun, Anomaly, LeafRun, WalkRecord

__all__ = ["ALIAS_SPANS", "WALK_IGNORE", "AuditView", "TableWalk"]

#: Bits the shared walk ignores when it groups leaves into runs.
WALK_IGNORE = ACCESSED_DIRTY
#: Most spans one walk's collapsed aliases may add (each a leaf run, with its repetitions):
#: Linux's tables add a few hundred; tables linked again under other permissions at several
#: levels multiply them (512 per level), and the audit stops there with an error.
ALIAS_SPANS = 1 << 19


# --- alias resolution ------------------------------------------------------------------------


class _AliasResolver:
    """The leaves collapsed aliases map, from the records of one walk (memoised per table)."""

    def __init__(self, walk: TableWalk, records: Sequence[WalkRecord]) -> None:
        self._walk = walk
        self._records = records
        self._keys = [r.vaddr for r in records]
        self._memo: dict[tuple[int, int, int], list[LeafSpan]] = {}

    def spans(self, alias: AliasRun) -> list[LeafSpan]:
        """Every leaf ``alias`` maps, each as a span repeated over the alias's links.

        :raises AliasLimitError: past :data:`ALIAS_SPANS` spans from aliases in one walk.
        """
        link = entry_span(alias.level + 1)
        rep = (alias.count, link) if alias.count > 1 else None
        if alias.same_access:
            first = self._first_walk(alias.table, alias.level, alias.first_vaddr, link)
            delta = alias.vaddr - alias.first_vaddr
        else:
            # The path to the linked table allows other permissions than where it was first
            # walked: walk one link again from the root, under its own path (once per table
            # and permissions: the same walk elsewhere is the same leaves, moved).
            first, at = self._walk.rewalk_link(alias, link)
            delta = alias.vaddr - at
        self._walk.charge(len(first), alias)
        return [s.shifted(delta, rep, alias) for s in first]

    def _first_walk(self, table: int, level: int, first_vaddr: int, link: int) -> list[LeafSpan]:
        key = (table, level, first_vaddr)
        found = self._memo.get(key)
        if found is None:
            found = []
            records = self._records
            end = first_vaddr + link
            lo = bisect.bisect_left(self._keys, first_vaddr)
            hi = bisect.bisect_left(self._keys, end, lo)
            # Consecutive links are merged into one AliasRun across table boundaries, so one
            # may begin before the table's range or run past its end: only its links inside
            # the range belong to the table.
            if lo and type(records[lo - 1]) is AliasRun:
                lo -= 1
            for rec in records[lo:hi]:
                if type(rec) is LeafRun:
                    found.append(LeafSpan(rec))
                elif type(rec) is AliasRun:
                    inside = _clip_alias(rec, first_vaddr, end)
                    if inside is not None:
                        found.extend(self.spans(inside))
            self._memo[key] = found
        return found


def _clip_alias(alias: AliasRun, lo: int, hi: int) -> AliasRun | None:
    """The links of ``alias`` that lie in ``[lo, hi)``, or ``None``."""
    if alias.vaddr >= lo and alias.end <= hi:
        return alias
    span = entry_span(alias.level + 1)
    first = max(0, -((alias.vaddr - lo) // span))  # ceil((lo - vaddr) / span)
    last = min(alias.count, (hi - alias.vaddr) // span)
    if first >= last:
        return None
    return alias._replace(
        vaddr=alias.vaddr + first * span, end=alias.vaddr + last * span, count=last - first
    )


# --- views -----------------------------------------------------------------------------------


class TableWalk:
    """The shared walk of one page table, and what is derived from it (each on first use)."""

    def __init__(
        self,
        pt: X86PageTable,
        window: AddrRange | None = None,
        records: list[WalkRecord] | None = None,
    ) -> None:
        self.pt = pt
        #: The part of the address space walked (``None``: all of it).
        self.window = window
        self._rewalks: dict[tuple[int, int, bool, bool, bool], tuple[list[LeafSpan], int]] = {}
        self._alias_spans = 0
        if records is not None:  # another walk's records for this window: not walked again
            self.__dict__["records"] = records

    @cached_property
    def records(self) -> list[WalkRecord]:
        return list(self.pt.iter_runs(self.window, aliases="collapse", ignore=WALK_IGNORE))

    @cached_property
    def leaf_runs(self) -> list[LeafRun]:
        return [r for r in self.records if type(r) is LeafRun]

    @cached_property
    def alias_runs(self) -> list[AliasRun]:
        return [r for r in self.records if type(r) is AliasRun]

    @cached_property
    def anomalies(self) -> list[Anomaly]:
        return [r for r in self.records if type(r) is Anomaly]

    @cached_property
    def resolver(self) -> _AliasResolver:
        return _AliasResolver(self, self.records)

    @cached_property
    def spans(self) -> list[LeafSpan]:
        out: list[LeafSpan] = []
        resolver = self.resolver
        for rec in self.records:
            if type(rec) is LeafRun:
                out.append(LeafSpan(rec))
            elif type(rec) is AliasRun:
                out.extend(resolver.spans(rec))
        return out

    def rewalk_link(self, alias: AliasRun, link: int) -> tuple[list[LeafSpan], int]:
        """The leaves of the first link of ``alias`` (``link`` bytes), from a walk of that range
        alone, and the address they were walked at: one walk per linked table and path
        permissions (another link of that table under the same permissions maps the same
        leaves, moved)."""
        key = (alias.table, alias.level, alias.user, alias.writable, alias.executable)
        found = self._rewalks.get(key)
        if found is None:
            window = AddrRange(alias.vaddr, alias.vaddr + link)
            sub = list(self.pt.iter_runs(window, aliases="collapse", ignore=WALK_IGNORE))
            resolver = _AliasResolver(self, sub)
            out: list[LeafSpan] = []
            for rec in sub:
                if type(rec) is LeafRun:
                    out.append(LeafSpan(rec))
                elif type(rec) is AliasRun:
                    out.extend(resolver.spans(rec))
            found = self._rewalks[key] = (out, alias.vaddr)
        return found

    def charge(self, spans: int, alias: AliasRun) -> None:
        """Count ``spans`` more spans from aliases (``alias``'s).

        :raises AliasLimitError: past :data:`ALIAS_SPANS` in this walk.
        """
        self._alias_spans += spans
        if self._alias_spans > ALIAS_SPANS:
            raise AliasLimitError(ALIAS_SPANS, alias.vaddr, alias.table)

    @cached_property
    def frame_index(self) -> FrameIndex:
        return FrameIndex(self.spans)

    @cached_property
    def tables(self) -> dict[int, int]:
        return self.pt.tables()


class AuditView:
    """One page table under a name, and its shared, collapsed walk (see the module docstring).

    :param name: ``"cr3"``, ``"kernel"`` or ``"user"``: what :attr:`Finding.root` says.
    :param walk: the walk to share (two views of one root, under two names, share one walk).
    """

    def __init__(self, name: str, pt: X86PageTable, walk: TableWalk | None = None) -> None:
        self.name = name
        self.pt = pt
        self.walk = TableWalk(pt) if walk is None else walk

    def __repr__(self) -> str:
        return f"AuditView({self.name!r}, root=0x{self.pt.root:x}, levels={self.pt.levels})"

    def renamed(self, name: str) -> AuditView:
        """The same table and walk under another name."""
        return AuditView(name, self.pt, self.walk)

    @property
    def records(self) -> list[WalkRecord]:
        """One walk of the whole address space, aliases collapsed, ACCESSED/DIRTY ignored."""
        return self.walk.records

    @property
    def leaf_runs(self) -> list[LeafRun]:
        """The runs walked directly (not those collapsed aliases map again), in VA order."""
        return self.walk.leaf_runs

    @property
    def alias_runs(self) -> list[AliasRun]:
        return self.walk.alias_runs

    @property
    def anomalies(self) -> list[Anomaly]:
        """Entries the walk did not follow (each once, where first walked)."""
        return self.walk.anomalies

    def alias_spans(self, alias: AliasRun) -> list[LeafSpan]:
        """The leaves ``alias`` maps again, with the effective permissions of its path, as
        spans repeated over its links."""
        return self.walk.resolver.spans(alias)

    @property
    def spans(self) -> list[LeafSpan]:
        """Every leaf the table maps, in VA order of the first copies: directly walked runs, and
        the leaves of collapsed aliases as repeated spans."""
        return self.walk.spans

    @property
    def frame_index(self) -> FrameIndex:
        """:attr:`spans` by physical address."""
        return self.walk.frame_index

    @property
    def tables(self) -> dict[int, int]:
        """Every page-table frame reachable from the root -> its level (the root included).

        Tables are found by following present, non-leaf entries that the MMU would follow (no
        reserved bits, no HUGE_PAGE in a PML4/PML5), in a pass over tables only; a frame linked
        at several levels keeps the first level found. Page tables (level 1) are listed from
        their parents' entries and not read; a table that cannot be read (outside RAM, not in
        the dump) is listed but not descended.
        """
        return self.walk.tables
