"""Rule ``wx``: writable and executable mappings, with the kernel's own W+X verdict.

The verdict follows Linux's ``CONFIG_DEBUG_WX`` check (``ptdump_walk_pgd_level_checkwx``,
arch/x86/mm/dump_pagetables.c): it counts the 4 KiB pages of present leaves whose *effective*
permissions are writable and not no-execute (NX counts only with EFER.NXE), over the whole
address space except the guard hole at the start of the kernel half; a table linked under
several entries is seen (and counted) under each. It prints::

    x86/mm: Checked W+X mappings: passed, no W+X pages found.
    x86/mm: Checked W+X mappings: FAILED, 12 W+X pages found.

and under PTI, after the kernel PGD's line, ``x86/mm: Checking user space page tables`` and
the user PGD's line (only with NX: without it the kernel skips the user PGD). The kernel
checks ``init_mm``'s tables: with no root option, on a target that names the kernel's root
(VMCOREINFO), the verdict counts those (a process's PGD shares their kernel half, so only the
top-level entries that differ are walked again); else the selected table. The summary's
``"wx"`` has the lines and ``"wx_roots"`` the roots counted. Findings: one per merged W+X range
of the selected table (under PTI, of both halves), the guard hole included (its findings say
that the kernel's check skips it); ``pages`` counts every copy of an aliased table.

Known difference: Linux 6.1's ptdump also counts *not-present* leaf entries by their flags
(``note_page`` never tests PRESENT); with NX such entries are NX and do not count, but without
NX (``-cpu ...,-nx``) a kernel that unmapped freed image pages with PRESENT cleared and RW kept
counts them. The audit counts present leaves (pages that can be written and executed).
"""

from __future__ import annotations

from collections.abc import Iterator

from gdbext.addr import AddrRange
from gdbext.audit.context import (
    AuditContext,
    AuditView,
    LeafSpan,
    TableWalk,
    group_range,
    merge_spans,
)
from gdbext.audit.model import Finding, Severity
from gdbext.commands import PTI_USER_PGD_BIT, RootOptions
from gdbext.errors import GdbextError
from gdbext.flags import PRESENT, PageTableFlags
from gdbext.geometry import index_shift
from gdbext.mapper import read_table
from gdbext.paging import X86PageTable

ACCESSED = int(PageTableFlags.ACCESSED)

PREFIX = "x86/mm: "
CHECKING_USER = "x86/mm: Checking user space page tables"


def verdict_line(pages: int) -> str:
    """The kernel's line for ``pages`` W+X pages.

    >>> verdict_line(0)
    'x86/mm: Checked W+X mappings: passed, no W+X pages found.'
    >>> verdict_line(3)
    'x86/mm: Checked W+X mappings: FAILED, 3 W+X pages found.'
    """
    if pages:
        return f"{PREFIX}Checked W+X mappings: FAILED, {pages} W+X pages found."
    return f"{PREFIX}Checked W+X mappings: passed, no W+X pages found."


def _is_wx(span: LeafSpan) -> bool:
    return span.run.writable and span.run.executable


def slot_pages(ctx: AuditContext, view: AuditView) -> dict[int, int]:
    """W+X 4 KiB pages of ``view`` by top-level index, as the kernel counts them: every copy of
    an aliased table counted; the guard hole's entries left out."""
    pt = view.pt
    shift = index_shift(pt.levels)
    slot = 1 << shift
    canon = pt.geometry.canonicalize
    hole = ctx.guard_hole
    counts: dict[int, int] = {}
    for span in view.spans:
        if not _is_wx(span):
            continue
        first = (span.vaddr >> shift) & 0x1FF
        last = ((span.last_end - 1) >> shift) & 0x1FF
        if first == last:
            if not hole.start <= span.vaddr < hole.end:
                counts[first] = counts.get(first, 0) + span.pages
            continue
        for index in range(first, last + 1):
            lo = canon(index << shift)
            if not hole.start <= lo < hole.end:
                pages = span.pages_in(lo, lo + slot)
                if pages:
                    counts[index] = counts.get(index, 0) + pages
    return counts


def wx_pages(ctx: AuditContext, view: AuditView) -> int:
    """W+X 4 KiB pages of ``view`` as the kernel counts them (guard hole skipped)."""
    return sum(slot_pages(ctx, view).values())


def wx_pages_at(ctx: AuditContext, root: int, base: AuditView) -> int:
    """W+X pages of the table at ``root``, in ``base``'s paging mode, reusing ``base``'s walk
    for every top-level entry the two tables share (a process's PGD shares the kernel half of
    ``init_mm``'s): only the entries that differ are walked."""
    if root == base.pt.root:
        return wx_pages(ctx, base)
    pt = base.pt
    other = X86PageTable(pt.mapper, root, pt.levels, nxe=pt.nxe, max_phys_bits=pt.max_phys_bits)
    mine = read_table(pt.mapper, root)
    theirs = read_table(pt.mapper, pt.root)
    shift = index_shift(pt.levels)
    canon = pt.geometry.canonicalize
    hole = ctx.guard_hole
    counts = slot_pages(ctx, base)
    total = 0
    for index, (entry, twin) in enumerate(zip(mine, theirs, strict=True)):
        if not entry & PRESENT:
            continue
        lo = canon(index << shift)
        if hole.start <= lo < hole.end:
            continue
        if entry & ~ACCESSED == twin & ~ACCESSED:
            total += counts.get(index, 0)
            continue
        window = AddrRange(lo, lo + (1 << shift))
        walk = TableWalk(other, window)
        total += sum(s.pages_in(lo, window.end) for s in walk.spans if _is_wx(s))
    return total


def verdict_tables(ctx: AuditContext) -> list[tuple[int, AuditView]]:
    """The tables the verdict counts, each with the audited view whose walk it can reuse.

    The kernel checks ``init_mm``'s tables (and, under PTI, their user half). With no root
    option, on a target that names the kernel's root (VMCOREINFO), those are counted; else
    the selected table (and its PTI twin).
    """
    pti = ctx.pti
    # Without NX the kernel does not check the user PGD (ptdump_walk_user_pgd_level_checkwx
    # returns early: nothing there could be NX).
    user_check = pti is not None and ctx.nxe
    selected = [ctx.main] if pti is None else [pti.kernel]
    if pti is not None and user_check:
        selected.append(pti.user)
    hint = ctx.target.hints.get("kernel_root")
    if ctx.options.root != RootOptions() or not isinstance(hint, int) or isinstance(hint, bool):
        return [(v.pt.root, v) for v in selected]
    kernel = hint & ~PTI_USER_PGD_BIT if pti is not None else hint
    roots = [kernel, kernel | PTI_USER_PGD_BIT] if user_check else [kernel]
    return list(zip(roots, selected, strict=True))


def verdict_lines(ctx: AuditContext) -> tuple[list[str], list[int]]:
    """The kernel's W+X lines for :func:`verdict_tables`, and the roots counted."""
    lines: list[str] = []
    roots: list[int] = []
    tables = verdict_tables(ctx)
    try:
        counts = [wx_pages_at(ctx, root, base) for root, base in tables]
    except GdbextError:  # the kernel's root cannot be read: count the selected tables
        tables = [(base.pt.root, base) for _, base in tables]
        counts = [wx_pages(ctx, base) for _, base in tables]
    for i, ((root, _), pages) in enumerate(zip(tables, counts, strict=True)):
        if i:
            lines.append(CHECKING_USER)
        lines.append(verdict_line(pages))
        roots.append(root)
    return lines, roots


class WxRule:
    id = "wx"
    severity = Severity.HIGH
    summary = "writable and executable mappings; the kernel's CONFIG_DEBUG_WX verdict"

    def views(self, ctx: AuditContext) -> list[AuditView]:
        """The tables checked: the PTI pair (kernel, then user), else the selected table."""
        pti = ctx.pti
        return [pti.kernel, pti.user] if pti is not None else [ctx.main]

    def check(self, ctx: AuditContext) -> Iterator[Finding]:
        views = self.views(ctx)
        lines, roots = verdict_lines(ctx)
        ctx.summary_extra["wx"] = lines
        ctx.summary_extra["wx_roots"] = [f"0x{root:x}" for root in roots]
        for view in views:
            yield from self._findings(ctx, view)

    def _findings(self, ctx: AuditContext, view: AuditView) -> Iterator[Finding]:
        hole = ctx.guard_hole
        for group in merge_spans(s for s in view.spans if _is_wx(s)):
            vaddr, end, paddr, paddr_end, pages = group_range(group)
            first = group[0]
            extra: list[str] = []
            if first.reps:
                alias = first.alias
                where = f" (a table first mapped at 0x{alias.first_vaddr:x})" if alias else ""
                extra.append(
                    f"mapped {first.copies} times, every 0x{first.reps[-1][1]:x} bytes "
                    f"from 0x{first.vaddr:x}{where}"
                )
            if vaddr < hole.end and hole.start < end:
                extra.append(
                    f"in Linux's guard hole 0x{hole.start:x}-0x{hole.end:x}, which the "
                    "kernel's W+X check skips"
                )
            who = "user" if first.run.user else "kernel"
            yield ctx.finding(
                self,
                view,
                f"{pages} {who} page{'s' if pages != 1 else ''} writable and executable",
                vaddr=vaddr,
                end=end,
                paddr=paddr,
                paddr_end=paddr_end,
                user=first.run.user,
                writable=True,
                executable=True,
                pages=pages,
                evidence=extra,
            )


RULES = (WxRule(),)
