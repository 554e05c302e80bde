"""Rule ``user-kernel``: mappings on the wrong side of the user/kernel boundary.

The address space has two halves: the lower (user) half below ``2^(va_bits-1)`` and the
higher (kernel) half. The U/S bit (``USER_ACCESSIBLE``, effective: ANDed over every level)
must agree with the half:

1. **User-accessible leaves in the kernel half** (high): user mode can read (and with W write,
   with X execute) kernel memory. One exception is known and kept at low: Linux's legacy
   vsyscall page, 4 KiB at ``VSYSCALL_ADDR`` (0xffffffffff600000), user-readable and
   no-execute under ``vsyscall=emulate`` (``PAGE_KERNEL_VVAR``); executable there is the old
   ``vsyscall=native`` (medium: code at a fixed address), writable is never legitimate (high).
2. **Supervisor leaves in the user half of a user page table** (high). A *user page table*
   is one a process runs on: the user PGD of a PTI pair, or any table whose user half maps at
   least one user-accessible page. (A table with no user pages at all, such as a kernel that
   lives in the lower half and runs no process, or the kernel's own ``init_top_pgt``, is not
   one, so a lower-half kernel is not flagged wholesale.) A supervisor page below
   ``TASK_SIZE`` is one the kernel reaches through pointers user space hands it:
   ``access_ok()`` passes and SMAP does not apply (the page is not a user page), so a
   ``read()`` into that address writes kernel memory.

   *Beyond PTI's entry trampoline*: the only supervisor mappings PTI puts into a table user
   mode runs on are its entry trampoline and what the entry code needs (cpu_entry_area,
   ESPFIX, the ``cpu_tss_rw`` page, the LDT remap), and Linux places all of them in the kernel
   half. So no supervisor mapping in the user half is excused here; the user PGD's kernel half
   is checked against exactly that set by the ``pti`` rule.

Checked in the selected table and, under PTI, in both halves of the pair (the kernel PGD
first). A finding of the user PGD identical to one of the kernel PGD (the two share their
user-half tables) is reported once, with a line of evidence naming the other table.
"""

from __future__ import annotations

from collections.abc import Iterator

from gdbext.audit.context import AuditContext
from gdbext.audit.model import Finding, Severity, once_per_table
from gdbext.audit.spans import LeafSpan, merge_spans
from gdbext.audit.views import AuditView
from gdbext.flags import perm_text
from gdbext.geometry import SIZE_4K
from gdbext.linux.layout import VSYSCALL_ADDR
from gdbext.units import plural


def table_names(ctx: AuditContext) -> dict[str, str]:
    """How findings name the tables of :attr:`AuditContext.views`: ``"user table 0x201000"``."""
    return {v.name: f"{v.name} table 0x{v.pt.root:x}" for v in ctx.views}


def is_vsyscall_page(span: LeafSpan) -> bool:
    """Exactly the 4 KiB legacy vsyscall page, mapped once."""
    run = span.run
    return not span.reps and run.vaddr == VSYSCALL_ADDR and run.count * run.page_size == SIZE_4K


def is_user_table(view: AuditView, ctx: AuditContext) -> bool:
    """A table a process runs on: PTI's user PGD, or one whose user half maps a user page."""
    pti = ctx.pti
    if pti is not None and view.pt.root == pti.user.pt.root:
        return True
    return any(s.run.user and ctx.is_user_half(s.vaddr) for s in view.spans)


class UserKernelRule:
    id = "user-kernel"
    severity = Severity.HIGH
    summary = (
        "user-accessible pages in the kernel half; supervisor pages in the user half of a "
        "process's table"
    )

    def check(self, ctx: AuditContext) -> Iterator[Finding]:
        found: list[Finding] = []
        for view in ctx.views:
            found.extend(self._user_in_kernel_half(ctx, view))
            if is_user_table(view, ctx):
                found.extend(self._supervisor_in_user_half(ctx, view))
        return once_per_table(found, table_names(ctx))

    def _user_in_kernel_half(self, ctx: AuditContext, view: AuditView) -> Iterator[Finding]:
        spans = [s for s in view.spans if s.run.user and ctx.is_kernel_half(s.vaddr)]
        vsyscall = [s for s in spans if is_vsyscall_page(s)]
        others = [s for s in spans if not is_vsyscall_page(s)]
        for span in vsyscall:
            run = span.run
            if run.writable:
                continue  # reported with the others, at high
            severity = Severity.MEDIUM if run.executable else Severity.LOW
            mode = "native: executable code at a fixed address" if run.executable else "emulate"
            perms = perm_text(True, False, run.executable)
            yield ctx.finding(
                self,
                view,
                f"the legacy vsyscall page is user-accessible ({perms}; vsyscall={mode})",
                span=span,
                severity=severity,
            )
        others += [s for s in vsyscall if s.run.writable]
        others.sort(key=lambda s: s.vaddr)
        for group in merge_spans(others):
            yield self._group_finding(
                ctx, view, group, "user-accessible in the kernel half: user mode reaches them"
            )

    def _supervisor_in_user_half(self, ctx: AuditContext, view: AuditView) -> Iterator[Finding]:
        spans = [s for s in view.spans if not s.run.user and ctx.is_user_half(s.vaddr)]
        for group in merge_spans(spans):
            yield self._group_finding(
                ctx,
                view,
                group,
                "supervisor-only in the user half of a process's table: the kernel reaches "
                "them through user pointers (access_ok passes, SMAP does not apply)",
            )

    def _group_finding(
        self, ctx: AuditContext, view: AuditView, group: list[LeafSpan], why: str
    ) -> Finding:
        pages = sum(s.pages for s in group)
        run = group[0].run
        access = perm_text(run.user, run.writable, run.executable)
        return ctx.finding(self, view, f"{pages} page{plural(pages)} ({access}) {why}", group=group)


RULES = (UserKernelRule(),)
