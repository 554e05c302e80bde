"""What audit rules look at: one :class:`AuditContext` per audit, shared by every rule.

Everything is computed on first use and kept, so a rule that is not selected costs nothing and
two rules that need the same walk share it. :class:`AuditContext` holds the target, the CPUs,
the selected view (``main``, an :class:`~gdbext.audit.views.AuditView`: one page table and its
shared walk), the PTI pair when there is one (``pti``), the kernel's own tables
(``kernel_view``), physical RAM (``ram``), the direct map, the kernel image, the heap (with heap
options only), and helpers (``evidence``, ``finding``, ``is_kernel_half``...).

Rules must work on runs and intervals: expanding an alias page by page (or a run leaf by leaf)
is what the audit's speed budget (at most half a walk on top of the walk) does not allow.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TypeVar, cast

from gdbext.addr import AddrRange, merge_ranges
from gdbext.audit.evidence import step_text
from gdbext.audit.model import Finding, RuleIdentity, RuleSkipped, Severity
from gdbext.audit.options import AuditOptions
from gdbext.audit.spans import FrameIndex, LeafSpan, group_range, merge_spans, repeats_text
from gdbext.audit.views import AuditView, TableWalk
from gdbext.cpu import EFER_NXE, CpuState
from gdbext.errors import GdbextError, PhysMemoryError
from gdbext.flags import NO_EXECUTE, PRESENT, PageTableFlags
from gdbext.frontend.commands import RootOptions, cpu_index, open_page_table
from gdbext.frontend.heap import HeapOptions, HeapResult, heap
from gdbext.geometry import SIZE_4K, level_name
from gdbext.linux.kernelimage import KERNEL_IMAGE_VA
from gdbext.linux.ptdump_rules import guard_hole
from gdbext.plugin.target import Target
from gdbext.x86.paging import X86PageTable
from gdbext.x86.records import AliasRun, LeafRun

# LeafSpan, FrameIndex and the group helpers live in gdbext.audit.spans; rules (plugins too)
# get them here with the rest of what they look at.
__all__ = [
    "AuditContext",
    "FrameIndex",
    "LeafSpan",
    "NxeState",
    "PtiPair",
    "group_range",
    "merge_spans",
    "repeats_text",
]

ACCESSED = int(PageTableFlags.ACCESSED)
_T = TypeVar("_T")


@dataclass(frozen=True)
class PtiPair:
    """The two halves of a PTI page-table pair."""

    kernel: AuditView
    user: AuditView


@dataclass(frozen=True)
class NxeState:
    """Whether EFER.NXE is on, and how the audit knows: from EFER, or (EFER unknown, as in
    QEMU's ELF dumps) inferred from the tables. A present entry with NX means the CPU had NXE
    on (without it bit 63 is reserved, and the MMU would fault on the entry); no such entry at
    all means it was off as far as the tables tell (Linux never sets NX without NX support).
    A table that maps nothing tells nothing: ``known`` is false, and the audit takes NXE as on.

    >>> str(NxeState(True, True, "NX bits in use"))
    'inferred on: NX bits in use'
    >>> str(NxeState(False, False, "EFER 0x501"))
    'off: EFER 0x501'
    >>> str(NxeState(True, True, "the table maps nothing", known=False))
    'unknown (taken as on): the table maps nothing'
    """

    on: bool
    inferred: bool
    #: One line: why.
    reason: str
    #: The entry that shows NX in use, or how many tables were searched.
    evidence: tuple[str, ...] = ()
    #: False when neither EFER nor the tables tell.
    known: bool = True

    def __str__(self) -> str:
        state = "on" if self.on else "off"
        if not self.known:
            return f"unknown (taken as {state}): {self.reason}"
        return f"{'inferred ' if self.inferred else ''}{state}: {self.reason}"


# --- the context -----------------------------------------------------------------------------


class AuditContext:
    """What every rule of one audit shares (see the module docstring)."""

    def __init__(self, target: Target, options: AuditOptions) -> None:
        self.target = target
        self.options = options
        self._views: dict[tuple[int, int], AuditView] = {}
        self._memo: dict[str, object] = {}
        #: Extra summary entries rules add (``"wx"``: the W+X verdict lines).
        self.summary_extra: dict[str, object] = {}

    # CPUs and the selected table

    @cached_property
    def cpus(self) -> list[CpuState]:
        return list(self.target.cpus)

    @cached_property
    def cpu_index(self) -> int:
        return cpu_index(self.target, self.options.root)

    @cached_property
    def cpu(self) -> CpuState:
        """The CPU whose paging mode the audit uses (``--cpu``, else the selected one)."""
        if not self.target.cpus:
            return CpuState()
        return self.target.cpu(self.cpu_index)

    @cached_property
    def main(self) -> AuditView:
        """The table selected as ``walk`` selects it (``--cpu``, ``--cr3``, ``--kernel``,
        ``--user-pgd``, ``--levels``)."""
        root = self.options.root
        pt = open_page_table(self.target, root)
        name = "user" if root.user_pgd else "kernel" if root.kernel else "cr3"
        return self._remember(name, pt)

    @property
    def nxe(self) -> bool:
        """EFER.NXE of :attr:`cpu`; inferred from the tables when EFER is unknown
        (:attr:`nxe_state`)."""
        return self.nxe_state.on

    @cached_property
    def nxe_state(self) -> NxeState:
        """EFER.NXE and how the audit knows it (see :class:`NxeState`).

        With EFER unknown the engine walks as if NXE were on (every x86-64 kernel sets it);
        when the tables use no NX bit at all the walk is the same with NXE off, so only what
        the rules say about it changes.
        """
        efer = self.cpu.efer
        if efer is not None:
            return NxeState(bool(efer & EFER_NXE), False, f"EFER 0x{efer:x}")
        view = self.main
        pt = view.pt
        for run in view.leaf_runs:
            if not run.executable:
                steps = pt.translate(run.vaddr).steps
                step = next(s for s in steps if s.entry & NO_EXECUTE)
                where = f"{level_name(step.level)}[{step.index}] @0x{step.table:x}"
                return NxeState(
                    True,
                    True,
                    "NX bits in use",
                    (f"{where} = 0x{step.entry:x} has NX (on the path to 0x{run.vaddr:x})",),
                )
        for anomaly in view.anomalies:
            if anomaly.entry & PRESENT and anomaly.entry & NO_EXECUTE:
                where = f"{level_name(anomaly.level)}[{anomaly.index}] @0x{anomaly.table:x}"
                return NxeState(
                    True, True, "NX bits in use", (f"{where} = 0x{anomaly.entry:x} has NX",)
                )
        searched = 0
        for table, level in view.tables.items():
            if level == 1:
                continue  # their present entries are leaves: the walk's runs
            try:
                entries = pt.read_table(table)
            except PhysMemoryError:
                continue
            searched += 1
            for index, e in enumerate(entries):
                if e & PRESENT and e & NO_EXECUTE:
                    where = f"{level_name(level)}[{index}] @0x{table:x}"
                    return NxeState(True, True, "NX bits in use", (f"{where} = 0x{e:x} has NX",))
        leaves = len(view.leaf_runs)
        if not leaves and not view.anomalies:
            # No mapping at all (an empty table, or --cr3 naming a page that is not one): no
            # entry could have used NX, so its absence says nothing about EFER.NXE.
            return NxeState(
                True,
                True,
                "EFER unknown and the table maps nothing",
                (f"EFER unknown; the table at 0x{pt.root:x} maps nothing to infer it from",),
                known=False,
            )
        return NxeState(
            False,
            True,
            "no entry uses NX",
            (
                f"EFER unknown; no present entry reachable from 0x{pt.root:x} has NX "
                f"({leaves} leaf run{'s' if leaves != 1 else ''}, {searched} "
                f"table{'s' if searched != 1 else ''} above the page tables)",
            ),
        )

    @property
    def levels(self) -> int:
        return self.main.pt.levels

    def view_at(self, root: int, name: str) -> AuditView:
        """The view of the table at ``root``, in the paging mode of :attr:`main` (one view, and
        so one walk, per root)."""
        main = self.main
        key = (root, main.pt.levels)
        view = self._views.get(key)
        if view is not None:
            return view if view.name == name else view.renamed(name)
        if view is None:
            pt = main.pt.with_root(root, cache=True)
            view = self._remember(name, pt)
        return view

    def _remember(self, name: str, pt: X86PageTable) -> AuditView:
        key = (pt.root, pt.levels)
        view = self._views.get(key)
        if view is None:
            view = self._views[key] = AuditView(name, pt)
        return view if view.name == name else view.renamed(name)

    @cached_property
    def pti(self) -> PtiPair | None:
        """The PTI pair of :attr:`main` (``gdbext.audit.pti.detect_pti``), or ``None``."""
        try:
            from gdbext.audit.pti import detect_pti
        except ImportError:
            return None
        roots = detect_pti(self.main.pt)
        if roots is None:
            return None
        kernel_root, user_root = roots
        kernel = self._pti_view(kernel_root, "kernel")
        user = self._pti_view(user_root, "user")
        return PtiPair(kernel, user)

    @property
    def views(self) -> list[AuditView]:
        """The tables the rules check: under PTI both halves of the pair (the kernel PGD
        first, named ``kernel`` and ``user``, the selected table among them), else the
        selected one (:attr:`main`)."""
        pti = self.pti
        return [pti.kernel, pti.user] if pti is not None else [self.main]

    def _pti_view(self, root: int, name: str) -> AuditView:
        main = self.main
        if main.pt.root == root:
            # The selected root is this half: findings say which half, the walk is shared.
            return main if main.name == name else main.renamed(name)
        return self.view_at(root, name)

    @cached_property
    def kernel_view(self) -> AuditView:
        """The kernel's own tables: the kernel half of the PTI pair; else, with no root option,
        the table the target names as the kernel's (VMCOREINFO's ``init_top_pgt``), of which
        only the kernel half is walked (and not even that when the selected table shares it);
        else :attr:`main`. Where the direct map and the kernel image are looked up: use it for
        kernel-half questions only."""
        pti = self.pti
        if pti is not None:
            return pti.kernel
        root = self.options.root
        if root == RootOptions() and self.target.facts.kernel_root is not None:
            pt = open_page_table(self.target, RootOptions(kernel=True))
            if (pt.root, pt.levels) == (self.main.pt.root, self.main.pt.levels):
                return self.main
            return AuditView("kernel", pt, self._kernel_half_walk(pt))
        return self.main

    def _kernel_half_walk(self, pt: X86PageTable) -> TableWalk:
        """A walk of ``pt``'s kernel half. A process's page table shares the kernel's top-level
        entries of the kernel half: when :attr:`main`'s are the same, its walk's records of
        the kernel half are taken instead of walking again."""
        half = AddrRange(pt.geometry.higher_half_start, 1 << 64)
        main = self.main
        if main.pt.levels != pt.levels:
            return TableWalk(pt, half)
        try:
            mine = pt.read_table(pt.root)
            theirs = main.pt.read_table(main.pt.root)
        except PhysMemoryError:
            return TableWalk(pt, half)
        if any((a ^ b) & ~ACCESSED for a, b in zip(mine[256:], theirs[256:], strict=True)):
            return TableWalk(pt, half)
        records = main.records
        start = bisect.bisect_left([r.vaddr for r in records], half.start)
        kernel = records[start:]
        if any(type(r) is AliasRun and r.first_vaddr < half.start for r in kernel):
            return TableWalk(pt, half)  # links to a table first walked in the user half
        return TableWalk(pt, half, kernel)

    def memo(self, key: str, factory: Callable[[], _T]) -> _T:
        """A value computed once per audit (by ``factory``) and shared by the rules that ask
        for it by ``key`` (say ``"checkwx"``: the W+X count's table tallies)."""
        if key not in self._memo:
            self._memo[key] = factory()
        return cast(_T, self._memo[key])

    # Address space helpers

    def is_kernel_half(self, vaddr: int) -> bool:
        """True for the higher (kernel) half of the address space."""
        return vaddr >= self.main.pt.geometry.higher_half_start

    def is_user_half(self, vaddr: int) -> bool:
        return vaddr < self.main.pt.geometry.lower_half_end

    @property
    def user_half(self) -> AddrRange:
        return AddrRange(0, self.main.pt.geometry.lower_half_end)

    @property
    def kernel_half(self) -> AddrRange:
        return AddrRange(self.main.pt.geometry.higher_half_start, 1 << 64)

    @property
    def guard_hole(self) -> AddrRange:
        """Linux's guard hole at the start of the kernel half (16 top-level entries: 8 TB with
        4 levels, 4 PB with 5), which ptdump and its W+X check skip."""
        return guard_hole(self.main.pt.levels)

    # Physical memory

    @cached_property
    def ram(self) -> list[AddrRange] | None:
        """Physical RAM ranges, sorted and merged, when the target knows them
        (:attr:`gdbext.plugin.target.Target.ram`: dumps from their segments or bitmap, the simulator
        from its scenario, live GDB from QEMU's ``info mtree``); ``None`` if it does not."""
        if self.target.ram is None:
            return None
        return merge_ranges(self.target.ram)

    def in_ram(self, start: int, end: int | None = None) -> bool | None:
        """True if ``[start, end)`` (one byte by default) lies wholly in RAM; ``None`` if the
        target does not know its RAM."""
        ram = self.ram
        if ram is None:
            return None
        end = start + 1 if end is None else end
        i = bisect.bisect_right([r.start for r in ram], start) - 1
        return i >= 0 and ram[i].start <= start and end <= ram[i].end

    @property
    def direct_map_base(self) -> int | None:
        """The start of :attr:`direct_map` (``None`` without one)."""
        direct_map = self.direct_map
        return None if direct_map is None else direct_map.start

    @cached_property
    def direct_map(self) -> AddrRange | None:
        """The direct map's virtual range: its base (the target's ``direct_map_base`` hint, else
        found as :func:`gdbext.linux.physoffset.find_direct_map_base` finds it, in
        :attr:`kernel_view`'s walk) up to the end of RAM (or, RAM unknown, of the last byte
        mapped at that offset); ``None`` if the kernel half maps nothing."""
        view = self.kernel_view
        lo = view.pt.geometry.higher_half_start
        base = self.target.facts.direct_map_base
        totals: dict[int, int] = {}
        at_zero: set[int] = set()
        last: dict[int, int] = {}
        for run in view.leaf_runs:
            if run.vaddr < lo:
                continue
            offset = (run.vaddr - run.paddr) % (1 << 64)
            if offset < lo:
                continue
            size = run.count * run.page_size
            totals[offset] = totals.get(offset, 0) + size
            last[offset] = max(last.get(offset, 0), run.paddr + size)
            if run.paddr == 0:
                at_zero.add(offset)
        if base is None:
            if not totals:
                return None
            base = min(totals, key=lambda b: (b not in at_zero, -totals[b], b))
        ram = self.ram
        extent = ram[-1].end if ram else last.get(base, 0)
        return AddrRange(base, min(1 << 64, base + extent))

    @cached_property
    def kernel_image(self) -> list[AddrRange]:
        """Physical ranges the kernel image's mapping (``__START_KERNEL_map``, 1 GiB) covers, in
        :attr:`kernel_view`, sorted and merged; empty if nothing is mapped there."""
        image = KERNEL_IMAGE_VA
        ranges: list[AddrRange] = []
        for span in self.kernel_view.spans:
            if span.last_end <= image.start or span.vaddr >= image.end:
                continue
            for start in span.starts_in(image.start, image.end):
                lo, hi = max(start, image.start), min(start + span.size, image.end)
                if lo < hi:
                    p = span.paddr + (lo - start)
                    ranges.append(AddrRange(p, p + (hi - lo)))
        return merge_ranges(ranges)

    def heap(self) -> HeapResult:
        """What the ``heap`` command finds with the audit's heap options (their root options
        are the audit's); :class:`RuleSkipped` when the audit was given none."""
        options = self.options.heap
        if options is None:
            raise RuleSkipped("no heap options (--memmap, and --at or --phys-offset if needed)")
        return self._heap(options)

    def _heap(self, options: HeapOptions) -> HeapResult:
        cached = self.__dict__.get("_heap_result")
        if cached is None:
            cached = heap(self.target, dataclasses.replace(options, root=self.options.root))
            self.__dict__["_heap_result"] = cached
        assert isinstance(cached, HeapResult)
        return cached

    # Findings

    def evidence(self, view: AuditView, vaddr: int) -> tuple[str, ...]:
        """The walk steps to ``vaddr`` in ``view``, one per level:
        ``"PML4[511] @0x1a0c000 = 0x1a0f063"`` (table index, table address, entry)."""
        try:
            steps = view.pt.translate(vaddr).steps
        except GdbextError as exc:
            return (f"0x{vaddr:x}: {exc}",)
        return tuple(step_text((s.level, s.table, s.index, s.entry)) for s in steps)

    def finding(
        self,
        rule: RuleIdentity,
        view: AuditView | None,
        message: str,
        *,
        span: LeafSpan | LeafRun | None = None,
        group: Sequence[LeafSpan] = (),
        vaddr: int | None = None,
        end: int | None = None,
        paddr: int | None = None,
        paddr_end: int | None = None,
        user: bool | None = None,
        writable: bool | None = None,
        executable: bool | None = None,
        pages: int | None = None,
        severity: Severity | None = None,
        evidence: Sequence[str] = (),
        cause: str = "",
    ) -> Finding:
        """A finding of ``rule`` in ``view``, with the walk evidence of its first page.

        With ``span`` (a :class:`LeafSpan` or :class:`LeafRun`), the addresses, permissions
        and pages default to the span's (its first copy's range; every copy's pages). With
        ``group`` (spans from :func:`merge_spans`), to the group's merged range
        (:func:`group_range`) and its first span's permissions, and when a collapsed alias
        repeats it an evidence line says how often (:func:`repeats_text`). Explicit keywords
        win. ``evidence`` lines follow the walk steps.
        """
        if group:
            g_vaddr, g_end, g_paddr, g_paddr_end, g_pages = group_range(group)
            run = group[0].run
            vaddr = g_vaddr if vaddr is None else vaddr
            end = g_end if end is None else end
            paddr = g_paddr if paddr is None else paddr
            paddr_end = g_paddr_end if paddr_end is None else paddr_end
            user = run.user if user is None else user
            writable = run.writable if writable is None else writable
            executable = run.executable if executable is None else executable
            pages = g_pages if pages is None else pages
            if group[0].reps:
                evidence = (repeats_text(group[0]), *evidence)
        if span is not None:
            run = span.run if isinstance(span, LeafSpan) else span
            size = run.count * run.page_size
            vaddr = run.vaddr if vaddr is None else vaddr
            end = run.vaddr + size if end is None else end
            paddr = run.paddr if paddr is None else paddr
            paddr_end = run.paddr + size if paddr_end is None and paddr == run.paddr else paddr_end
            user = run.user if user is None else user
            writable = run.writable if writable is None else writable
            executable = run.executable if executable is None else executable
            if pages is None:
                pages = span.pages if isinstance(span, LeafSpan) else size // SIZE_4K
        if pages is None:
            pages = 0 if vaddr is None or end is None else (end - vaddr) // SIZE_4K
        steps = self.evidence(view, vaddr) if view is not None and vaddr is not None else ()
        return Finding(
            rule.id,
            rule.severity if severity is None else severity,
            message,
            vaddr=vaddr,
            end=end,
            paddr=paddr,
            paddr_end=paddr_end,
            user=user,
            writable=writable,
            executable=executable,
            root=view.name if view is not None else "cr3",
            evidence=(*steps, *evidence),
            pages=pages,
            cause=cause,
        )
