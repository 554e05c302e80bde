"""Which Linux layout a target has: its bases, from what the target says and from its tables.

:func:`detect_layout` takes each base from the best source there is (the backend's facts,
VMCOREINFO, the page tables) and falls back to the documented default where none says, or
where what was found does not hold together (:func:`~gdbext.linux.layout.bases_problem`);
:func:`labels_wanted` says whether text output labels its lines with the layout at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from gdbext.addr import AddrRange
from gdbext.errors import GdbextError
from gdbext.flags import ACCESSED_DIRTY
from gdbext.geometry import index_shift
from gdbext.linux.layout import (
    CPU_ENTRY_AREA_BASE,
    GB,
    START_KERNEL_MAP,
    Base,
    Layout,
    Params,
    bases_problem,
    layout_of,
    params,
    resolve_bases,
)
from gdbext.linux.physoffset import find_direct_map_base
from gdbext.plugin.facts import KernelFacts
from gdbext.x86.entries import is_leaf, link_address
from gdbext.x86.paging import X86PageTable
from gdbext.x86.records import LeafRun
from gdbext.x86.runs import present_indices

__all__ = [
    "detect_layout",
    "find_page_offset_base",
    "kernel_tables",
    "labels_wanted",
    "vmcoreinfo_decimal",
    "vmcoreinfo_hex",
]

_TOP = 1 << 64


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


#: What :func:`int` reads in base 16 and 10 (sign, ``0x``, underscores between digits).
_HEX = re.compile(r"[+-]?(?:0[xX]_?)?[0-9a-fA-F](?:_?[0-9a-fA-F])*")
_DEC = re.compile(r"[+-]?[0-9](?:_?[0-9])*")


def _number(vmci: Mapping[str, str], key: str, syntax: re.Pattern[str], base: int) -> int | None:
    """VMCOREINFO's ``key`` as a number (modulo 2^64), or ``None`` if absent or not one."""
    text = vmci.get(key)
    if text is None or not syntax.fullmatch(text.strip()):
        return None
    return int(text.strip(), base) % _TOP


def _hex(vmci: Mapping[str, str], key: str) -> int | None:
    return _number(vmci, key, _HEX, 16)


def _dec(vmci: Mapping[str, str], key: str) -> int | None:
    return _number(vmci, key, _DEC, 10)


def vmcoreinfo_hex(facts: KernelFacts, key: str) -> int | None:
    """VMCOREINFO's hexadecimal ``key`` (``KERNELOFFSET``, ``SYMBOL(_stext)``), modulo 2^64."""
    return _hex(_vmcoreinfo(facts), key)


def vmcoreinfo_decimal(facts: KernelFacts, key: str) -> int | None:
    """VMCOREINFO's decimal ``key`` (``NUMBER(phys_base)``, signed), modulo 2^64."""
    return _dec(_vmcoreinfo(facts), key)


def find_page_offset_base(pt: X86PageTable) -> int | None:
    """The direct map's base, found in the tables: the lowest 1 GiB-aligned address in the
    randomisable range that maps physical address 0.

    Linux maps all RAM from physical 0 (the ISA range is always mapped) at ``page_offset_base``,
    which KASLR aligns to 1 GiB; nothing else in that range maps physical 0 at a 1 GiB boundary
    below it. Only the tables above the leaves are read, one translation per populated 1 GiB.
    """
    p = params(pt.levels)
    for va in _populated_gigabytes(pt, p.page_offset, CPU_ENTRY_AREA_BASE):
        t = pt.try_translate(va)
        if t is not None and t.paddr == 0:
            return va
    return None


def _populated_gigabytes(pt: X86PageTable, lo: int, hi: int) -> Iterator[int]:
    """Each 1 GiB-aligned address in ``[lo, hi)`` whose PDPT entry is present, in order."""

    def walk(table: int, level: int, base: int) -> Iterator[int]:
        shift = index_shift(level)
        rules = pt.rules.level(level)
        try:
            entries = pt.read_table(table)
        except GdbextError:
            return
        for i in present_indices(entries):
            e = entries[i]
            va = base + (i << shift)
            if level == pt.levels:
                va = pt.geometry.canonicalize(va)
            if va + (1 << shift) <= lo or va >= hi:
                continue
            if level == 3:
                yield va
            elif not is_leaf(e, rules):
                yield from walk(link_address(e, rules), level - 1, va)

    yield from walk(pt.root, pt.levels, 0)


def _first_leaf(pt: X86PageTable, lo: int, hi: int, skip_offset: int | None = None) -> int | None:
    """The address of the first leaf in ``[lo, hi)`` (whose VA - PA is not ``skip_offset``).

    Runs group leaves whatever their ACCESSED and DIRTY bits, as text output's walk does, so
    that that walk finds the tables summarised here already (the first leaf is the same:
    within a run VA - PA does not change).
    """
    try:
        for rec in pt.iter_runs(AddrRange(lo, hi), aliases="collapse", ignore=ACCESSED_DIRTY):
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
            return int.from_bytes(pt.mapper.read(t.paddr, 8), "little")
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
    p = params(levels)
    vmci = _vmcoreinfo(facts)
    pt = kernel_tables(pt, facts)

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

    def build(bases: Mapping[str, Base], image: Mapping[str, Base | None]) -> Layout | None:
        """The layout of these bases, or ``None`` if they do not hold together."""
        resolved = resolve_bases(
            levels=levels,
            page_offset_base=bases.get("page_offset_base"),
            vmalloc_base=bases.get("vmalloc_base"),
            vmemmap_base=bases.get("vmemmap_base"),
            kernel_image_start=image.get("kernel_image_start"),
            kernel_offset=image.get("kernel_offset"),
            kernel_image_size=image.get("kernel_image_size"),
        )
        if bases_problem(levels, resolved) is not None:
            return None
        return layout_of(levels, resolved)

    if build({}, image) is None:
        image = {}  # VMCOREINFO values that do not fit the layout: use the defaults
    # Drop found bases, last first, until the layout holds together.
    for drop in ("", "vmemmap_base", "vmalloc_base", "page_offset_base"):
        found.pop(drop, None)
        layout = build(found, image)
        if layout is not None:
            return layout
    raise AssertionError("the default layout is consistent")  # pragma: no cover


def kernel_tables(pt: X86PageTable, facts: KernelFacts) -> X86PageTable:
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
    """``pt``'s paging mode with the top table at ``root``; ``None`` if ``root`` is not a
    table address there."""
    if root & ~pt.addr_mask:
        return None
    return pt.with_root(root)


def _in_kaslr_range(p: Params, value: int) -> bool:
    return p.page_offset <= value < CPU_ENTRY_AREA_BASE and value % GB == 0
