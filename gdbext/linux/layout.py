"""Linux's x86-64 virtual memory layout as data: regions, ptdump markers and their bases.

Two tables describe the layout, both from the kernel (see ``paging-semantics.md`` 6.1, 6.2):

- **regions** (``Documentation/arch/x86/x86_64/mm.rst``): what each part of the address space
  is for, gapless from 0 to 2^64; :meth:`Layout.label` finds the region of an address;
- **markers** (``arch/x86/mm/dump_pagetables.c``): the ``---[ Name ]---`` sections of ptdump,
  in the kernel's array order; :class:`MarkerCursor` reports the markers a VA-ordered stream
  crosses.

Three bases move with ``CONFIG_RANDOMIZE_MEMORY`` (KASLR): the direct map
(``page_offset_base``), vmalloc (``vmalloc_base``) and vmemmap (``vmemmap_base``), in that
order, each aligned to 1 GiB, inside ``[__PAGE_OFFSET_BASE, CPU_ENTRY_AREA_BASE)``. The kernel
image moves inside the high kernel mapping by ``KERNELOFFSET``. Every base carries its
provenance (:class:`Base`): fixed by the kernel, given by VMCOREINFO or the caller, found in
the page tables (and how), or a **default** that was assumed because nothing better was known.
Building a layout from bases is this module's; finding a kernel's bases is
:mod:`gdbext.linux.detect`'s.

>>> lay = linux_layout(4)
>>> lay.label(0xFFFF888000001000).name
'direct mapping of all physical memory'
>>> [m.name for m in lay.markers][:4]
['User Space', 'Kernel Space', 'LDT remap', 'Low Kernel Mapping']
>>> lay.bases["vmalloc_base"].assumed
True
>>> cur = MarkerCursor(lay)
>>> [m.name for m in cur.advance(0xFFFFC90000000000)]
['vmalloc() Area']
>>> [m.name for m in cur.advance(0xFFFFFE0000000000)]
['Vmemmap', 'CPU entry Area']
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import NamedTuple

from gdbext.errors import AddressOutOfRangeError, LayoutError

__all__ = [
    "Base",
    "Bases",
    "Layout",
    "Marker",
    "MarkerCursor",
    "Options",
    "Params",
    "Region",
    "bases_problem",
    "layout_of",
    "linux_layout",
    "params",
    "resolve_bases",
]

TB = 1 << 40
GB = 1 << 30
_TOP = 1 << 64

# Fixed addresses, the same for 4- and 5-level paging (arch/x86/include/asm/*.h, Linux 6.x).
#: ``__START_KERNEL_map``: the high kernel mapping (kernel text, mapped to physical 0).
#: Under PTI the user page-global directory is the 4 KiB page after the kernel's (the kernel's
#: PGD is 8 KiB-aligned): CR3 | 0x1000.
PTI_USER_PGD_BIT = 0x1000
START_KERNEL_MAP = 0xFFFF_FFFF_8000_0000
#: ``__START_KERNEL`` with the default ``CONFIG_PHYSICAL_START`` of 16 MiB (2 MiB aligned).
START_KERNEL = 0xFFFF_FFFF_8100_0000
#: ``CPU_ENTRY_AREA_BASE`` (P4D entry -4) and its 0.5 TB extent; also KASLR's ``vaddr_end``.
CPU_ENTRY_AREA_BASE = 0xFFFF_FE00_0000_0000
CPU_ENTRY_AREA_END = 0xFFFF_FE80_0000_0000
#: ``ESPFIX_BASE_ADDR`` (P4D entry -2), 0.5 TB.
ESPFIX_BASE_ADDR = 0xFFFF_FF00_0000_0000
ESPFIX_END = 0xFFFF_FF80_0000_0000
#: ``EFI_VA_END`` (-68 GB) and ``EFI_VA_START`` (-4 GB): EFI runtime services grow down.
EFI_VA_END = 0xFFFF_FFEF_0000_0000
EFI_VA_START = 0xFFFF_FFFF_0000_0000
#: ``MODULES_END``.
MODULES_END = 0xFFFF_FFFF_FF00_0000
#: ``VSYSCALL_ADDR``, the legacy vsyscall page.
VSYSCALL_ADDR = 0xFFFF_FFFF_FF60_0000
#: ``FIXADDR_TOP``: round_up(VSYSCALL_ADDR + 4K, 2M) - 4K.
FIXADDR_TOP = 0xFFFF_FFFF_FF7F_F000
#: The unused 2 MB at the very top (STACKLEAK_POISON lives there).
TOP_HOLE = 0xFFFF_FFFF_FFE0_0000

#: ``KERNEL_IMAGE_SIZE`` with ``CONFIG_RANDOMIZE_BASE`` (1 GB; 512 MB without it). VMCOREINFO
#: carries the real one as ``NUMBER(KERNEL_IMAGE_SIZE)``.
DEFAULT_KERNEL_IMAGE_SIZE = 1 << 30
#: ``FIXADDR_START`` = FIXADDR_TOP - (__end_of_permanent_fixed_addresses << 12). It depends on
#: the kernel's configuration; 646 fixmap slots for Debian 6.1's ``linux-image-amd64`` (vsyscall
#: 511, DBGP, EARLYCON, APIC, 128 IO-APICs, PARAVIRT_XXL bootmap, 2 GHES; no KMAP_LOCAL).
DEFAULT_FIXADDR_START = FIXADDR_TOP - 646 * 4096


class Params(NamedTuple):
    """What differs between 4- and 5-level paging (``pgtable_64_types.h``, ``mm.rst``). (A
    named tuple: every walk with Linux's labels imports it, and making a dataclass costs
    start-up time.)"""

    levels: int
    #: End of the user half (``TASK_SIZE_MAX`` rounded up to the PGD boundary).
    user_end: int
    #: ``GUARD_HOLE_BASE_ADDR`` .. ``GUARD_HOLE_END_ADDR``: 16 PGD entries.
    guard_base: int
    guard_end: int
    #: ``LDT_BASE_ADDR`` (PGD entry -240) and one PGD entry of extent.
    ldt_base: int
    ldt_end: int
    #: ``__PAGE_OFFSET_BASE_L4/L5``: default direct map, and KASLR's ``vaddr_start``.
    page_offset: int
    direct_size: int
    #: ``__VMALLOC_BASE_L4/L5`` and ``VMALLOC_SIZE_TB_L4/L5``.
    vmalloc: int
    vmalloc_size: int
    #: ``__VMEMMAP_BASE_L4/L5`` and the extent mm.rst gives it.
    vmemmap: int
    vmemmap_size: int
    #: ``KASAN_SHADOW_START`` .. ``KASAN_SHADOW_END`` (only with CONFIG_KASAN).
    kasan: tuple[int, int]


_FOUR = Params(
    levels=4,
    user_end=1 << 47,
    guard_base=0xFFFF_8000_0000_0000,
    guard_end=0xFFFF_8800_0000_0000,
    ldt_base=0xFFFF_8800_0000_0000,
    ldt_end=0xFFFF_8880_0000_0000,
    page_offset=0xFFFF_8880_0000_0000,
    direct_size=64 * TB,
    vmalloc=0xFFFF_C900_0000_0000,
    vmalloc_size=32 * TB,
    vmemmap=0xFFFF_EA00_0000_0000,
    vmemmap_size=1 * TB,
    kasan=(0xFFFF_EC00_0000_0000, 0xFFFF_FC00_0000_0000),
)
_FIVE = Params(
    levels=5,
    user_end=1 << 56,
    guard_base=0xFF00_0000_0000_0000,
    guard_end=0xFF10_0000_0000_0000,
    ldt_base=0xFF10_0000_0000_0000,
    ldt_end=0xFF11_0000_0000_0000,
    page_offset=0xFF11_0000_0000_0000,
    direct_size=32 * 1024 * TB,
    vmalloc=0xFFA0_0000_0000_0000,
    vmalloc_size=12800 * TB,
    vmemmap=0xFFD4_0000_0000_0000,
    vmemmap_size=512 * TB,
    kasan=(0xFFDF_0000_0000_0000, 0xFFFF_FC00_0000_0000),
)


def params(levels: int) -> Params:
    """What Linux's layout is with ``levels`` paging levels.

    :raises LayoutError: not 4 or 5 levels.
    """
    if levels == 4:
        return _FOUR
    if levels == 5:
        return _FIVE
    raise LayoutError(f"x86-64 paging has 4 or 5 levels, not {levels}", levels)


class Base(NamedTuple):
    """An address the layout depends on, with where it came from.

    ``source`` is ``"fixed"`` (a constant of the kernel), ``"VMCOREINFO"``, ``"hint"`` (given by
    the backend or the caller), ``"page tables"`` (found in the tables; ``how`` says how) or
    ``"default"`` (the documented default, *assumed* because nothing better was known).
    """

    value: int
    source: str
    how: str = ""

    @property
    def assumed(self) -> bool:
        """True if the value is a default rather than known or found."""
        return self.source == "default"

    def describe(self) -> str:
        """``0x... (source: how)``."""
        return f"0x{self.value:x} ({self.source}{': ' + self.how if self.how else ''})"


class Region(NamedTuple):
    """``[start, end)`` of the address space and what mm.rst says it is for."""

    start: int
    end: int
    name: str
    #: The base that places this region, if it is not at a fixed address.
    base: Base | None = None

    @property
    def assumed(self) -> bool:
        """True if the region's position rests on a default base."""
        return self.base is not None and self.base.assumed


class Marker(NamedTuple):
    """A ptdump section: it starts at ``start`` and lasts until the next marker starts."""

    start: int
    name: str
    #: ptdump prints at most this many lines in the section (0: no limit); ESPfix has 16.
    max_lines: int = 0
    base: Base | None = None

    @property
    def assumed(self) -> bool:
        return self.base is not None and self.base.assumed


@dataclass(frozen=True)
class Layout:
    """One kernel's layout: regions (sorted, gapless), markers (kernel order) and bases."""

    levels: int
    regions: tuple[Region, ...]
    markers: tuple[Marker, ...]
    bases: Mapping[str, Base]

    def label(self, vaddr: int) -> Region:
        """The region holding ``vaddr``; :class:`AddressOutOfRangeError` unless
        0 <= vaddr < 2^64."""
        if not 0 <= vaddr < _TOP:
            raise AddressOutOfRangeError(vaddr)
        starts = [r.start for r in self.regions]
        return self.regions[bisect_right(starts, vaddr) - 1]

    def marker_index(self, vaddr: int) -> int:
        """Index of the marker whose section holds ``vaddr``."""
        return bisect_right([m.start for m in self.markers], vaddr) - 1

    @property
    def title(self) -> str:
        """``Linux x86-64 4-level layout``: what the walk's header and ``info`` call it."""
        return f"Linux x86-64 {self.levels}-level layout"

    def base_lines(self) -> list[str]:
        """One line per base: its name, value and provenance (for ``info``), e.g.
        ``direct map    0xffff888000000000 (page tables: lowest 1 GiB boundary ...)``."""
        return [f"{BASE_NAMES.get(k, k) + ':':<14}{b.describe()}" for k, b in self.bases.items()]


#: What :meth:`Layout.base_lines` calls each base.
BASE_NAMES = {
    "page_offset_base": "direct map",
    "vmalloc_base": "vmalloc",
    "vmemmap_base": "vmemmap",
    "kernel_image": "kernel image",
    "modules": "modules",
    "fixmap": "fixmap",
}


class MarkerCursor:
    """Follows a stream of addresses in VA order and reports the markers it enters.

    The first address reports the marker whose section holds it; each later one reports every
    marker crossed since (empty sections included, as ptdump prints them).
    """

    def __init__(self, layout: Layout) -> None:
        self.markers = layout.markers
        self._starts = [m.start for m in layout.markers]
        self.index = -1

    def next_start(self) -> int:
        """Where the next section starts (2^64 after the last one)."""
        i = self.index + 1
        return self._starts[i] if i < len(self._starts) else _TOP

    def advance(self, vaddr: int) -> list[Marker]:
        target = bisect_right(self._starts, vaddr) - 1
        if self.index < 0:
            self.index = max(target, 0)
            return [self.markers[self.index]]
        if target <= self.index:
            return []
        crossed = list(self.markers[self.index + 1 : target + 1])
        self.index = target
        return crossed


def _base(value: int | Base | None, default: int, source: str = "hint", how: str = "") -> Base:
    if value is None:
        return Base(default, "default")
    if isinstance(value, Base):
        return value
    return Base(value, source, how)


class Bases(NamedTuple):
    """The bases a layout rests on, each with its provenance (:func:`resolve_bases`)."""

    page_offset_base: Base
    vmalloc_base: Base
    vmemmap_base: Base
    kernel_image: Base
    modules: Base
    fixmap: Base

    def by_name(self) -> dict[str, Base]:
        """The bases by the names :data:`BASE_NAMES` knows, in order."""
        return {
            "page_offset_base": self.page_offset_base,
            "vmalloc_base": self.vmalloc_base,
            "vmemmap_base": self.vmemmap_base,
            "kernel_image": self.kernel_image,
            "modules": self.modules,
            "fixmap": self.fixmap,
        }


def resolve_bases(
    *,
    levels: int,
    page_offset_base: int | Base | None = None,
    vmalloc_base: int | Base | None = None,
    vmemmap_base: int | Base | None = None,
    kernel_offset: int | Base | None = None,
    kernel_image_start: int | Base | None = None,
    kernel_image_size: int | Base | None = None,
    fixaddr_start: int | Base | None = None,
) -> Bases:
    """The bases of a ``levels``-level layout (see :func:`linux_layout` for the arguments),
    defaults filled in; whether they hold together is :func:`bases_problem`'s question."""
    p = params(levels)
    if kernel_image_start is not None:
        image = _base(kernel_image_start, START_KERNEL)
    elif kernel_offset is not None:
        off = kernel_offset if isinstance(kernel_offset, Base) else Base(kernel_offset, "hint")
        image = Base(
            (START_KERNEL + off.value) % _TOP,
            off.source,
            f"0xffffffff81000000 + KERNELOFFSET 0x{off.value:x}",
        )
    else:
        image = Base(START_KERNEL, "default")
    size = _base(kernel_image_size, DEFAULT_KERNEL_IMAGE_SIZE)
    return Bases(
        page_offset_base=_base(page_offset_base, p.page_offset),
        vmalloc_base=_base(vmalloc_base, p.vmalloc),
        vmemmap_base=_base(vmemmap_base, p.vmemmap),
        kernel_image=image,
        modules=Base(
            START_KERNEL_MAP + size.value,
            size.source,
            f"__START_KERNEL_map + KERNEL_IMAGE_SIZE 0x{size.value:x}",
        ),
        fixmap=_base(fixaddr_start, DEFAULT_FIXADDR_START),
    )


@dataclass(frozen=True)
class Options:
    """The kernel's configuration options that decide which regions and markers exist:
    ``CONFIG_KASAN``, ``CONFIG_MODIFY_LDT_SYSCALL``, ``CONFIG_X86_ESPFIX64``, ``CONFIG_EFI``
    (Debian's defaults)."""

    kasan: bool = False
    ldt: bool = True
    espfix: bool = True
    efi: bool = True


def bases_problem(levels: int, bases: Bases, options: Options = Options()) -> str | None:
    """Why ``bases`` do not make a layout (out of order, outside their ranges), or ``None``."""
    p = params(levels)
    direct, vmalloc, vmemmap = bases.page_offset_base, bases.vmalloc_base, bases.vmemmap_base
    modules, image, fixmap = bases.modules, bases.kernel_image, bases.fixmap
    vaddr_start, vaddr_end = p.page_offset, CPU_ENTRY_AREA_BASE
    named = (("page_offset_base", direct), ("vmalloc_base", vmalloc), ("vmemmap_base", vmemmap))
    for name, b in named:
        if not vaddr_start <= b.value < vaddr_end or b.value % GB:
            return (
                f"{name} 0x{b.value:x} is not a 1 GiB-aligned address in "
                f"0x{vaddr_start:x}-0x{vaddr_end:x}"
            )
    if not direct.value < vmalloc.value < vmemmap.value:
        return "the direct map, vmalloc and vmemmap bases must be in that order"
    if not START_KERNEL_MAP < modules.value < MODULES_END:
        return f"modules at 0x{modules.value:x} are outside the high kernel mapping"
    if not START_KERNEL_MAP <= image.value < modules.value:
        return f"the kernel image at 0x{image.value:x} is outside its mapping"
    if not MODULES_END <= fixmap.value < VSYSCALL_ADDR:
        return f"FIXADDR_START 0x{fixmap.value:x} is outside the fixmap range"
    if options.kasan and min(vmemmap.value + p.vmemmap_size, vaddr_end) > p.kasan[0]:
        return "KASAN shadow overlaps the randomised regions (KASAN disables KASLR)"
    for lower, upper in pairwise(_markers(p, bases, options)):
        if lower.start >= upper.start:
            return f"marker {upper.name!r} at 0x{upper.start:x} is not above {lower.name!r}"
    return None


def linux_layout(
    levels: int,
    *,
    page_offset_base: int | Base | None = None,
    vmalloc_base: int | Base | None = None,
    vmemmap_base: int | Base | None = None,
    kernel_offset: int | Base | None = None,
    kernel_image_start: int | Base | None = None,
    kernel_image_size: int | Base | None = None,
    fixaddr_start: int | Base | None = None,
    kasan: bool = False,
    ldt: bool = True,
    espfix: bool = True,
    efi: bool = True,
) -> Layout:
    """The layout of a 4- or 5-level x86-64 Linux kernel (6.x) with these bases.

    A base left ``None`` takes the documented default and is marked *assumed*; an ``int`` is
    taken as given (source ``"hint"``); a :class:`Base` keeps its own provenance.
    ``kernel_offset`` (KERNELOFFSET) places the kernel image at ``0xffffffff81000000 + offset``
    unless ``kernel_image_start`` (e.g. VMCOREINFO ``SYMBOL(_stext)``) says where it is.
    ``kernel_image_size`` (``NUMBER(KERNEL_IMAGE_SIZE)``) is where the modules start above
    ``__START_KERNEL_map``. ``kasan``, ``ldt``, ``espfix`` and ``efi`` are the kernel's
    configuration (:class:`Options`); they decide which ptdump markers exist.

    :raises LayoutError: bases out of order or outside the randomisable range.
    """
    bases = resolve_bases(
        levels=levels,
        page_offset_base=page_offset_base,
        vmalloc_base=vmalloc_base,
        vmemmap_base=vmemmap_base,
        kernel_offset=kernel_offset,
        kernel_image_start=kernel_image_start,
        kernel_image_size=kernel_image_size,
        fixaddr_start=fixaddr_start,
    )
    options = Options(kasan, ldt, espfix, efi)
    problem = bases_problem(levels, bases, options)
    if problem is not None:
        raise LayoutError(problem, levels)
    return layout_of(levels, bases, options)


def layout_of(levels: int, bases: Bases, options: Options = Options()) -> Layout:
    """The layout of ``bases``, which hold together (:func:`bases_problem` is ``None``)."""
    p = params(levels)
    direct, vmalloc, vmemmap = bases.page_offset_base, bases.vmalloc_base, bases.vmemmap_base
    modules, image, fixmap = bases.modules, bases.kernel_image, bases.fixmap
    vaddr_start, vaddr_end = p.page_offset, CPU_ENTRY_AREA_BASE
    regions: list[Region] = [
        Region(0, p.user_end, "user space"),
        Region(p.user_end, p.guard_base, "non-canonical hole"),
        Region(p.guard_base, p.guard_end, "guard hole, reserved for hypervisor"),
        Region(p.ldt_base, p.ldt_end, "LDT remap for PTI"),
    ]
    # The randomisable range: three regions in order, each clipped at the next, gaps unused.
    placed = [
        (direct, p.direct_size, "direct mapping of all physical memory"),
        (vmalloc, p.vmalloc_size, "vmalloc/ioremap space"),
        (vmemmap, p.vmemmap_size, "virtual memory map (vmemmap)"),
    ]
    cursor = vaddr_start
    for i, (b, extent, name) in enumerate(placed):
        limit = placed[i + 1][0].value if i + 1 < len(placed) else vaddr_end
        if b.value > cursor:
            regions.append(Region(cursor, b.value, "unused hole"))
        end = min(b.value + extent, limit)
        regions.append(Region(b.value, end, name, b))
        cursor = end
    if options.kasan:
        k0, k1 = p.kasan
        if k0 > cursor:
            regions.append(Region(cursor, k0, "unused hole"))
        regions.append(Region(k0, k1, "KASAN shadow memory"))
        cursor = k1
    if vaddr_end > cursor:
        regions.append(Region(cursor, vaddr_end, "unused hole"))
    regions += [
        Region(CPU_ENTRY_AREA_BASE, CPU_ENTRY_AREA_END, "cpu_entry_area mapping"),
        Region(CPU_ENTRY_AREA_END, ESPFIX_BASE_ADDR, "unused hole"),
        Region(ESPFIX_BASE_ADDR, ESPFIX_END, "%esp fixup stacks (ESPfix)"),
        Region(ESPFIX_END, EFI_VA_END, "unused hole"),
        Region(EFI_VA_END, EFI_VA_START, "EFI region mapping space"),
        Region(EFI_VA_START, START_KERNEL_MAP, "unused hole"),
        Region(START_KERNEL_MAP, modules.value, "kernel text mapping, mapped to physical 0", image),
        Region(modules.value, MODULES_END, "module mapping space", modules),
        Region(MODULES_END, fixmap.value, "unused hole (early boot fixmap slots)"),
        Region(fixmap.value, VSYSCALL_ADDR, "kernel-internal fixmap range", fixmap),
        Region(VSYSCALL_ADDR, VSYSCALL_ADDR + 4096, "legacy vsyscall ABI"),
        Region(VSYSCALL_ADDR + 4096, TOP_HOLE, "unused hole"),
        Region(TOP_HOLE, _TOP, "unused hole (STACKLEAK_POISON)"),
    ]
    return Layout(levels, tuple(regions), _markers(p, bases, options), bases.by_name())


def _markers(p: Params, bases: Bases, options: Options) -> tuple[Marker, ...]:
    """Ptdump's sections for these bases, in the kernel's order."""
    direct, vmalloc, vmemmap = bases.page_offset_base, bases.vmalloc_base, bases.vmemmap_base
    markers: list[Marker] = [
        Marker(0, "User Space"),
        Marker(1 << 63, "Kernel Space"),
    ]
    if options.ldt:
        markers.append(Marker(p.ldt_base, "LDT remap"))
    markers += [
        Marker(direct.value, "Low Kernel Mapping", base=direct),
        Marker(vmalloc.value, "vmalloc() Area", base=vmalloc),
        Marker(vmemmap.value, "Vmemmap", base=vmemmap),
    ]
    if options.kasan:
        markers += [Marker(p.kasan[0], "KASAN shadow"), Marker(p.kasan[1], "KASAN shadow end")]
    markers.append(Marker(CPU_ENTRY_AREA_BASE, "CPU entry Area"))
    if options.espfix:
        markers.append(Marker(ESPFIX_BASE_ADDR, "ESPfix Area", 16))
    if options.efi:
        markers.append(Marker(EFI_VA_END, "EFI Runtime Services"))
    markers += [
        Marker(START_KERNEL_MAP, "High Kernel Mapping"),
        Marker(bases.modules.value, "Modules", base=bases.modules),
        Marker(MODULES_END, "End Modules"),
        Marker(bases.fixmap.value, "Fixmap Area", base=bases.fixmap),
    ]
    return tuple(markers)
