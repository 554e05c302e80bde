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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from itertools import pairwise

from gdbext.addr import AddrRange
from gdbext.errors import GdbextError
from gdbext.flags import HUGE_PAGE, PRESENT
from gdbext.geometry import index_shift
from gdbext.linux.physoffset import find_direct_map_base
from gdbext.mapper import read_table, read_u64
from gdbext.plugin.facts import KernelFacts
from gdbext.x86.paging import LeafRun, X86PageTable

__all__ = [
    "Base",
    "Layout",
    "Marker",
    "MarkerCursor",
    "Region",
    "detect_layout",
    "labels_wanted",
    "linux_layout",
]

TB = 1 << 40
GB = 1 << 30
_TOP = 1 << 64

# Fixed addresses, the same for 4- and 5-level paging (arch/x86/include/asm/*.h, Linux 6.x).
#: ``__START_KERNEL_map``: the high kernel mapping (kernel text, mapped to physical 0).
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


@dataclass(frozen=True)
class _Params:
    """What differs between 4- and 5-level paging (``pgtable_64_types.h``, ``mm.rst``)."""

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


_FOUR = _Params(
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
_FIVE = _Params(
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


def _params(levels: int) -> _Params:
    if levels == 4:
        return _FOUR
    if levels == 5:
        return _FIVE
    raise ValueError(f"x86-64 paging has 4 or 5 levels, not {levels}")


@dataclass(frozen=True)
class Base:
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


@dataclass(frozen=True)
class Region:
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


@dataclass(frozen=True)
class Marker:
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
        """The region holding ``vaddr`` (0 <= vaddr < 2^64)."""
        if not 0 <= vaddr < _TOP:
            raise ValueError(f"not a 64-bit address: {vaddr:#x}")
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
        return [
            f"{BASE_NAMES.get(k, k) + ':':<14}{b.describe()}" for k, b in self.bases.items()
        ]


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
    ``CONFIG_KASAN``, ``CONFIG_MODIFY_LDT_SYSCALL``, ``CONFIG_X86_ESPFIX64`` and ``CONFIG_EFI``
    (Debian's defaults); they decide which ptdump markers exist.

    :raises ValueError: bases out of order or outside the randomisable range.
    """
    p = _params(levels)
    direct = _base(page_offset_base, p.page_offset)
    vmalloc = _base(vmalloc_base, p.vmalloc)
    vmemmap = _base(vmemmap_base, p.vmemmap)
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
    modules = Base(
        START_KERNEL_MAP + size.value,
        size.source,
        f"__START_KERNEL_map + KERNEL_IMAGE_SIZE 0x{size.value:x}",
    )
    fixmap = _base(fixaddr_start, DEFAULT_FIXADDR_START)

    vaddr_start, vaddr_end = p.page_offset, CPU_ENTRY_AREA_BASE
    bases = (("page_offset_base", direct), ("vmalloc_base", vmalloc), ("vmemmap_base", vmemmap))
    for name, b in bases:
        if not vaddr_start <= b.value < vaddr_end or b.value % GB:
            raise ValueError(
                f"{name} 0x{b.value:x} is not a 1 GiB-aligned address in "
                f"0x{vaddr_start:x}-0x{vaddr_end:x}"
            )
    if not direct.value < vmalloc.value < vmemmap.value:
        raise ValueError("the direct map, vmalloc and vmemmap bases must be in that order")
    if not START_KERNEL_MAP < modules.value < MODULES_END:
        raise ValueError(f"modules at 0x{modules.value:x} are outside the high kernel mapping")
    if not START_KERNEL_MAP <= image.value < modules.value:
        raise ValueError(f"the kernel image at 0x{image.value:x} is outside its mapping")
    if not MODULES_END <= fixmap.value < VSYSCALL_ADDR:
        raise ValueError(f"FIXADDR_START 0x{fixmap.value:x} is outside the fixmap range")

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
    if kasan:
        k0, k1 = p.kasan
        if cursor > k0:
            raise ValueError("KASAN shadow overlaps the randomised regions (KASAN disables KASLR)")
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

    markers: list[Marker] = [
        Marker(0, "User Space"),
        Marker(1 << 63, "Kernel Space"),
    ]
    if ldt:
        markers.append(Marker(p.ldt_base, "LDT remap"))
    markers += [
        Marker(direct.value, "Low Kernel Mapping", base=direct),
        Marker(vmalloc.value, "vmalloc() Area", base=vmalloc),
        Marker(vmemmap.value, "Vmemmap", base=vmemmap),
    ]
    if kasan:
        markers += [Marker(p.kasan[0], "KASAN shadow"), Marker(p.kasan[1], "KASAN shadow end")]
    markers.append(Marker(CPU_ENTRY_AREA_BASE, "CPU entry Area"))
    if espfix:
        markers.append(Marker(ESPFIX_BASE_ADDR, "ESPfix Area", 16))
    if efi:
        markers.append(Marker(EFI_VA_END, "EFI Runtime Services"))
    markers += [
        Marker(START_KERNEL_MAP, "High Kernel Mapping"),
        Marker(modules.value, "Modules", base=modules),
        Marker(MODULES_END, "End Modules"),
        Marker(fixmap.value, "Fixmap Area", base=fixmap),
    ]
    for lower, upper in pairwise(markers):
        if lower.start >= upper.start:
            raise ValueError(
                f"marker {upper.name!r} at 0x{upper.start:x} is not above {lower.name!r}"
            )
    return Layout(
        levels,
        tuple(regions),
        tuple(markers),
        {
            "page_offset_base": direct,
            "vmalloc_base": vmalloc,
            "vmemmap_base": vmemmap,
            "kernel_image": image,
            "modules": modules,
            "fixmap": fixmap,
        },
    )


# --- what a target tells us ------------------------------------------------------------------


def labels_wanted(mode: str, facts: KernelFacts) -> bool:
    """Whether text output gets Linux region labels (``--labels``): ``linux`` always, ``none``
    never, ``auto`` when the target is known to be a Linux kernel: it carries a VMCOREINFO (a
    dump), or its backend says so (fact ``os``, e.g. GDB with the kernel's symbols loaded)."""
    if mode == "auto":
        return facts.is_linux
    return mode == "linux"


def _vmcoreinfo(facts: KernelFacts) -> Mapping[str, str]:
    info = facts.vmcoreinfo
    return {} if info is None else info.entries


def _hex(vmci: Mapping[str, str], key: str) -> int | None:
    text = vmci.get(key)
    if text is None:
        return None
    try:
        return int(text.strip(), 16) % _TOP
    except ValueError:
        return None


def _dec(vmci: Mapping[str, str], key: str) -> int | None:
    text = vmci.get(key)
    if text is None:
        return None
    try:
        return int(text.strip(), 10) % _TOP
    except ValueError:
        return None


def find_page_offset_base(pt: X86PageTable) -> int | None:
    """The direct map's base, found in the tables: the lowest 1 GiB-aligned address in the
    randomisable range that maps physical address 0.

    Linux maps all RAM from physical 0 (the ISA range is always mapped) at ``page_offset_base``,
    which KASLR aligns to 1 GiB; nothing else in that range maps physical 0 at a 1 GiB boundary
    below it. Only the tables above the leaves are read, one translation per populated 1 GiB.
    """
    p = _params(pt.levels)
    for va in _populated_gigabytes(pt, p.page_offset, CPU_ENTRY_AREA_BASE):
        t = pt.try_translate(va)
        if t is not None and t.paddr == 0:
            return va
    return None


def _populated_gigabytes(pt: X86PageTable, lo: int, hi: int) -> Iterator[int]:
    """Each 1 GiB-aligned address in ``[lo, hi)`` whose PDPT entry is present, in order."""

    def walk(table: int, level: int, base: int) -> Iterator[int]:
        shift = index_shift(level)
        try:
            entries = read_table(pt.mapper, table)
        except GdbextError:
            return
        for i, e in enumerate(entries):
            va = base + (i << shift)
            if level == pt.levels:
                va = pt.geometry.canonicalize(va)
            if va + (1 << shift) <= lo or va >= hi or not e & PRESENT:
                continue
            if level == 3:
                yield va
            elif not e & HUGE_PAGE:
                yield from walk(e & pt.addr_mask, level - 1, va)

    yield from walk(pt.root, pt.levels, 0)


def _first_leaf(pt: X86PageTable, lo: int, hi: int, skip_offset: int | None = None) -> int | None:
    """The address of the first leaf in ``[lo, hi)`` (whose VA - PA is not ``skip_offset``)."""
    try:
        for rec in pt.iter_runs(AddrRange(lo, hi), aliases="collapse"):
            if type(rec) is LeafRun and (
                skip_offset is None or (rec.vaddr - rec.paddr) % _TOP != skip_offset
            ):
                return rec.vaddr
    except GdbextError:
        return None
    return None


def _vmemmap_from_mem_section(pt: X86PageTable, vmci: Mapping[str, str]) -> int | None:
    """``vmemmap_base`` from the first present ``struct mem_section`` (SPARSEMEM_VMEMMAP).

    VMCOREINFO's ``SYMBOL(mem_section)`` is the value of ``mem_section``: with
    SPARSEMEM_EXTREME (x86-64's choice) the address of the array of root pointers, otherwise
    the section array itself. A section's ``section_mem_map`` encodes ``mem_map - start_pfn``
    (low bits are flags: bit 0 present, bit 1 has a mem_map), which with vmemmap is
    ``vmemmap_base`` for every section.
    """
    sym = _hex(vmci, "SYMBOL(mem_section)")
    if not sym:
        return None
    size = _dec(vmci, "SIZE(mem_section)") or 16
    offset = _dec(vmci, "OFFSET(mem_section.section_mem_map)") or 0
    length = _dec(vmci, "LENGTH(mem_section)")
    bits = _dec(vmci, "NUMBER(SECTION_SIZE_BITS)")
    maxphys = _dec(vmci, "NUMBER(MAX_PHYSMEM_BITS)")
    if not 8 <= size <= 4096:
        return None
    extreme = True
    # Bounded here too (the dump backend drops absurd values when it parses VMCOREINFO; a
    # hint from elsewhere may not have): 1 << (maxphys - bits) is at most 2^40.
    if length and bits and maxphys and 0 < maxphys - bits <= 40 and maxphys <= 52:
        extreme = length == (1 << (maxphys - bits)) // (4096 // size)

    def read_va(va: int) -> int | None:
        t = pt.try_translate(va)
        if t is None:
            return None
        try:
            return read_u64(pt.mapper, t.paddr)
        except GdbextError:
            return None

    sections = read_va(sym) if extreme else sym
    if not sections:
        return None
    for i in range(min(4096 // size, 64)):
        value = read_va(sections + i * size + offset)
        if value is None:
            return None
        if value & 3 == 3:
            return value & ~0xFFF
    return None


def detect_layout(pt: X86PageTable, facts: KernelFacts) -> Layout:
    """The layout of the kernel whose tables ``pt`` are, from the target's facts and tables.

    Bases, best first: the backend's facts (``page_offset_base``, ``vmalloc_base``,
    ``vmemmap_base``, if a backend sets them); VMCOREINFO (``SYMBOL(_stext)``, ``KERNELOFFSET``,
    ``NUMBER(KERNEL_IMAGE_SIZE)``, and vmemmap through ``SYMBOL(mem_section)``); the tables
    (see :func:`find_page_offset_base`; vmalloc: the first mapping above the direct map that is
    not part of it, since vmalloc allocates from ``VMALLOC_START`` up; vmemmap: the first
    mapping above the vmalloc area's ``VMALLOC_SIZE``, since struct page of pfn 0 sits at
    ``vmemmap_base``; each rounded down to 1 GiB); otherwise the default. A found base that
    breaks the layout's order is dropped for the default. The bases are looked for in the
    kernel's own tables (fact ``kernel_root``) when ``pt`` is another root (a process's, or
    the PTI user half, which maps little of the kernel).
    """
    levels = pt.levels
    p = _params(levels)
    vmci = _vmcoreinfo(facts)
    pt = _kernel_tables(pt, facts)

    found: dict[str, Base] = {}
    pob = facts.page_offset_base
    if pob is not None:
        found["page_offset_base"] = Base(pob, "hint")
    else:
        value = find_page_offset_base(pt)
        how = "lowest 1 GiB boundary mapping physical 0"
        if value is None:
            # Not Linux's rule: the offset that maps the most memory (a full walk).
            try:
                value = find_direct_map_base(pt)
            except GdbextError:
                value = None
            how = "the offset that maps the most memory"
        if value is not None and _in_kaslr_range(p, value):
            found["page_offset_base"] = Base(value, "page tables", how)

    direct = found.get("page_offset_base")
    vmb = facts.vmalloc_base
    if vmb is not None:
        found["vmalloc_base"] = Base(vmb, "hint")
    elif direct is not None:
        first = _first_leaf(pt, direct.value, CPU_ENTRY_AREA_BASE, skip_offset=direct.value)
        if first is not None:
            found["vmalloc_base"] = Base(
                first - first % GB, "page tables", "first mapping above the direct map"
            )

    vme = facts.vmemmap_base
    if vme is not None:
        found["vmemmap_base"] = Base(vme, "hint")
    else:
        from_sections = _vmemmap_from_mem_section(pt, vmci)
        if from_sections is not None and _in_kaslr_range(p, from_sections):
            found["vmemmap_base"] = Base(from_sections, "VMCOREINFO", "mem_section")
        elif "vmalloc_base" in found:
            start = found["vmalloc_base"].value + p.vmalloc_size
            first = _first_leaf(pt, start, CPU_ENTRY_AREA_BASE) if start < _TOP else None
            if first is not None:
                found["vmemmap_base"] = Base(
                    first - first % GB, "page tables", "first mapping above VMALLOC_SIZE"
                )

    stext = _hex(vmci, "SYMBOL(_stext)")
    vm_offset = _hex(vmci, "KERNELOFFSET")
    hint_offset = facts.kernel_offset
    image_size = _dec(vmci, "NUMBER(KERNEL_IMAGE_SIZE)")
    if stext is not None:
        image_start: Base | None = Base(stext, "VMCOREINFO", "SYMBOL(_stext)")
    elif vm_offset is None and hint_offset is None:
        # No VMCOREINFO (a live target): the kernel image is the first mapping of the high
        # kernel mapping (equal to SYMBOL(_stext) on every kernel checked, KASLR included).
        first = _first_leaf(pt, START_KERNEL_MAP, START_KERNEL_MAP + GB)
        image_start = (
            None
            if first is None
            else Base(first, "page tables", "first mapping at __START_KERNEL_map")
        )
    else:
        image_start = None
    image: dict[str, Base | None] = {
        "kernel_image_start": image_start,
        "kernel_offset": Base(vm_offset, "VMCOREINFO")
        if vm_offset is not None
        else (None if hint_offset is None else Base(hint_offset, "hint")),
        "kernel_image_size": None if image_size is None else Base(image_size, "VMCOREINFO"),
    }

    def build(bases: Mapping[str, Base], image: Mapping[str, Base | None]) -> Layout:
        return linux_layout(
            levels,
            page_offset_base=bases.get("page_offset_base"),
            vmalloc_base=bases.get("vmalloc_base"),
            vmemmap_base=bases.get("vmemmap_base"),
            kernel_image_start=image.get("kernel_image_start"),
            kernel_offset=image.get("kernel_offset"),
            kernel_image_size=image.get("kernel_image_size"),
        )

    try:
        build({}, image)
    except ValueError:
        image = {}  # VMCOREINFO values that do not fit the layout: use the defaults
    # Drop found bases, last first, until the layout holds together.
    for drop in ("", "vmemmap_base", "vmalloc_base", "page_offset_base"):
        found.pop(drop, None)
        try:
            return build(found, image)
        except ValueError:
            continue
    raise AssertionError("the default layout is consistent")  # pragma: no cover


def _kernel_tables(pt: X86PageTable, facts: KernelFacts) -> X86PageTable:
    """The kernel's top table (fact ``kernel_root``) in ``pt``'s paging mode, else ``pt``.

    Without that fact (a live target has no VMCOREINFO), a root at an odd 4 KiB (``root |
    0x1000``, PTI's user PGD) that maps no direct map is traded for its kernel twin at
    ``root & ~0x1000``, when that one does.
    """
    root = facts.kernel_root
    levels = facts.kernel_levels
    if root is None and pt.root & 0x1000 and find_page_offset_base(pt) is None:
        twin = _table_at(pt, pt.root & ~0x1000)
        if twin is not None and find_page_offset_base(twin) is not None:
            return twin
        return pt
    if root is None or root == pt.root or (levels is not None and levels != pt.levels):
        return pt
    return _table_at(pt, root) or pt


def _table_at(pt: X86PageTable, root: int) -> X86PageTable | None:
    try:
        return X86PageTable(
            pt.mapper,
            root,
            pt.levels,
            nxe=pt.nxe,
            max_phys_bits=pt.max_phys_bits,
            phys_bits_known=pt.phys_bits_known,
        )
    except ValueError:
        return None


def _in_kaslr_range(p: _Params, value: int) -> bool:
    return p.page_offset <= value < CPU_ENTRY_AREA_BASE and value % GB == 0
