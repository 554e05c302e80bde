"""Rule ``pti``: does page-table isolation isolate? Checks of a Linux PTI pair.

Runs only when :func:`gdbext.audit.pti.detect_pti` finds a PTI pair (the kernel PGD and the
user PGD at ``| 0x1000``); otherwise it is skipped with the detector's reason. Three checks:

1. **User pages executable through the kernel PGD.** ``__pti_set_user_pgtbl`` sets NX on the
   kernel's copy of every user PGD entry, so that the kernel never executes user memory even
   without SMEP. A user-accessible, effectively executable leaf seen through the kernel PGD
   is high; medium when CR4.SMEP is on (SMEP still stops the kernel executing it).
2. **Kernel memory in the user PGD.** The user PGD's kernel half may map only what the entry
   code needs (``arch/x86/mm/pti.c``); each is recognised as follows, everything else
   supervisor-only in that half is a finding (user-accessible pages there are the
   ``user-kernel`` rule's):

   - ``cpu_entry_area`` (0xfffffe0000000000, 0.5 TB; ``pti_clone_user_shared``): the IDT, GDT
     and TSS read-only, the entry and exception stacks writable;
   - ESPFIX (0xffffff0000000000, 0.5 TB; ``pti_setup_espfix64``): read-only stacks;
   - the LDT remap (``LDT_BASE_ADDR``, one top-level entry; ``map_ldt_struct``);
   - the ``cpu_tss_rw`` pages (``pti_clone_user_shared``): one writable 4 KiB page per CPU
     in the per-CPU area, recognised as a 4 KiB no-execute page whose frame the user PGD's
     cpu_entry_area maps too (the TSS is mapped there read-only);
   - the entry text (``pti_clone_entry_text``): read-only executable pages in the kernel
     image's mapping (``__START_KERNEL_map``), at most 4 MiB in all (the entry text is
     PMD-aligned and PMD-cloned, ``ALIGN_ENTRY_TEXT_BEGIN/END``: one or two 2 MiB pages), each
     mapping the same frames as the kernel PGD.

   Kernel code beyond that (medium; Linux itself clones ``_text..__end_rodata`` under
   ``pti=auto`` on CPUs without PCID, ``pti_clone_kernel_text``) and read-only kernel data
   (medium) are readable from user mode by Meltdown; writable kernel data (high) is what
   PTI exists to hide.
3. **Global kernel pages the user PGD does not map** (medium). A global TLB entry survives
   the CR3 switch to the user PGD, so the translation stays usable while user code runs;
   under PTI Linux clears GLOBAL on every kernel mapping except those both PGDs share.

On the committed ``kaslr-pti`` dump (``pti=on``, a CPU without PCID or SMEP) nothing is
found: the user PGD's kernel half is cpu_entry_area (16 runs), ESPFIX (32 pages, one table
linked 16,384 times), the entry text (one 2 MiB page at ``_stext`` + 12 MiB) and CPU 0's
``cpu_tss_rw`` page (direct map 0xffff8d1487a06000, frame 0x7a06000, which cpu_entry_area maps
at 0xfffffe0000003000); the only global kernel pages are those three regions'.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator

from gdbext.audit.context import AuditContext
from gdbext.audit.model import Finding, RuleSkipped, Severity
from gdbext.audit.pti import examine_pti
from gdbext.audit.spans import LeafSpan, merge_spans
from gdbext.audit.views import AuditView
from gdbext.flags import GLOBAL, perm_text
from gdbext.geometry import SIZE_4K
from gdbext.linux.kernelimage import KERNEL_IMAGE_VA
from gdbext.linux.layout import (
    CPU_ENTRY_AREA_BASE,
    CPU_ENTRY_AREA_END,
    ESPFIX_BASE_ADDR,
    ESPFIX_END,
    linux_layout,
)
from gdbext.units import plural

#: Most bytes of executable kernel-image mapping taken for the entry text (two 2 MiB PMDs).
ENTRY_TEXT_MAX = 4 << 20
#: The mm.rst region name of the LDT remap.
_LDT_REGION = "LDT remap for PTI"

_SpanKey = tuple[int, int, int, int, tuple[tuple[int, int], ...]]


def pti_regions(levels: int) -> list[tuple[int, int, str]]:
    """``(start, end, name)`` of the fixed regions PTI maps into the user PGD.

    >>> [(hex(a), name) for a, _, name in pti_regions(4)]
    [('0xffff880000000000', 'the LDT remap'), ('0xfffffe0000000000', 'cpu_entry_area'), \
('0xffffff0000000000', 'ESPFIX')]
    """
    ldt = next(r for r in linux_layout(levels).regions if r.name == _LDT_REGION)
    return [
        (ldt.start, ldt.end, "the LDT remap"),
        (CPU_ENTRY_AREA_BASE, CPU_ENTRY_AREA_END, "cpu_entry_area"),
        (ESPFIX_BASE_ADDR, ESPFIX_END, "ESPFIX"),
    ]


def _key(span: LeafSpan) -> _SpanKey:
    r = span.run
    return (r.vaddr, r.paddr, r.count, r.page_size, span.reps)


class Cover:
    """What some spans map: direct runs as VA intervals with their ``vaddr - paddr`` offset
    (sorted, for interval queries), and repeated spans (a shared table linked many times) by
    identity."""

    def __init__(self, spans: Iterable[LeafSpan]) -> None:
        plain: list[tuple[int, int, int]] = []
        self.repeated: set[_SpanKey] = set()
        for s in spans:
            if s.reps:
                self.repeated.add(_key(s))
            else:
                plain.append((s.vaddr, s.end, (s.vaddr - s.paddr) % (1 << 64)))
        plain.sort()
        self.plain = plain
        self.starts = [p[0] for p in plain]

    def uncovered(self, vaddr: int, end: int, paddr: int) -> list[tuple[int, int]]:
        """The parts of ``[vaddr, end)`` (mapped to ``paddr`` onward) that the spans do not
        map to the same frames.

        >>> from gdbext.x86.records import LeafRun
        >>> c = Cover([LeafSpan(LeafRun(0x2000, 0xA000, 1, 0x1000, 0xA003, False, True, False))])
        >>> [(hex(a), hex(b)) for a, b in c.uncovered(0x1000, 0x5000, 0x9000)]
        [('0x1000', '0x2000'), ('0x3000', '0x5000')]
        >>> c.uncovered(0x2000, 0x3000, 0xB000)  # the same range, other frames
        [(8192, 12288)]
        """
        offset = (vaddr - paddr) % (1 << 64)
        plain = self.plain
        i = max(0, bisect.bisect_right(self.starts, vaddr) - 1)
        out: list[tuple[int, int]] = []
        pos = vaddr
        while i < len(plain) and plain[i][0] < end and pos < end:
            lo, hi, off = plain[i]
            i += 1
            if hi <= pos or off != offset:
                continue
            if lo > pos:
                out.append((pos, lo))
            pos = max(pos, hi)
        if pos < end:
            out.append((pos, end))
        return out

    def clones(self, span: LeafSpan) -> bool:
        """True if the spans map all of ``span`` to the same frames."""
        if span.reps:
            return _key(span) in self.repeated
        return not self.uncovered(span.vaddr, span.end, span.paddr)


class PtiRule:
    id = "pti"
    severity = Severity.HIGH
    summary = (
        "under PTI: user pages executable through the kernel PGD, kernel memory in the user "
        "PGD, global kernel pages"
    )

    def check(self, ctx: AuditContext) -> Iterator[Finding]:
        pair = ctx.pti
        if pair is None:
            raise RuleSkipped(f"no PTI page-table pair: {examine_pti(ctx.main.pt).reason}")
        yield from self._user_exec_in_kernel_pgd(ctx, pair.kernel)
        yield from self._kernel_in_user_pgd(ctx, pair.kernel, pair.user)
        yield from self._global_not_in_user_pgd(ctx, pair.kernel, pair.user)

    # 1.

    def _user_exec_in_kernel_pgd(self, ctx: AuditContext, kernel: AuditView) -> Iterator[Finding]:
        smep = ctx.cpu.smep
        severity = Severity.MEDIUM if smep else Severity.HIGH
        guard = (
            "CR4.SMEP is on: it still faults" if smep else "CR4.SMEP is off: nothing else stops it"
        )
        spans = [
            s for s in kernel.spans if s.run.user and s.run.executable and ctx.is_user_half(s.vaddr)
        ]
        for group in merge_spans(spans):
            pages = sum(s.pages for s in group)
            access = perm_text(True, group[0].run.writable, True)
            yield ctx.finding(
                self,
                kernel,
                f"{pages} user page{plural(pages)} ({access}) executable through the "
                "kernel PGD: PTI marks its copy of user entries NX",
                group=group,
                severity=severity,
                evidence=(f"kernel-mode execution of user code: {guard}",),
            )

    # 2.

    def _kernel_in_user_pgd(
        self, ctx: AuditContext, kernel: AuditView, user: AuditView
    ) -> Iterator[Finding]:
        regions = pti_regions(ctx.levels)
        spans = [s for s in user.spans if not s.run.user and ctx.is_kernel_half(s.vaddr)]
        cea_frames = sorted(
            (s.paddr, s.paddr_end)
            for s in spans
            if CPU_ENTRY_AREA_BASE <= s.vaddr < CPU_ENTRY_AREA_END
        )
        cover = Cover(s for s in kernel.spans if ctx.is_kernel_half(s.vaddr))
        entry_text: list[LeafSpan] = []
        flagged: list[LeafSpan] = []
        for s in spans:
            if any(lo <= s.vaddr and s.last_end <= hi for lo, hi, _ in regions):
                continue
            if self._is_tss_page(s, cea_frames):
                continue
            run = s.run
            image = KERNEL_IMAGE_VA.start <= s.vaddr and s.last_end <= KERNEL_IMAGE_VA.end
            if image and run.executable and not run.writable and not s.reps:
                entry_text.append(s)
            else:
                flagged.append(s)
        text_bytes = sum(s.size for s in entry_text)
        if text_bytes > ENTRY_TEXT_MAX or not all(cover.clones(s) for s in entry_text):
            flagged += entry_text
        flagged.sort(key=lambda s: s.vaddr)
        for group in merge_spans(flagged):
            yield self._kernel_finding(ctx, user, group, cover, text_bytes)

    @staticmethod
    def _is_tss_page(span: LeafSpan, cea_frames: list[tuple[int, int]]) -> bool:
        """A ``cpu_tss_rw`` page: 4 KiB, no-execute, its frames mapped in cpu_entry_area."""
        run = span.run
        if span.reps or run.executable or run.page_size != 4096:
            return False
        pos = span.paddr
        for lo, hi in cea_frames:
            if lo <= pos < hi:
                pos = hi
                if pos >= span.paddr_end:
                    return True
        return False

    def _kernel_finding(
        self,
        ctx: AuditContext,
        user: AuditView,
        group: list[LeafSpan],
        cover: Cover,
        text_bytes: int,
    ) -> Finding:
        pages = sum(s.pages for s in group)
        run = group[0].run
        if run.writable:
            what, severity = "writable kernel data", Severity.HIGH
            why = "what PTI exists to hide"
        elif run.executable:
            what, severity = "kernel code", Severity.MEDIUM
            why = "readable from user mode by Meltdown (PTI clones only the entry text)"
        else:
            what, severity = "read-only kernel data", Severity.MEDIUM
            why = "readable from user mode by Meltdown"
        evidence: list[str] = []
        if all(cover.clones(s) for s in group):
            evidence.append("the kernel PGD maps the same frames there (a clone)")
        else:
            evidence.append("the kernel PGD does not map all of it to the same frames")
        if run.executable and not run.writable and text_bytes > ENTRY_TEXT_MAX:
            evidence.append(
                f"0x{text_bytes:x} bytes of kernel-image code in the user PGD; the entry text "
                f"is at most 0x{ENTRY_TEXT_MAX:x} (pti=auto without PCID clones _text.."
                "__end_rodata)"
            )
        perms = perm_text(False, run.writable, run.executable)
        return ctx.finding(
            self,
            user,
            f"{pages} page{plural(pages)} of {what} ({perms}) in the PTI user PGD: {why}",
            group=group,
            severity=severity,
            evidence=evidence,
        )

    # 3.

    def _global_not_in_user_pgd(
        self, ctx: AuditContext, kernel: AuditView, user: AuditView
    ) -> Iterator[Finding]:
        cover = Cover(s for s in user.spans if ctx.is_kernel_half(s.vaddr))
        pieces: list[LeafSpan] = []
        for s in kernel.spans:
            run = s.run
            if run.user or not run.entry & GLOBAL or not ctx.is_kernel_half(s.vaddr):
                continue
            if s.reps:
                if not cover.clones(s):
                    pieces.append(s)
                continue
            parts = cover.uncovered(s.vaddr, s.end, s.paddr)
            if parts == [(s.vaddr, s.end)]:
                pieces.append(s)
                continue
            for lo, hi in parts:  # in 4 KiB units: the user PGD may cover part of a page
                part = run._replace(
                    vaddr=lo,
                    paddr=run.paddr + (lo - run.vaddr),
                    count=(hi - lo) // SIZE_4K,
                    page_size=SIZE_4K,
                )
                pieces.append(LeafSpan(part))
        for group in merge_spans(pieces):
            pages = sum(s.pages for s in group)
            run = group[0].run
            yield ctx.finding(
                self,
                kernel,
                f"{pages} global kernel page{plural(pages)} "
                f"({perm_text(False, run.writable, run.executable)})"
                " the PTI user PGD does not map: their TLB entries outlive the switch to it",
                group=group,
                severity=Severity.MEDIUM,
            )


RULES = (PtiRule(),)
