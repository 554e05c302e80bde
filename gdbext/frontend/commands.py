"""The command layer: each command is arguments in, a result out.

Front ends (the ``gdbext`` command line, GDB, LLDB) parse options, call these functions on an
opened :class:`~gdbext.plugin.target.Target`, and hand the result to a renderer. Nothing here
prints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from gdbext.addr import AddrRange
from gdbext.cpu import CR3_ADDR_MASK, CpuState
from gdbext.defaults import (
    DEFAULT_MAX_LEAVES,
    DEFAULT_MAX_LINES,
    LABEL_MODES,
    MERGE_MODES,
)
from gdbext.errors import (
    GdbextError,
    InputError,
    NotFoundError,
    TranslationError,
    UsageError,
)
from gdbext.linux.detect import detect_layout, labels_wanted
from gdbext.linux.layout import PTI_USER_PGD_BIT, Layout
from gdbext.mapper import is_captured
from gdbext.permfilter import PermFilter
from gdbext.plugin.facts import KernelFacts
from gdbext.plugin.target import Target
from gdbext.units import shown
from gdbext.x86.merge import KEY_ALL_FLAGS, MergedRange, merge_runs
from gdbext.x86.paging import X86PageTable
from gdbext.x86.records import AliasRun, Anomaly, LeafRun, Mapping, Translation

if TYPE_CHECKING:
    from gdbext.frontend.translation import TranslateResult
    from gdbext.linux.symbols import SymbolTable


@dataclass(frozen=True)
class RootOptions:
    """Which page table to use.

    The root is CPU ``cpu``'s CR3 (default: the CPU the target has selected, its hint
    ``selected_cpu``, e.g. GDB's selected thread; else CPU 0), or ``cr3``, or with ``kernel``
    the kernel's own top table (the dump's hint ``kernel_root``, from VMCOREINFO); ``cr3`` and
    ``kernel`` exclude each other. ``user_pgd`` then takes the PTI user half of whichever root
    that is (root | 0x1000). The paging mode (levels, NXE, MAXPHYADDR) is CPU ``cpu``'s, with
    levels from ``kernel_levels`` under ``kernel``; ``levels`` overrides both.
    """

    cpu: int | None = None
    cr3: int | None = None
    levels: int | None = None
    kernel: bool = False
    user_pgd: bool = False


def cpu_index(target: Target, options: RootOptions) -> int:
    """The CPU ``options`` name: ``options.cpu``, else the target's ``selected_cpu`` fact (the
    debugger's selected thread), else 0."""
    if options.cpu is not None:
        return options.cpu
    selected = target.facts.selected_cpu
    return 0 if selected is None else selected


def kernel_root(target: Target) -> tuple[int, int | None]:
    """The kernel's root table and paging levels from the target's facts (VMCOREINFO).

    :raises UsageError: naming what is missing when the target has no such fact.
    """
    facts = target.facts
    root = facts.kernel_root
    if root is None:
        info = facts.vmcoreinfo
        if info is None:
            raise UsageError(
                f"--kernel needs the dump's VMCOREINFO, and {target.description} has none "
                "(give the root with --cr3 ADDR)"
            )
        needed = ("SYMBOL(init_top_pgt)", "NUMBER(phys_base)")
        missing = [k for k in needed if k not in info.entries]
        what = " and ".join(missing) if missing else "a usable SYMBOL(init_top_pgt)"
        raise UsageError(
            f"--kernel: the VMCOREINFO of {target.description} lacks {what} "
            "(give the root with --cr3 ADDR)"
        )
    levels = facts.kernel_levels
    return root, levels if levels in (4, 5) else None


def open_page_table(target: Target, options: RootOptions = RootOptions()) -> X86PageTable:
    """The page table selected by ``options`` on ``target`` (read-only)."""
    if options.levels not in (None, 4, 5):
        raise UsageError(f"--levels must be 4 or 5, not {options.levels}")
    if options.kernel and options.cr3 is not None:
        raise UsageError("--kernel and --cr3 both choose the root; give one of them")
    explicit_root = options.kernel or options.cr3 is not None
    # A dump may carry no CPU state at all; an explicit root then needs none.
    index = cpu_index(target, options)
    cpu = CpuState() if explicit_root and not target.cpus and index == 0 else None
    if cpu is None:
        cpu = target.cpu(index)
    root = None
    levels = options.levels
    if options.cr3 is not None:
        if not 0 <= options.cr3 < 1 << 64 or options.cr3 & ~CR3_ADDR_MASK & ~0xFFF:
            raise UsageError(f"--cr3 0x{options.cr3:x} has bits beyond a physical address")
        root = CpuState(cr3=options.cr3).root
    elif options.kernel:
        root, kernel_levels = kernel_root(target)
        if root & ~CR3_ADDR_MASK:
            raise InputError(f"the kernel root 0x{root:x} is not a page-aligned physical address")
        if levels is None:
            levels = kernel_levels
    if root is None and cpu.root is None:
        raise InputError(
            f"CR3 is unknown (CPU {index}); give the page-table root with --cr3 ADDR "
            "(or --kernel, with a VMCOREINFO)"
        )
    if options.user_pgd:
        base = cpu.root if root is None else root
        assert base is not None
        root = base | PTI_USER_PGD_BIT
    if root is None:
        root = cpu.root
    if levels is None:
        levels = cpu.levels
    key = ("x86-page-table", root, levels, cpu.nxe, cpu.max_phys_bits)

    cache = target.stop_cache

    def make() -> X86PageTable:
        return X86PageTable.from_cpu(
            target.mapper,
            cpu,
            root=root,
            levels=levels,
            flush_hook=target.flush_hook,
            cache=True,
            summaries=None if cache is None else cache.by_content,
        )

    # The same table at the same stop is the same object, so that later commands reuse what
    # earlier ones read and summarised (read-only: nothing here changes the memory).
    pt = make() if cache is None else cache.get(key, make)
    pt.mapper = target.mapper  # a front end may wrap the mapper per command (progress)
    pt.flush_hook = target.flush_hook
    return pt


def target_layout(target: Target, pt: X86PageTable) -> Layout:
    """Linux's layout of ``target`` as :func:`~gdbext.linux.detect.detect_layout` finds it
    from ``pt`` and the target's facts, kept for the stop in :attr:`Target.stop_cache` when
    the target has one."""
    facts = target.facts
    cache = target.stop_cache
    if cache is None:
        return detect_layout(pt, facts)
    vmcoreinfo = facts.vmcoreinfo
    key = (
        "linux-layout",
        pt.root,
        pt.levels,
        pt.nxe,
        pt.max_phys_bits,
        facts.page_offset_base,
        facts.vmalloc_base,
        facts.vmemmap_base,
        facts.os,
    )
    made: list[tuple[object, Layout]] = cache.get(key, list)
    for seen, layout in made:
        if seen == vmcoreinfo:
            return layout
    layout = detect_layout(pt, facts)
    made.append((vmcoreinfo, layout))
    return layout


def root_warnings(pt: X86PageTable, options: RootOptions) -> list[str]:
    """What a person should know about the table ``options`` selected, as one-line warnings
    (data: front ends show them on their warning path). With ``user_pgd``: that ``root |
    0x1000`` is not the user half of a PTI pair, when the evidence of
    :func:`gdbext.audit.pti.examine_pti` says so (the table there is walked all the same)."""
    if not options.user_pgd:
        return []
    from gdbext.audit.pti import examine_pti  # imported here: pti imports this module

    verdict = examine_pti(pt)
    if verdict.pair is not None:
        return []
    return [
        f"--user-pgd: 0x{pt.root:x} is not the user half of a PTI pair ({verdict.reason}); "
        "this is the table at root | 0x1000 all the same"
    ]


# --- info ------------------------------------------------------------------------------------


class InfoResult(NamedTuple):
    backend: str
    description: str
    read_path: str
    cpus: Sequence[CpuState]
    ram: Sequence[AddrRange] | None
    details: dict[str, str]
    #: Linux's layout (its bases and where each came from) when the target looks like Linux
    #: (as ``walk --labels auto`` decides) and its tables can be read; else ``None``.
    layout: Layout | None = None


def info(target: Target) -> InfoResult:
    """What the target is, what its CPUs' paging state says and, for Linux, its layout."""
    return InfoResult(
        target.backend,
        target.description,
        target.read_path,
        list(target.cpus),
        None if target.ram is None else list(target.ram),
        dict(target.details),
        _info_layout(target),
    )


def _info_layout(target: Target) -> Layout | None:
    """The layout ``walk`` labels with, or ``None`` (not Linux, or no table to read)."""
    if not labels_wanted("auto", target.facts):
        return None
    try:
        return target_layout(target, open_page_table(target))
    except GdbextError:
        # The layout is extra: absurd dump fields (a VMCOREINFO number used in arithmetic)
        # must not take info down with them.
        return None


# --- walk ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WalkOptions:
    root: RootOptions = RootOptions()
    range: AddrRange | None = None
    #: Merge contiguous leaves into ranges (``--no-merge`` turns it off).
    merge: bool = True
    #: Stop with :class:`~gdbext.errors.WalkLimitError` past this many leaves (None: no limit).
    max_leaves: int | None = DEFAULT_MAX_LEAVES
    #: Only leaves whose effective permissions pass (``--filter``); the walk prunes.
    perm: PermFilter | None = None
    #: Only the merged mapping that contains this address (``--has``).
    has: int | None = None
    #: Region labels in text output: one of :data:`~gdbext.defaults.LABEL_MODES`.
    labels: str = "auto"
    #: With ``merge``: one of :data:`~gdbext.defaults.MERGE_MODES` (``va``: whatever the frames).
    merge_by: str = "pa"
    #: Stop an output that expands shared tables (``qemu-tlb``, ``ptdump``, JSON,
    #: ``--no-merge``) with :class:`~gdbext.errors.OutputLimitError` past this many lines;
    #: ``None``: the format's default (:data:`~gdbext.defaults.DEFAULT_MAX_LINES`,
    #: :data:`~gdbext.defaults.DEFAULT_MAX_LINES_PTDUMP`), 0: no limit.
    max_lines: int | None = None

    def line_limit(self, default: int = DEFAULT_MAX_LINES) -> int | None:
        """The bound on lines for a format whose default is ``default``; None: no bound."""
        if self.max_lines is None:
            return default
        return self.max_lines or None


class WalkResult:
    """A walk to be rendered: streaming, so nothing is read until a renderer iterates. (A plain
    class: every walk imports this module, and making a dataclass costs start-up time.)"""

    def __init__(
        self,
        page_table: X86PageTable,
        options: WalkOptions,
        stats: dict[str, int] | None = None,
        facts: KernelFacts | None = None,
        has_leaf: Translation | None = None,
        warnings: list[str] | None = None,
        known_layout: Layout | None = None,
        find_layout: Callable[[], Layout] | None = None,
        symbols: SymbolTable | None = None,
    ) -> None:
        self.page_table = page_table
        self.options = options
        #: Filled while streaming: leaves and anomalies seen so far.
        self.stats = {"leaves": 0, "anomalies": 0} if stats is None else stats
        #: The target's facts (see :attr:`gdbext.plugin.target.Target.facts`): the layout's
        #: source.
        self.facts = KernelFacts() if facts is None else facts
        #: With ``options.has``: the translation of that address (checked by :func:`walk`).
        self.has_leaf = has_leaf
        #: One-line warnings about the selected table (see :func:`root_warnings`).
        self.warnings = [] if warnings is None else warnings
        #: The target's Linux layout, when the caller knows it already (else :attr:`layout`
        #: detects it).
        self.known_layout = known_layout
        #: Finds the layout when it is first needed (default: :func:`detect_layout` on
        #: :attr:`page_table` and :attr:`facts`).
        self.find_layout = find_layout
        #: The kernel's symbols, placed (``--system-map``, ``--vmlinux``): text output labels
        #: the kernel image's ranges with their sections.
        self.symbols = symbols

    @property
    def layout(self) -> Layout:
        """The target's Linux layout: ptdump's sections and text output's labels. Unless
        given, :func:`~gdbext.linux.detect.detect_layout` finds it from the walked tables and
        the target's facts on first use, so only a format that shows it reads the tables."""
        if self.known_layout is None:
            find = self.find_layout
            self.known_layout = (
                find() if find is not None else detect_layout(self.page_table, self.facts)
            )
        return self.known_layout

    @property
    def labels(self) -> Layout | None:
        """The layout text output labels its lines with, or ``None``: ``--labels`` and the
        target decide (:func:`~gdbext.linux.detect.labels_wanted`)."""
        if not labels_wanted(self.options.labels, self.facts):
            return None
        if self.symbols is not None:
            from gdbext.linux.symbols import with_sections

            return with_sections(self.layout, self.symbols)
        return self.layout

    @property
    def levels(self) -> int:
        return self.page_table.levels

    @property
    def root(self) -> int:
        return self.page_table.root

    def runs(
        self, aliases: str = "expand", ignore: int = 0
    ) -> Iterator[LeafRun | AliasRun | Anomaly]:
        """The walk's records (see :meth:`X86PageTable.iter_runs`), counted in :attr:`stats`.

        With ``options.has`` only the leaf runs of the merged mapping that contains that
        address (merged as :func:`~gdbext.x86.merge.merge_runs` does with the flags not in
        ``ignore``), aliases expanded, without anomalies.
        """
        stats = self.stats
        options = self.options
        records: Iterable[LeafRun | AliasRun | Anomaly]
        if options.has is not None:
            records = self._has_runs(ignore)
        else:
            records = self.page_table.iter_runs(
                options.range,
                aliases=aliases,
                ignore=ignore,
                max_leaves=options.max_leaves,
                perm=options.perm,
            )
        for rec in records:
            if type(rec) is LeafRun:
                stats["leaves"] += rec.count
            elif type(rec) is AliasRun:
                stats["leaves"] += rec.leaves * rec.count
            elif type(rec) is Anomaly:
                stats["anomalies"] += 1
                key = "anomalies:" + rec.kind
                stats[key] = stats.get(key, 0) + 1
            yield rec

    def mappings(self) -> Iterator[Mapping]:
        for rec in self.runs():
            if type(rec) is LeafRun:
                yield from rec.mappings()

    def has_range(self, ignore: int = 0, by_va: bool = False) -> AddrRange:
        """The virtual range of the merged mapping that contains ``options.has`` (``by_va``:
        merged whatever the frames, as :func:`~gdbext.x86.merge.merge_runs` does).

        Walks a window around the address that grows (doubling on the side it touched) until
        the merged mapping no longer touches the window's edge, or the edge is the end of the
        address space's half; each step reads only the window.
        """
        vaddr = self.options.has
        leaf = self.has_leaf
        assert vaddr is not None and leaf is not None, "has_range needs WalkOptions.has"
        pt = self.page_table
        geo = pt.geometry
        if vaddr < geo.lower_half_end:
            floor, ceiling = 0, geo.lower_half_end
        else:
            floor, ceiling = geo.higher_half_start, 1 << 64
        key = KEY_ALL_FLAGS & ~ignore
        span = leaf.page_size * 512  # the leaf's table, to begin with
        lo = max(floor, vaddr & ~(span - 1))
        hi = min(ceiling, lo + span)
        while True:
            found = None
            window = pt.iter_runs(
                AddrRange(lo, hi),
                ignore=ignore,
                max_leaves=self.options.max_leaves,
                perm=self.options.perm,
            )
            for merged in merge_runs((r for r in window if type(r) is LeafRun), key, by_va):
                if type(merged) is MergedRange and merged.vaddr <= vaddr < merged.end:
                    found = AddrRange(merged.vaddr, merged.end)
                    break
            if found is None:  # the leaf did not pass the filter (checked by walk())
                return AddrRange(vaddr, vaddr)
            grow_lo = found.start == lo and lo > floor
            grow_hi = found.end == hi and hi < ceiling
            if not (grow_lo or grow_hi):
                return found
            size = hi - lo
            if grow_lo:
                lo = max(floor, lo - size)
            if grow_hi:
                hi = min(ceiling, hi + size)

    def _has_runs(self, ignore: int) -> Iterator[LeafRun]:
        span = self.has_range(ignore)
        if not span:
            return
        for rec in self.page_table.iter_runs(
            span, ignore=ignore, max_leaves=self.options.max_leaves, perm=self.options.perm
        ):
            if type(rec) is LeafRun:
                yield rec


def walk(target: Target, options: WalkOptions = WalkOptions()) -> WalkResult:
    """A walk of the selected page table; nothing is read until the result is iterated.

    With ``options.has``, the address is translated first: :class:`~gdbext.errors.NotMappedError`
    (exit status 1, naming the level) if it is not mapped, :class:`NotFoundError` if its
    mapping does not pass ``options.perm``.
    """
    if options.labels not in LABEL_MODES:
        modes = ", ".join(LABEL_MODES)
        raise UsageError(f"--labels must be one of {modes}, not {shown(options.labels)}")
    if options.has is not None and options.range is not None:
        raise UsageError("--has and --range exclude each other")
    if options.merge_by not in MERGE_MODES:
        raise UsageError(f"--merge must be pa or va, not {shown(options.merge_by)}")
    if options.max_lines is not None and options.max_lines < 0:
        raise UsageError(f"--max-lines must be 0 or more, not {options.max_lines}")
    pt = open_page_table(target, options.root)
    result = WalkResult(
        pt,
        options,
        facts=target.facts,
        warnings=root_warnings(pt, options.root),
        find_layout=lambda: target_layout(target, pt),
    )
    if options.has is not None:
        leaf = pt.translate(options.has)
        perm = options.perm
        if perm is not None and not perm.matches(leaf.user, leaf.writable, leaf.executable):
            raise NotFoundError(
                f"0x{options.has:x} is mapped, but its permissions do not pass --filter {perm.spec}"
            )
        result.has_leaf = leaf
    return result


# --- translate -------------------------------------------------------------------------------


def translate(
    target: Target, vaddrs: Sequence[int], root: RootOptions = RootOptions()
) -> TranslateResult:
    """Translate each address; an address that cannot be translated gives its error."""
    from gdbext.frontend.translation import TranslateOutcome, TranslateResult

    pt = open_page_table(target, root)
    outcomes = []
    for vaddr in vaddrs:
        try:
            t = pt.translate(vaddr)
            captured = is_captured(target.mapper, t.paddr)
            outcomes.append(TranslateOutcome(vaddr, t, captured=captured))
        except TranslationError as exc:
            outcomes.append(TranslateOutcome(vaddr, None, exc))
        except GdbextError as exc:  # non-canonical and the like: still per address
            err = TranslationError(str(exc), vaddr, pt.levels, None)
            err.exit_status = exc.exit_status
            outcomes.append(TranslateOutcome(vaddr, None, err))
    return TranslateResult(pt.levels, pt.root, outcomes, root_warnings(pt, root))
