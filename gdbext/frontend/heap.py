"""The ``heap`` command's work: where the kernel heap is.

The largest usable region of the physical memory map (Linux's e820 table in ``boot_params``, a
BootInfo's memory map, or a JSON file), moved into the higher half by the physical memory
offset (given, the memory map's own, or the direct map's base found in the page tables). Nothing
here prints; front ends render the :class:`HeapResult`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from gdbext.addr import AddrRange
from gdbext.bootinfo import BootInfo, parse_bootinfo
from gdbext.errors import GdbextError, InputError, NotFoundError, UsageError
from gdbext.frontend.argtypes import AUTO
from gdbext.frontend.commands import RootOptions, cpu_index, kernel_root, open_page_table
from gdbext.geometry import geometry
from gdbext.heap import MemoryRegion, locate_kernel_heap
from gdbext.linux.detect import labels_wanted
from gdbext.linux.e820 import (
    choose_boot_params,
    kernel_boot_params,
    read_boot_params,
    scan_boot_params,
)
from gdbext.linux.kernelimage import bss_first, image_parts
from gdbext.linux.physoffset import find_direct_map_base
from gdbext.memmap import load_memmap_json
from gdbext.plugin.target import Target
from gdbext.units import shown
from gdbext.x86.paging import X86PageTable


@dataclass(frozen=True)
class HeapOptions:
    #: ``"bootinfo"``, ``"e820"`` or ``"json"``; ``None`` uses what the target suggests.
    memmap: str | None = None
    #: Physical address of the BootInfo (``bootinfo``) or of the boot_params (``e820``; found
    #: by a scan of the memory when not given).
    at: int | None = None
    bootinfo_version: str | None = None
    bootinfo_features: tuple[str, ...] | None = None
    json_path: str | None = None
    #: The direct map's base; :data:`AUTO` (also the default when the memory map has none)
    #: finds it from the page tables.
    phys_offset: int | Literal["auto"] | None = None
    root: RootOptions = field(default_factory=RootOptions)


@dataclass(frozen=True)
class HeapResult:
    range: AddrRange
    physical_memory_offset: int
    regions: Sequence[MemoryRegion]
    #: Where the memory map and the offset came from, for people.
    source: str


def _default_memmap(target: Target) -> str:
    """The memory map ``heap`` uses without ``--memmap``: the target's fact (the simulator's
    scenario), else ``e820`` for Linux (a VMCOREINFO, or a backend that says so)."""
    if target.facts.memmap:
        return target.facts.memmap
    if labels_wanted("auto", target.facts):
        return "e820"
    raise UsageError(
        f"heap: {target.description} is not known to be Linux (no VMCOREINFO), so there is no "
        "default memory map; give --memmap bootinfo --at ADDR (a BootInfo kernel), "
        "--memmap e820 (Linux's boot_params) or --memmap json FILE"
    )


def heap(target: Target, options: HeapOptions) -> HeapResult:
    """The kernel's heap: the largest usable region of the memory map, in the higher half
    (see ``gdbext heap --help``). Without ``options.memmap``, Linux's e820 for a Linux target."""
    memmap = options.memmap or _default_memmap(target)
    offset: int | None = None if options.phys_offset == AUTO else options.phys_offset
    if memmap == "bootinfo":
        known = target.facts.bootinfo
        at = options.at if options.at is not None else None if known is None else known.at
        if at is None:
            raise UsageError("--at ADDR (physical address of the BootInfo) is required")
        version = options.bootinfo_version or ("0.11" if known is None else known.version)
        features = options.bootinfo_features
        if features is None and known is not None:
            features = known.features
        info: BootInfo = parse_bootinfo(
            target.mapper,
            at,
            version,
            resolve_pointer=_resolver(target, options.root),
            **({} if features is None else {"features": features}),
        )
        regions: Sequence[MemoryRegion] = info.memory_regions
        if offset is None and options.phys_offset != AUTO:
            offset = info.physical_memory_offset
        source = f"BootInfo v{info.version} at 0x{at:x}"
    elif memmap == "e820":
        try:
            regions, source = _e820(target, options)
        except NotFoundError as exc:
            if options.memmap is not None:
                raise
            raise NotFoundError(
                f"{exc} (e820 is the default for Linux; give --memmap bootinfo|json otherwise)"
            ) from None
        if options.memmap is None:
            source = f"the e820 table (Linux's default) {source.removeprefix('e820 table ')}"
    elif memmap == "json":
        if options.json_path is None:
            raise UsageError("--memmap json needs a FILE")
        regions = load_memmap_json(options.json_path)
        source = f"memory map {options.json_path}"
    else:
        raise UsageError(f"--memmap must be bootinfo, e820 or json, not {shown(memmap)}")
    if offset is None:
        offset, how = _auto_offset(target, options.root)
        source += f"; offset: auto, {how}"
    heap_range = locate_kernel_heap(regions, offset)
    levels = options.root.levels
    if levels is None and options.root.kernel:
        levels = kernel_root(target)[1]
    if levels is None:
        levels = target.cpu(cpu_index(target, options.root)).levels if target.cpus else 4
    geo = geometry(levels)
    for addr in (heap_range.start, heap_range.end - 1):
        if not geo.is_canonical(addr):
            raise InputError(
                f"the heap 0x{heap_range.start:x}-0x{heap_range.end:x} is not canonical for "
                f"{geo.levels}-level paging: is the physical memory offset 0x{offset:x} right?"
            )
    return HeapResult(heap_range, offset, list(regions), source)


def _e820(target: Target, options: HeapOptions) -> tuple[list[MemoryRegion], str]:
    """The e820 map of the boot_params at ``--at``, or of the one a scan of the memory finds."""
    if options.at is not None:
        params = read_boot_params(target.mapper, options.at)
        return params.regions(), f"e820 table of boot_params at 0x{params.paddr:x}"
    if target.ram is None:
        raise UsageError(
            "--memmap e820: this target does not say where its RAM is, so it cannot be scanned "
            "for boot_params; give its physical address with --at ADDR"
        )
    image = _kernel_image(target, options.root)
    kernels = kernel_boot_params(target.mapper, image, target.ram)
    if kernels is not None:
        return kernels.regions(), (
            f"e820 table of boot_params at 0x{kernels.paddr:x} (the kernel's copy, in its image)"
        )
    found, scanned = scan_boot_params(target.mapper, target.ram)
    params = choose_boot_params(found, image, scanned)
    which = (
        "the kernel's copy"
        if any(r.start <= params.paddr < r.end for r in image)
        else "the highest"
    )
    more = f" ({which} of {len(found)} found)" if len(found) > 1 else ""
    return params.regions(), f"e820 table of boot_params at 0x{params.paddr:x}{more}"


def _is_default_root(root: RootOptions) -> bool:
    return root == RootOptions()


def _kernel_table(target: Target, root: RootOptions) -> X86PageTable:
    """The page table to search for kernel mappings: the selected one, or the kernel's own
    (``kernel_root`` fact) when no root was selected (a CPU may have been in a user process,
    whose PTI tables map little of the kernel). With ``--user-pgd`` it is the kernel half of
    the PTI pair: the user half maps neither the direct map nor the kernel image, and the best
    offset found there would be some other mapping's (the kernel text's)."""
    if root.user_pgd:
        root = dataclasses.replace(root, user_pgd=False)
    if _is_default_root(root) and target.facts.kernel_root is not None:
        return open_page_table(target, RootOptions(kernel=True))
    return open_page_table(target, root)


def _kernel_image(target: Target, root: RootOptions) -> list[AddrRange]:
    """Physical ranges that the kernel-image mapping covers, in the order a search for a
    ``.bss`` variable takes (:func:`~gdbext.linux.kernelimage.bss_first`); empty if the tables
    cannot say."""
    try:
        return bss_first(image_parts(_kernel_table(target, root)))
    except GdbextError:
        return []


def _auto_offset(target: Target, root: RootOptions) -> tuple[int, str]:
    """The direct map's base from the page tables, and how it was found (for the source)."""
    pt = _kernel_table(target, root)
    base = find_direct_map_base(pt)
    if base is None:
        raise NotFoundError(
            f"cannot find the direct map: nothing is mapped in the higher half of the page "
            f"table at 0x{pt.root:x}; give --phys-offset ADDR"
        )
    return base, f"the direct map in the page table at 0x{pt.root:x}"


def _resolver(target: Target, root: RootOptions) -> Callable[[int], int]:
    def resolve(vaddr: int) -> int:
        return open_page_table(target, root).translate(vaddr).paddr

    return resolve
