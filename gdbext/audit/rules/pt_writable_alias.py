"""Rule ``pt-writable-alias``: page-table pages writable through a mapping other than the
direct map.

Whoever can write a page table can map anything, so an exploit that finds a writable mapping
of one has won (the classic primitive). The kernel must write its tables somewhere: Linux
through the direct map (``VA == page_offset_base + PA``), which is the only mapping allowed
here. Every table frame reachable from the root (the root included: PML5/PML4, PDPT, PD and PT
pages, each table linked by a present entry the MMU would follow) is looked up, for each table
audited (the selected one and, under PTI, both halves of the pair), among the writable leaves
of each of them: one sweep of the writable spans (sorted by physical address) against the
sorted table frames, never page by page.

Severities:

- ``critical``: a table writable from user mode;
- ``info``: a table writable through the kernel image mapping: the linear mapping (one
  ``VA - PA`` offset, the one that maps the most there) in ``__START_KERNEL_map``'s 1 GiB at
  ``0xffffffff80000000``, so a table inside the kernel image. Linux maps the image's
  ``.data``, ``.bss`` and ``.brk`` read-write there, and its static tables live in them:
  ``init_top_pgt`` (the kernel's root; under PTI its user half too), ``level4_kernel_pgt``
  (LA57), ``level3_kernel_pgt``, ``level2_kernel_pgt``, ``level2_fixmap_pgt`` and
  ``level1_fixmap_pgt`` in ``.data``; ``espfix_pud_page`` and early_ioremap's ``bm_pte`` in
  ``.bss``; the first tables of the direct map, allocated from ``.brk`` (``pgt_buf``). The
  committed dumps show exactly those (see tests/audit/rules/test_pt_writable_alias.py);
- ``high``: anything else (a table in vmalloc space, in the kernel image mapping but outside
  the image's frames, mapped by an alias...).

**Recursive entries.** An entry that links a table already on its path from the root (a
bootloader's recursive PML4 slot, say: the walk reports it as a ``recursive`` anomaly and does
not follow it) makes the MMU use that table one level lower, so the tables below it end up
mapped as data pages in the entry's range of addresses: a self-referencing PML4 entry maps every
table of the address space. Each such entry is one finding, with the tables it exposes (found by
walking the linked table as the MMU would below that entry, each table and level once) and the
walk to it: ``critical`` when the path (the entry included) allows user-mode writes, ``high``
when it allows writes, ``low`` when it is read-only (the tables can be read, not changed).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field

from gdbext.audit.context import AuditContext
from gdbext.audit.evidence import path_access, raw_path, step_text
from gdbext.audit.frames import (
    is_offset_mapping,
    mapping_lines,
    perm_key,
    places,
    where,
)
from gdbext.audit.model import Finding, Severity
from gdbext.audit.spans import LeafSpan
from gdbext.audit.views import AuditView
from gdbext.errors import PhysMemoryError
from gdbext.flags import perm_text
from gdbext.geometry import SIZE_4K, entry_span, level_name
from gdbext.linux.kernelimage import KERNEL_IMAGE_VA
from gdbext.units import plural
from gdbext.x86.entries import frame_address, is_leaf, is_present, link_address
from gdbext.x86.paging import X86PageTable
from gdbext.x86.records import Anomaly

__all__ = [
    "PtWritableAliasRule",
    "TableHit",
    "exposed_tables",
    "image_offset",
    "writable_table_hits",
]

#: Tables named in a finding's message; the evidence lists them all.
_NAMED_IN_MESSAGE = 4
#: Tables a recursive entry exposes that its evidence names.
_LISTED = 16
_ROOT_ORDER = ("kernel", "user", "cr3")

STATIC_TABLES = (
    "the kernel image mapping (__START_KERNEL_map) maps the image's .data, .bss and .brk "
    "read-write, and Linux's static tables live there: init_top_pgt, level4_kernel_pgt (LA57), "
    "level3_kernel_pgt, level2_kernel_pgt, level2/level1_fixmap_pgt (.data), espfix_pud_page, "
    "bm_pte (.bss), the first direct-map tables (.brk)"
)


@dataclass
class TableHit:
    """Table frames ``tables`` (``(frame, level, roots)``: contiguous frames, in order) that
    ``spans`` of ``view`` map writable, with equal permissions (several spans when aliases or
    other mappings map them again)."""

    view: AuditView
    spans: list[LeafSpan]
    tables: list[tuple[int, int, tuple[str, ...]]] = field(default_factory=list)


def _all_tables(views: list[AuditView]) -> list[tuple[int, int, tuple[str, ...]]]:
    """Every table frame of ``views`` with its level and the views it belongs to, sorted."""
    found: dict[int, tuple[int, list[str]]] = {}
    for view in views:
        for frame, level in view.tables.items():
            entry = found.setdefault(frame, (level, []))
            if view.name not in entry[1]:
                entry[1].append(view.name)
    return [(frame, level, tuple(names)) for frame, (level, names) in sorted(found.items())]


def writable_table_hits(views: list[AuditView], direct_map_base: int | None) -> Iterator[TableHit]:
    """For each view, the writable mappings (but the direct map at ``direct_map_base``) of
    table frames of any of ``views``: one hit per run of contiguous table frames and
    permissions, with every span that maps it so."""
    tables = _all_tables(views)
    frames = [t[0] for t in tables]
    for view in views:
        hits: dict[tuple[object, ...], TableHit] = {}
        for span in view.frame_index.spans:
            if not span.run.writable or is_offset_mapping(span, direct_map_base):
                continue
            i = bisect_left(frames, span.paddr)
            stop = bisect_left(frames, span.paddr_end, i)
            runs: list[list[tuple[int, int, tuple[str, ...]]]] = []
            for table in tables[i:stop]:
                if not runs or runs[-1][-1][0] + SIZE_4K != table[0]:
                    runs.append([])
                runs[-1].append(table)
            for run in runs:
                key = (run[0][0], run[-1][0], perm_key(span))
                hit = hits.get(key)
                if hit is None:
                    hits[key] = TableHit(view, [span], run)
                else:
                    hit.spans.append(span)
        yield from hits.values()


def image_offset(view: AuditView) -> int | None:
    """``VA - PA`` of the kernel image mapping in ``view``: the offset at which the leaves in
    ``__START_KERNEL_map``'s 1 GiB map the most bytes (Linux maps its image linearly there,
    ``__START_KERNEL_map - phys_base`` plus KASLR's offset); ``None`` if nothing is mapped."""
    totals: dict[int, int] = {}
    for run in view.leaf_runs:
        if KERNEL_IMAGE_VA.start <= run.vaddr < KERNEL_IMAGE_VA.end:
            offset = run.vaddr - run.paddr
            totals[offset] = totals.get(offset, 0) + run.count * run.page_size
    return max(totals, key=lambda o: (totals[o], -o)) if totals else None


def _is_image_mapping(span: LeafSpan, offset: int | None) -> bool:
    """True if ``span`` is part of the linear kernel image mapping at ``offset``."""
    return (
        is_offset_mapping(span, offset)
        and KERNEL_IMAGE_VA.start <= span.vaddr
        and span.end <= KERNEL_IMAGE_VA.end
    )


def exposed_tables(pt: X86PageTable, table: int, level: int, tables: dict[int, int]) -> list[int]:
    """The page-table frames of ``tables`` that the MMU maps as data when it walks ``table``
    as a level-``level`` table (below a recursive entry): every present entry followed, leaves
    (level 1, or PSE at levels 2 and 3) collected; each (table, level) walked once."""
    frames = sorted(tables)
    memo: dict[tuple[int, int], set[int]] = {}

    def hits(lo: int, hi: int) -> set[int]:
        return set(frames[bisect_left(frames, lo) : bisect_left(frames, hi)])

    def walk(t: int, lv: int) -> set[int]:
        key = (t, lv)
        found = memo.get(key)
        if found is not None:
            return found
        found = memo[key] = set()
        try:
            entries = pt.read_table(t)
        except PhysMemoryError:
            return found
        rules = pt.rules.level(lv)
        for e in entries:
            if not is_present(e):
                continue
            if is_leaf(e, rules):
                start = frame_address(e, rules)
                found |= hits(start, start + rules.span)
            else:
                found |= walk(link_address(e, rules), lv - 1)
        return found

    return sorted(walk(table, level)) if level >= 1 else []


class PtWritableAliasRule:
    id = "pt-writable-alias"
    severity = Severity.HIGH
    summary = "page-table pages mapped writable anywhere but the direct map; recursive entries"

    def check(self, ctx: AuditContext) -> Iterator[Finding]:
        base = ctx.direct_map_base
        offset = image_offset(ctx.kernel_view)
        views = ctx.views
        for hit in writable_table_hits(views, base):
            yield self._finding(ctx, hit, offset)
        yield from self._recursive(views)

    def _recursive(self, views: list[AuditView]) -> Iterator[Finding]:
        """One finding per recursive entry (each entry once, naming every view that has it)."""
        seen: dict[tuple[int, int, int], tuple[list[str], AuditView, Anomaly]] = {}
        for view in views:
            for anomaly in view.anomalies:
                if anomaly.kind != "recursive":
                    continue
                key = (anomaly.table, anomaly.index, anomaly.entry)
                if key in seen:
                    seen[key][0].append(view.name)
                else:
                    seen[key] = ([view.name], view, anomaly)
        for names, view, anomaly in seen.values():
            yield self._recursive_finding(view, anomaly, names)

    def _recursive_finding(self, view: AuditView, anomaly: Anomaly, names: list[str]) -> Finding:
        pt = view.pt
        level, entry = anomaly.level, anomaly.entry
        linked = link_address(entry, pt.rules.level(level))
        steps = raw_path(pt, anomaly.vaddr, level)
        user, writable, executable = path_access(steps, pt.nxe)
        tables = view.tables
        exposed = exposed_tables(pt, linked, level - 1, tables)
        end = anomaly.vaddr + entry_span(level)
        linked_level = tables.get(linked)
        what = f"{level_name(linked_level)} 0x{linked:x}" if linked_level else f"0x{linked:x}"
        if linked == anomaly.table:
            what += ", the table the entry is in"
        n = len(exposed)
        access = perm_text(user, writable, executable)
        if user and writable:
            severity = Severity.CRITICAL
        elif writable:
            severity = Severity.HIGH
        else:
            severity = Severity.LOW
        listed = [f"{level_name(tables.get(f, 0) or 1)} 0x{f:x}" for f in exposed[:_LISTED]]
        more = f", ... {n - _LISTED} more" if n > _LISTED else ""
        evidence = [
            *(step_text(s) for s in steps),
            f"links {what}, on its own path from the root: the MMU walks it again one level "
            "lower, mapping the tables below it as data pages",
            f"page tables mapped as data ({access}): {', '.join(listed)}{more}",
        ]
        return Finding(
            self.id,
            severity,
            f"recursive {level_name(level)} entry: {n} page-table page{plural(n)} "
            f"mapped as data ({access}) at 0x{anomaly.vaddr:x}-0x{end:x}",
            vaddr=anomaly.vaddr,
            end=end,
            paddr=linked,
            paddr_end=linked + SIZE_4K,
            user=user,
            writable=writable,
            executable=executable,
            root="+".join(sorted(names, key=_ROOT_ORDER.index)),
            evidence=tuple(evidence),
            pages=n,
        )

    def _finding(self, ctx: AuditContext, hit: TableHit, image: int | None) -> Finding:
        spans, run = hit.spans, hit.spans[0].run
        first, last = hit.tables[0][0], hit.tables[-1][0]
        in_image = all(_is_image_mapping(s, image) for s in spans)
        n = len(hit.tables)
        names = [f"{level_name(level)} 0x{frame:x}" for frame, level, _ in hit.tables]
        shown = ", ".join(names[:_NAMED_IN_MESSAGE]) + (", ..." if n > _NAMED_IN_MESSAGE else "")
        tables = f"{n} page-table page{plural(n)} ({shown})"
        at = where(spans, first, last + SIZE_4K)
        va = places(spans, first, last + SIZE_4K)[0]
        evidence = mapping_lines(spans, first, last + SIZE_4K, "writable at")
        evidence += [
            f"{level_name(level)} 0x{frame:x} of the {' and '.join(roots)} table"
            + ("s" if len(roots) > 1 else "")
            for frame, level, roots in hit.tables
        ]
        access = perm_text(run.user, run.writable, run.executable)
        if run.user:
            severity = Severity.CRITICAL
            message = f"{tables} writable from user mode at {at}"
            cause = "page-table pages writable from user mode"
        elif in_image:
            severity = Severity.INFO
            message = f"{tables} of the kernel image writable through its mapping at {at}"
            cause = "page-table pages of the kernel image writable through its mapping"
            evidence.append(STATIC_TABLES)
        else:
            severity = Severity.HIGH
            message = f"{tables} writable at {at} ({access}), outside the direct map"
            cause = f"page-table pages writable ({access}) outside the direct map"
        return ctx.finding(
            self,
            hit.view,
            message,
            vaddr=va,
            end=va + last + SIZE_4K - first,
            paddr=first,
            paddr_end=last + SIZE_4K,
            user=run.user,
            writable=True,
            executable=run.executable,
            pages=n,
            severity=severity,
            evidence=evidence,
            cause=cause,
        )


RULES = (PtWritableAliasRule(),)
