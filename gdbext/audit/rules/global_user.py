"""Rule ``global-user``: the GLOBAL bit on user-accessible pages.

A global TLB entry survives CR3 switches (with CR4.PGE), so a user page marked global stays
visible to the next process, and under PTI the kernel's global pages would leak into the user
PGD's TLB view; Linux never sets GLOBAL on user pages. A leaf counts when its *effective*
permissions allow user access and its own entry has GLOBAL. Checked in the selected table and,
under PTI, in both halves of the pair.
"""

from __future__ import annotations

from collections.abc import Iterator

from gdbext.audit.context import AuditContext, AuditView, group_range, merge_spans
from gdbext.audit.model import Finding, Severity
from gdbext.flags import GLOBAL


class GlobalUserRule:
    id = "global-user"
    severity = Severity.MEDIUM
    summary = "the GLOBAL bit on user-accessible pages"

    def check(self, ctx: AuditContext) -> Iterator[Finding]:
        views: list[AuditView] = [ctx.main]
        pti = ctx.pti
        if pti is not None:
            views = [pti.kernel, pti.user]
        seen: set[int] = set()
        for view in views:
            if view.pt.root in seen:
                continue
            seen.add(view.pt.root)
            found = (s for s in view.spans if s.run.user and s.run.entry & GLOBAL)
            for group in merge_spans(found):
                vaddr, end, paddr, paddr_end, pages = group_range(group)
                first = group[0]
                rw = "writable" if first.run.writable else "read-only"
                x = "executable" if first.run.executable else "no-execute"
                yield ctx.finding(
                    self,
                    view,
                    f"{pages} user page{'s' if pages != 1 else ''} ({rw}, {x}) marked GLOBAL",
                    vaddr=vaddr,
                    end=end,
                    paddr=paddr,
                    paddr_end=paddr_end,
                    user=True,
                    writable=first.run.writable,
                    executable=first.run.executable,
                    pages=pages,
                )


RULES = (GlobalUserRule(),)
