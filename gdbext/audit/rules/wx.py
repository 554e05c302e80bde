"""Rule ``wx``: writable and executable mappings, with the kernel's own W+X verdict.

The verdict is Linux 6.1's ``CONFIG_DEBUG_WX`` check (``ptdump_walk_pgd_level_checkwx``,
arch/x86/mm/dump_pagetables.c), counted literally by :mod:`gdbext.audit.checkwx`: the 4 KiB
pages of every leaf entry whose *effective* protection is writable and not no-execute, present
or not (ptdump's ``note_page`` never tests PRESENT: a not-present PTE, or a PMD with PSE, counts
by its flags), over the whole address space except the guard hole at the start of the kernel
half; a table linked under several entries counts under each. It prints::

    x86/mm: Checked W+X mappings: passed, no W+X pages found.
    x86/mm: Checked W+X mappings: FAILED, 12 W+X pages found.

and under PTI, after the kernel PGD's line, ``x86/mm: Checking user space page tables`` and
the user PGD's line (only with NX: without it the kernel skips the user PGD; EFER unknown, NX
is inferred from the tables, see :class:`~gdbext.audit.context.NxeState`). The kernel checks
``init_mm``'s tables: with no root option, on a target that names the kernel's root
(VMCOREINFO), the verdict counts those (table tallies are shared with the selected table's
count); else the selected table. The summary's ``"wx"`` has the lines, ``"wx_roots"`` the
roots counted and ``"wx_pages"`` each count's parts (present, not present, not noted).

Findings, for the selected table (under PTI, both halves):

- ``high``: one per merged range of present W+X leaves, the guard hole included (its findings
  say that the kernel's check skips it); ``pages`` counts every copy of an aliased table;
- ``high``: one per recursive entry (a link to a table on its own path, which the shared walk
  does not follow) with a writable, executable path: the MMU maps the tables below it as data
  pages there, and the kernel's check counts the W+X ones (``pages``: that count; the physical
  range is unknown, as the pages are scattered);
- ``low``: one per merged range of *not-present* leaf entries the check counts (writable and
  executable by their flags; the MMU maps nothing there, so nothing can be written or run
  there until the entry is made present): they explain a ``FAILED`` verdict.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from gdbext.audit.checkwx import CheckWx, WxCount
from gdbext.audit.context import AuditContext
from gdbext.audit.evidence import path_access, raw_path, step_text
from gdbext.audit.model import Finding, Severity
from gdbext.audit.spans import LeafSpan, group_range, merge_spans
from gdbext.audit.views import AuditView
from gdbext.errors import GdbextError
from gdbext.frontend.commands import RootOptions
from gdbext.geometry import entry_span, level_name
from gdbext.linux.layout import PTI_USER_PGD_BIT
from gdbext.units import plural
from gdbext.x86.entries import link_address

#: Most not-present W+X ranges listed per table (the count has them all).
NOT_PRESENT_LISTED = 256

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


def checkwx(ctx: AuditContext) -> CheckWx:
    """The audit's W+X counter (one per audit: table tallies are shared by every count)."""
    main = ctx.main.pt
    return ctx.memo("checkwx", lambda: CheckWx(main))


def verdict_roots(ctx: AuditContext) -> list[int]:
    """The tables the verdict counts: the kernel's (``init_mm``; under PTI, and with NX, its
    user PGD too), with no root option on a target that names the kernel's root (VMCOREINFO);
    else the selected table (and its PTI twin)."""
    pti = ctx.pti
    # Without NX the kernel does not check the user PGD (ptdump_walk_user_pgd_level_checkwx
    # returns early: nothing there could be NX).
    user_check = pti is not None and ctx.nxe
    selected = [ctx.main] if pti is None else [pti.kernel]
    if pti is not None and user_check:
        selected.append(pti.user)
    hint = ctx.target.facts.kernel_root
    if ctx.options.root != RootOptions() or hint is None:
        return [v.pt.root for v in selected]
    kernel = hint & ~PTI_USER_PGD_BIT if pti is not None else hint
    return [kernel, kernel | PTI_USER_PGD_BIT] if user_check else [kernel]


def verdict_counts(ctx: AuditContext) -> list[WxCount]:
    """The kernel's counts for :func:`verdict_roots` (the selected tables' when the kernel's
    root cannot be read)."""
    counter = checkwx(ctx)
    roots = verdict_roots(ctx)
    try:
        return [counter.count(root) for root in roots]
    except GdbextError:
        pti = ctx.pti
        views = [ctx.main] if pti is None else [pti.kernel, pti.user][: len(roots)]
        return [counter.count(v.pt.root) for v in views]


def verdict_lines(counts: Sequence[WxCount]) -> list[str]:
    """The kernel's W+X lines for ``counts`` (:func:`verdict_counts`): one verdict per table,
    the user PGD's after ``x86/mm: Checking user space page tables``."""
    lines: list[str] = []
    for i, count in enumerate(counts):
        if i:
            lines.append(CHECKING_USER)
        lines.append(verdict_line(count.pages))
    return lines


def hole_evidence(ctx: AuditContext, vaddr: int, end: int) -> list[str]:
    """The evidence line of a range ``[vaddr, end)`` that meets Linux's guard hole, or none."""
    hole = ctx.guard_hole
    if vaddr < hole.end and hole.start < end:
        return [
            f"in Linux's guard hole 0x{hole.start:x}-0x{hole.end:x}, which the kernel's W+X "
            "check skips"
        ]
    return []


class WxRule:
    id = "wx"
    severity = Severity.HIGH
    summary = "writable and executable mappings; the kernel's CONFIG_DEBUG_WX verdict"

    def check(self, ctx: AuditContext) -> Iterator[Finding]:
        counts = verdict_counts(ctx)
        ctx.summary_extra["wx"] = verdict_lines(counts)
        ctx.summary_extra["wx_roots"] = [f"0x{c.root:x}" for c in counts]
        ctx.summary_extra["wx_pages"] = [
            {"present": c.present, "not_present": c.not_present, "not_noted": c.not_noted}
            for c in counts
        ]
        for view in ctx.views:
            yield from self._findings(ctx, view)
            yield from self._recursive(ctx, view)
            yield from self._not_present(ctx, view)

    def _recursive(self, ctx: AuditContext, view: AuditView) -> Iterator[Finding]:
        """Present W+X pages below recursive entries: the shared walk does not follow an entry
        that links a table on its own path, but the MMU does (one level lower: the tables below
        it become data pages) and so does the kernel's check, whose count they are part of."""
        pt = view.pt
        for anomaly in view.anomalies:
            if anomaly.kind != "recursive":
                continue
            steps = raw_path(pt, anomaly.vaddr, anomaly.level)
            _, rw, executable = path_access(steps, nxe=True)  # Linux's check: NX always
            nx = not executable
            linked = link_address(anomaly.entry, pt.rules.level(anomaly.level))
            pages = checkwx(ctx).tally(linked, anomaly.level - 1, rw, nx).present
            if not rw or nx or not pages:
                continue
            user = path_access(steps, pt.nxe)[0]
            end = anomaly.vaddr + entry_span(anomaly.level)
            name = level_name(anomaly.level)
            extra = [
                f"links {level_name(anomaly.level)} 0x{linked:x}, on its own path from the root: "
                "the MMU walks it again one level lower, mapping the tables below it as data "
                "pages, and the kernel's W+X check counts them (rule pt-writable-alias)"
            ]
            extra += hole_evidence(ctx, anomaly.vaddr, end)
            who = "user" if user else "kernel"
            yield Finding(
                self.id,
                self.severity,
                f"{pages} {who} page{plural(pages)} writable and executable through "
                f"a recursive {name} entry (page tables and the pages they map, as data)",
                vaddr=anomaly.vaddr,
                end=end,
                user=user,
                writable=True,
                executable=True,
                root=view.name,
                evidence=(*(step_text(s) for s in steps), *extra),
                pages=pages,
            )

    def _not_present(self, ctx: AuditContext, view: AuditView) -> Iterator[Finding]:
        ranges, more = checkwx(ctx).not_present(view.pt.root, NOT_PRESENT_LISTED)
        for i, r in enumerate(ranges):
            n = r.pages
            who = "user" if r.user else "kernel"
            extra = [
                "not present: the MMU maps nothing here; Linux 6.1's W+X check counts the "
                "entries by their flags (RW, no NX: ptdump's note_page never tests PRESENT)"
            ]
            extra += hole_evidence(ctx, r.vaddr, r.end)
            if more and i == len(ranges) - 1:
                extra.append(f"more not-present W+X entries follow (only {len(ranges)} listed)")
            yield Finding(
                self.id,
                Severity.LOW,
                f"{n} {who} page{plural(n)} not present but writable and "
                "executable by their entries' flags (the kernel's W+X check counts them)",
                vaddr=r.vaddr,
                end=r.end,
                paddr=r.paddr,
                paddr_end=r.paddr_end,
                user=r.user,
                writable=True,
                executable=True,
                root=view.name,
                evidence=(*(step_text(s) for s in r.steps), *extra),
                pages=n,
            )

    def _findings(self, ctx: AuditContext, view: AuditView) -> Iterator[Finding]:
        for group in merge_spans(s for s in view.spans if _is_wx(s)):
            vaddr, end, _, _, pages = group_range(group)
            who = "user" if group[0].run.user else "kernel"
            yield ctx.finding(
                self,
                view,
                f"{pages} {who} page{plural(pages)} writable and executable",
                group=group,
                evidence=hole_evidence(ctx, vaddr, end),
            )


RULES = (WxRule(),)
