"""Rule ``global-user``: the GLOBAL bit on user-accessible pages.

A global TLB entry survives CR3 switches (with CR4.PGE), so a user page marked global stays
visible to the next process, and under PTI the kernel's global pages would leak into the user
PGD's TLB view; Linux never sets GLOBAL on user pages. A leaf counts when its *effective*
permissions allow user access and its own entry has GLOBAL. Checked in the selected table and,
under PTI, in both halves of the pair.
"""

from __future__ import annotations

from collections.abc import Iterator

from gdbext.audit.context import AuditContext
from gdbext.audit.model import Finding, Severity
from gdbext.audit.spans import merge_spans
from gdbext.flags import GLOBAL
from gdbext.units import plural


class GlobalUserRule:
    id = "global-user"
    severity = Severity.MEDIUM
    summary = "the GLOBAL bit on user-accessible pages"

    def check(self, ctx: AuditContext) -> Iterator[Finding]:
        for view in ctx.views:
            found = (s for s in view.spans if s.run.user and s.run.entry & GLOBAL)
            for group in merge_spans(found):
                pages = sum(s.pages for s in group)
                run = group[0].run
                rw = "writable" if run.writable else "read-only"
                x = "executable" if run.executable else "no-execute"
                message = f"{pages} user page{plural(pages)} ({rw}, {x}) marked GLOBAL"
                yield ctx.finding(self, view, message, group=group)


RULES = (GlobalUserRule(),)
