"""The command layer: each command is arguments in, a result out.

Front ends (the ``gdbext`` command line, GDB, LLDB) parse options, call these functions on an
opened :class:`~gdbext.target.Target`, and hand the result to a renderer. Nothing here prints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from gdbext.addr import AddrRange
from gdbext.bootinfo import BootInfo, parse_bootinfo, require_physical_memory_offset
from gdbext.cpu import CR3_ADDR_MASK, CpuState
from gdbext.errors import GdbextError, InputError, TranslationError, UsageError
from gdbext.geometry import geometry
from gdbext.heap import MemoryRegion, locate_kernel_heap
from gdbext.memmap import load_memmap_json
from gdbext.paging import AliasRun, Anomaly, LeafRun, Mapping, Translation, X86PageTable
from gdbext.target import Target


@dataclass(frozen=True)
class RootOptions:
    """Which page table to use: a CPU's CR3 (default CPU 0), or an explicit root."""

    cpu: int = 0
    cr3: int | None = None
    levels: int | None = None


def open_page_table(target: Target, options: RootOptions = RootOptions()) -> X86PageTable:
    """The page table selected by ``options`` on ``target`` (read-only)."""
    cpu = target.cpu(options.cpu)
    if options.levels not in (None, 4, 5):
        raise UsageError(f"--levels must be 4 or 5, not {options.levels}")
    root = None
    if options.cr3 is not None:
        if not 0 <= options.cr3 < 1 << 64 or options.cr3 & ~CR3_ADDR_MASK & ~0xFFF:
            raise UsageError(f"--cr3 0x{options.cr3:x} has bits beyond a physical address")
        root = CpuState(cr3=options.cr3).root
    try:
        return X86PageTable.from_cpu(
            target.mapper,
            cpu,
            root=root,
            levels=options.levels,
            flush_hook=target.flush_hook,
            cache=True,
            max_phys_bits=cpu.max_phys_bits or 52,
        )
    except ValueError as exc:
        raise InputError(str(exc)) from None


# --- info ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InfoResult:
    backend: str
    description: str
    read_path: str
    cpus: Sequence[CpuState]
    ram: Sequence[AddrRange] | None
    details: dict[str, str]


def info(target: Target) -> InfoResult:
    """What the target is and what its CPUs' paging state says."""
    return InfoResult(
        target.backend,
        target.description,
        target.read_path,
        list(target.cpus),
        None if target.ram is None else list(target.ram),
        dict(target.details),
    )


# --- walk ------------------------------------------------------------------------------------


#: Default bound on the leaves one walk produces: far above any real kernel's (Linux with 512 GiB
#: of RAM in 4 KiB pages has 128 M), far below what an alias bomb multiplies into.
DEFAULT_MAX_LEAVES = 1 << 28


@dataclass(frozen=True)
class WalkOptions:
    root: RootOptions = RootOptions()
    range: AddrRange | None = None
    #: Merge contiguous leaves into ranges (``--no-merge`` turns it off).
    merge: bool = True
    #: Stop with :class:`~gdbext.errors.WalkLimitError` past this many leaves (None: no limit).
    max_leaves: int | None = DEFAULT_MAX_LEAVES


@dataclass
class WalkResult:
    """A walk to be rendered: streaming, so nothing is read until a renderer iterates."""

    page_table: X86PageTable
    options: WalkOptions
    #: Filled while streaming: leaves and anomalies seen so far.
    stats: dict[str, int] = field(default_factory=lambda: {"leaves": 0, "anomalies": 0})

    @property
    def levels(self) -> int:
        return self.page_table.levels

    @property
    def root(self) -> int:
        return self.page_table.root

    def runs(
        self, aliases: str = "expand", ignore: int = 0
    ) -> Iterator[LeafRun | AliasRun | Anomaly]:
        """The walk's records (see :meth:`X86PageTable.iter_runs`), counted in :attr:`stats`."""
        stats = self.stats
        for rec in self.page_table.iter_runs(
            self.options.range, aliases=aliases, ignore=ignore, max_leaves=self.options.max_leaves
        ):
            if type(rec) is LeafRun:
                stats["leaves"] += rec.count
            elif type(rec) is AliasRun:
                stats["leaves"] += rec.leaves * rec.count
            else:
                stats["anomalies"] += 1
            yield rec

    def mappings(self) -> Iterator[Mapping]:
        for rec in self.runs():
            if type(rec) is LeafRun:
                yield from rec.mappings()


def walk(target: Target, options: WalkOptions = WalkOptions()) -> WalkResult:
    """A walk of the selected page table; nothing is read until the result is iterated."""
    return WalkResult(open_page_table(target, options.root), options)


# --- translate -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TranslateOutcome:
    vaddr: int
    translation: Translation | None
    error: TranslationError | None = None


@dataclass(frozen=True)
class TranslateResult:
    levels: int
    root: int
    outcomes: Sequence[TranslateOutcome]

    @property
    def all_mapped(self) -> bool:
        return all(o.translation is not None for o in self.outcomes)

    @property
    def exit_status(self) -> int:
        """0 if every address translated, else the worst status of the errors (1 not mapped,
        2 a malformed table or a bad address)."""
        return max((o.error.exit_status for o in self.outcomes if o.error is not None), default=0)


def translate(
    target: Target, vaddrs: Sequence[int], root: RootOptions = RootOptions()
) -> TranslateResult:
    """Translate each address; an address that cannot be translated gives its error."""
    pt = open_page_table(target, root)
    outcomes = []
    for vaddr in vaddrs:
        try:
            outcomes.append(TranslateOutcome(vaddr, pt.translate(vaddr)))
        except TranslationError as exc:
            outcomes.append(TranslateOutcome(vaddr, None, exc))
        except GdbextError as exc:  # non-canonical and the like: still per address
            err = TranslationError(str(exc), vaddr, pt.levels, None)
            err.exit_status = exc.exit_status
            outcomes.append(TranslateOutcome(vaddr, None, err))
    return TranslateResult(pt.levels, pt.root, outcomes)


# --- heap ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeapOptions:
    #: ``"bootinfo"`` or ``"json"``; ``None`` uses what the target suggests.
    memmap: str | None = None
    at: int | None = None
    bootinfo_version: str | None = None
    bootinfo_features: tuple[str, ...] | None = None
    json_path: str | None = None
    phys_offset: int | None = None
    root: RootOptions = RootOptions()


@dataclass(frozen=True)
class HeapResult:
    range: AddrRange
    physical_memory_offset: int
    regions: Sequence[MemoryRegion]
    source: str


def heap(target: Target, options: HeapOptions) -> HeapResult:
    """The seed kernel's heap: the largest usable region, in the higher half."""
    memmap = options.memmap or str(target.hints.get("memmap", "")) or None
    if memmap is None:
        raise UsageError("--memmap bootinfo|json is required")
    offset = options.phys_offset
    if memmap == "bootinfo":
        at = options.at if options.at is not None else _hint_int(target, "bootinfo_at")
        if at is None:
            raise UsageError("--at ADDR (physical address of the BootInfo) is required")
        version = options.bootinfo_version or str(target.hints.get("bootinfo_version", "0.11"))
        features = options.bootinfo_features
        if features is None:
            hinted = target.hints.get("bootinfo_features")
            features = tuple(hinted) if isinstance(hinted, (list, tuple)) else None
        info: BootInfo = parse_bootinfo(
            target.mapper,
            at,
            version,
            resolve_pointer=_resolver(target, options.root),
            **({} if features is None else {"features": features}),
        )
        regions: Sequence[MemoryRegion] = info.memory_regions
        if offset is None:
            offset = require_physical_memory_offset(info)
        source = f"BootInfo v{info.version} at 0x{at:x}"
    elif memmap == "json":
        if options.json_path is None:
            raise UsageError("--memmap json needs a FILE")
        regions = load_memmap_json(options.json_path)
        if offset is None:
            raise UsageError("--memmap json needs --phys-offset ADDR")
        source = f"memory map {options.json_path}"
    else:
        raise UsageError(f"--memmap must be bootinfo or json, not {memmap!r}")
    heap_range = locate_kernel_heap(regions, offset)
    geo = geometry(target.cpu(options.root.cpu).levels if options.root.levels is None
                   else options.root.levels)  # fmt: skip
    for addr in (heap_range.start, heap_range.end - 1):
        if not geo.is_canonical(addr):
            raise InputError(
                f"the heap 0x{heap_range.start:x}-0x{heap_range.end:x} is not canonical for "
                f"{geo.levels}-level paging: is the physical memory offset 0x{offset:x} right?"
            )
    return HeapResult(heap_range, offset, list(regions), source)


def _hint_int(target: Target, name: str) -> int | None:
    value = target.hints.get(name)
    return value if isinstance(value, int) else None


def _resolver(target: Target, root: RootOptions) -> Callable[[int], int]:
    def resolve(vaddr: int) -> int:
        return open_page_table(target, root).translate(vaddr).paddr

    return resolve
