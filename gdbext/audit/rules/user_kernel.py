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

import dataclasses
from collections.abc import Iterator

from gdbext.audit.context import AuditContext, AuditView, LeafSpan, group_range, merge_spans
from gdbext.audit.model import Finding, Severity
from gdbext.geometry import SIZE_4K
from gdbext.layout import VSYSCALL_ADDR
from gdbext.render.common import perms


def audited_views(ctx: AuditContext) -> list[AuditView]:
    """The tables a space rule checks: the PTI pair (kernel PGD first), else the selected one."""
    pti = ctx.pti
    return [pti.kernel, pti.user] if pti is not None else [ctx.main]


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


def dedupe(findings: list[Finding], names: dict[str, str]) -> Iterator[Finding]:
    """Findings once per (range, frames, permissions, message); a repeat in another table
    becomes an evidence line of the first (``names``: view name -> description)."""
    first: dict[tuple[object, ...], int] = {}
    out: list[Finding] = []
    for f in findings:
        key = (f.vaddr, f.end, f.paddr, f.paddr_end, f.user, f.writable, f.executable, f.message)
        at = first.get(key)
        if at is None:
            first[key] = len(out)
            out.append(f)
            continue
        also = f"the same through the {names.get(f.root, f.root)} (shared tables)"
        if also not in out[at].evidence:
            out[at] = dataclasses.replace(out[at], evidence=(*out[at].evidence, also))
    return iter(out)


class UserKernelRule:
    id = "user-kernel"
    severity = Severity.HIGH
    summary = (
        "user-accessible pages in the kernel half; supervisor pages in the user half of a "
        "process's table"
    )

    def check(self, ctx: AuditContext) -> Iterator[Finding]:
        found: list[Finding] = []
        names: dict[str, str] = {}
        seen: set[int] = set()
        for view in audited_views(ctx):
            if view.pt.root in seen:
                continue
            seen.add(view.pt.root)
            names[view.name] = f"{view.name} table 0x{view.pt.root:x}"
            found.extend(self._user_in_kernel_half(ctx, view))
            if is_user_table(view, ctx):
                found.extend(self._supervisor_in_user_half(ctx, view))
        return dedupe(found, names)

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
            yield ctx.finding(
                self,
                view,
                f"the legacy vsyscall page is user-accessible ({perms(True, False, run.executable)}"
                f"; vsyscall={mode})",
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
        vaddr, end, paddr, paddr_end, pages = group_range(group)
        run = group[0].run
        evidence: list[str] = []
        if group[0].reps:
            evidence.append(
                f"mapped {group[0].copies} times, every 0x{group[0].reps[-1][1]:x} bytes"
            )
        plural = "s" if pages != 1 else ""
        return ctx.finding(
            self,
            view,
            f"{pages} page{plural} ({perms(run.user, run.writable, run.executable)}) {why}",
            vaddr=vaddr,
            end=end,
            paddr=paddr,
            paddr_end=paddr_end,
            user=run.user,
            writable=run.writable,
            executable=run.executable,
            pages=pages,
            evidence=evidence,
        )


RULES = (UserKernelRule(),)
