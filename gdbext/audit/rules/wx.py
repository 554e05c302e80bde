"""Rule ``wx``: writable and executable mappings, with the kernel's own W+X verdict.

The verdict follows Linux's ``CONFIG_DEBUG_WX`` check (``ptdump_walk_pgd_level_checkwx``,
arch/x86/mm/dump_pagetables.c): it counts the 4 KiB pages of present leaves whose *effective*
permissions are writable and not no-execute (NX counts only with EFER.NXE), over the whole
address space except the guard hole at the start of the kernel half; a table linked under
several entries is seen (and counted) under each. It prints::

    x86/mm: Checked W+X mappings: passed, no W+X pages found.
    x86/mm: Checked W+X mappings: FAILED, 12 W+X pages found.

and under PTI, after the kernel PGD's line, ``x86/mm: Checking user space page tables`` and
the user PGD's line. The rule gives the same lines (in the summary's ``"wx"``) and one
finding per merged W+X range, in each table it counted.
"""

from __future__ import annotations

from collections.abc import Iterator

from gdbext.audit.context import AuditContext, AuditView, group_range, merge_spans
from gdbext.audit.model import Finding, Severity

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


def wx_pages(ctx: AuditContext, view: AuditView) -> int:
    """W+X 4 KiB pages of ``view`` as the kernel counts them (guard hole skipped)."""
    hole = ctx.guard_hole
    total = 0
    for span in view.spans:
        run = span.run
        if run.writable and run.executable:
            total += span.pages
            if span.last_end > hole.start and span.vaddr < hole.end:
                total -= span.pages_in(hole.start, hole.end)
    return total


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
        lines: list[str] = []
        for i, view in enumerate(views):
            if i:
                lines.append(CHECKING_USER)
            lines.append(verdict_line(wx_pages(ctx, view)))
        ctx.summary_extra["wx"] = lines
        for view in views:
            yield from self._findings(ctx, view)

    def _findings(self, ctx: AuditContext, view: AuditView) -> Iterator[Finding]:
        hole = ctx.guard_hole
        wx = (
            s
            for s in view.spans
            if s.run.writable
            and s.run.executable
            and not (hole.start <= s.vaddr and s.last_end <= hole.end)
        )
        for group in merge_spans(wx):
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
                pages = first.pages
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
