"""What KASLR chose for an x86-64 Linux kernel, and values in memory that give it away.

:func:`kaslr_report` gathers the randomised bases (the kernel image's ``_text`` and its slide
from the non-KASLR ``0xffffffff81000000``, the image's physical load address, the direct map,
vmalloc, vmemmap and the modules area), each with where it was found, and checks each against
the other sources that say it: VMCOREINFO (``KERNELOFFSET``, ``SYMBOL(_stext)``,
``NUMBER(phys_base)``, ``SYMBOL(mem_section)``) and the page tables (the first kernel-image leaf,
``_text`` translated, the lowest 1 GiB boundary that maps physical 0). The bases themselves
come from :func:`~gdbext.linux.detect.detect_layout`; this module adds the independent evidence.

:func:`pointer_regions` names the virtual ranges a leaked pointer may point into, and
:func:`scan_pointers` finds the 8-byte-aligned values in a buffer that do; reading the memory
is the front end's business.
"""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from gdbext.addr import AddrRange
from gdbext.errors import GdbextError
from gdbext.linux.detect import (
    find_page_offset_base,
    kernel_tables,
    vmcoreinfo_decimal,
    vmcoreinfo_hex,
)
from gdbext.linux.kernelimage import KERNEL_IMAGE_VA
from gdbext.linux.layout import (
    CPU_ENTRY_AREA_BASE,
    GB,
    MODULES_END,
    START_KERNEL,
    START_KERNEL_MAP,
    Base,
    Layout,
    params,
)
from gdbext.plugin.facts import KernelFacts
from gdbext.x86.paging import X86PageTable
from gdbext.x86.records import LeafRun

__all__ = [
    "Evidence",
    "KaslrItem",
    "KaslrReport",
    "PointerRegion",
    "kaslr_report",
    "kernel_text",
    "pointer_regions",
    "scan_pointers",
]

_TOP = 1 << 64

#: Region names of :func:`pointer_regions` (and ``--leaks``' groups), in address order.
KERNEL_IMAGE = "kernel image"
MODULES = "modules"
DIRECT_MAP = "direct map"


@dataclass(frozen=True)
class Evidence:
    """One source's value of a fact: ``value`` (``None``: the source says nothing) and how."""

    value: int | None
    how: str


@dataclass(frozen=True)
class KaslrItem:
    """One fact (``kernel_text``...): its value, how it was found, and the other sources'."""

    key: str
    name: str
    value: int | None
    how: str
    #: What the other sources say, each compared with :attr:`value`.
    checks: tuple[Evidence, ...] = ()

    @property
    def disagreements(self) -> list[Evidence]:
        """The checks whose value differs from :attr:`value`."""
        return [c for c in self.checks if c.value is not None and c.value != self.value]


@dataclass(frozen=True)
class KaslrReport:
    """The facts of :func:`kaslr_report`, in the order they are shown."""

    items: tuple[KaslrItem, ...]
    #: The kernel's top table the page-table evidence was read from.
    kernel_root: int

    def item(self, key: str) -> KaslrItem:
        """The item ``key``; :class:`KeyError` if there is none."""
        for i in self.items:
            if i.key == key:
                return i
        raise KeyError(key)

    @property
    def disagreements(self) -> list[str]:
        """One line per source that disagrees with the value shown."""
        return [
            f"{i.name}: {c.how} says 0x{c.value:x}, not 0x{i.value:x}"
            for i in self.items
            if i.value is not None
            for c in i.disagreements
            if c.value is not None
        ]


def _first_image_leaf(pt: X86PageTable) -> tuple[int, int] | None:
    """The first leaf of the kernel-image mapping (``vaddr``, end of the last leaf), or
    ``None``: Linux frees the mapping below ``_text``, so its first leaf is ``_text``."""
    return _mapped_extent(pt, KERNEL_IMAGE_VA)


def _mapped_extent(pt: X86PageTable, where: AddrRange) -> tuple[int, int] | None:
    """The start of the first leaf in ``where`` and the end of the last, or ``None``."""
    first = last = None
    try:
        for rec in pt.iter_runs(where, aliases="collapse"):
            if type(rec) is LeafRun:
                if first is None:
                    first = rec.vaddr
                last = rec.vaddr + rec.count * rec.page_size
    except GdbextError:
        return None
    return None if first is None or last is None else (first, last)


def _pick(*sources: Evidence) -> tuple[int | None, str, tuple[Evidence, ...]]:
    """The first source with a value, and the others (those that say something)."""
    said = [s for s in sources if s.value is not None]
    if not said:
        return None, "not found", ()
    return said[0].value, said[0].how, tuple(said[1:])


def _base_how(base: Base) -> str:
    return f"{base.source}{': ' + base.how if base.how else ''}"


def kaslr_report(pt: X86PageTable, facts: KernelFacts, layout: Layout) -> KaslrReport:
    """KASLR's choices for the kernel whose tables ``pt`` are (its own tables, fact
    ``kernel_root``, are read when ``pt`` is another root), with each source's evidence.

    ``layout`` is the target's detected layout (:func:`~gdbext.linux.detect.detect_layout`).
    """
    kpt = kernel_tables(pt, facts)
    bases = layout.bases
    image = _first_image_leaf(kpt)
    text_value, text_how, text_checks = _pick(*_text_evidence(facts, image))
    items: list[KaslrItem] = [
        KaslrItem("kernel_text", "kernel image (_text)", text_value, text_how, text_checks)
    ]
    slide = None if text_value is None else (text_value - START_KERNEL) % _TOP
    items.append(
        KaslrItem(
            "kaslr_slide",
            "KASLR slide",
            slide,
            f"_text - 0x{START_KERNEL:x} ({text_how})",
            tuple(
                Evidence(None if c.value is None else (c.value - START_KERNEL) % _TOP, c.how)
                for c in text_checks
            ),
        )
    )
    phys_base = vmcoreinfo_decimal(facts, "NUMBER(phys_base)")
    # The image's first leaf is _text in the tables, whatever VMCOREINFO says of it.
    leaf = text_value if image is None else image[0]
    translated = None if leaf is None else kpt.try_translate(leaf)
    phys_value, phys_how, phys_checks = _pick(
        Evidence(
            None if translated is None else translated.paddr,
            f"page tables: the first kernel-image leaf (_text) translated through the kernel "
            f"root 0x{kpt.root:x}",
        ),
        Evidence(
            None
            if phys_base is None or text_value is None
            else (text_value - START_KERNEL_MAP + phys_base) % _TOP,
            "VMCOREINFO NUMBER(phys_base): _text - __START_KERNEL_map + phys_base",
        ),
    )
    items.append(
        KaslrItem("kernel_phys", "kernel physical load", phys_value, phys_how, phys_checks)
    )
    direct = bases.get("page_offset_base")
    table_direct = find_page_offset_base(kpt)
    direct_checks = []
    if direct is not None and not (direct.source == "page tables" and table_direct is not None):
        direct_checks.append(
            Evidence(table_direct, "page tables: lowest 1 GiB boundary mapping physical 0")
        )
    items.append(_layout_item("direct_map", "direct map (page_offset_base)", direct, direct_checks))
    items.append(_layout_item("vmalloc", "vmalloc base", bases.get("vmalloc_base")))
    vmemmap = bases.get("vmemmap_base")
    vmemmap_checks = []
    vmalloc = bases.get("vmalloc_base")
    if vmemmap is not None and vmemmap.source != "page tables" and vmalloc is not None:
        # struct page of pfn 0 sits at vmemmap_base: the first mapping above vmalloc's area.
        start = vmalloc.value + params(kpt.levels).vmalloc_size
        first = _mapped_extent(kpt, AddrRange(start, CPU_ENTRY_AREA_BASE)) if start < _TOP else None
        vmemmap_checks.append(
            Evidence(
                None if first is None else first[0] - first[0] % GB,
                "page tables: first mapping above VMALLOC_SIZE",
            )
        )
    items.append(_layout_item("vmemmap", "vmemmap base", vmemmap, vmemmap_checks))
    modules = bases.get("modules")
    items.append(_layout_item("modules", "modules area", modules))
    if modules is not None:
        items.append(
            KaslrItem("modules_end", "modules area end", MODULES_END, "fixed: MODULES_END")
        )
    return KaslrReport(tuple(items), kpt.root)


def _text_evidence(facts: KernelFacts, image: tuple[int, int] | None) -> tuple[Evidence, ...]:
    """Where ``_text`` is, by each source, in the order they are believed."""
    offset = vmcoreinfo_hex(facts, "KERNELOFFSET")
    return (
        Evidence(
            None if offset is None else (START_KERNEL + offset) % _TOP,
            "VMCOREINFO KERNELOFFSET",
        ),
        Evidence(vmcoreinfo_hex(facts, "SYMBOL(_stext)"), "VMCOREINFO SYMBOL(_stext)"),
        Evidence(
            None if image is None else image[0], "page-table evidence: first kernel-image leaf"
        ),
    )


def kernel_text(pt: X86PageTable, facts: KernelFacts) -> Evidence:
    """Where the kernel image's ``_text`` is, and how that was found: :func:`kaslr_report`'s
    ``kernel_text`` without the other items (the kernel's tables are walked only when
    VMCOREINFO does not say)."""
    sources = _text_evidence(facts, None)
    if all(s.value is None for s in sources):
        sources = _text_evidence(facts, _first_image_leaf(kernel_tables(pt, facts)))
    value, how, _ = _pick(*sources)
    return Evidence(value, how)


def _layout_item(
    key: str, name: str, base: Base | None, checks: Sequence[Evidence] = ()
) -> KaslrItem:
    if base is None:
        return KaslrItem(key, name, None, "not found", tuple(checks))
    return KaslrItem(key, name, base.value, _base_how(base), tuple(checks))


@dataclass(frozen=True)
class PointerRegion:
    """A virtual range a kernel pointer may point into, named (``kernel image``...)."""

    name: str
    range: AddrRange


def pointer_regions(
    pt: X86PageTable, facts: KernelFacts, layout: Layout, ram_end: int | None
) -> list[PointerRegion]:
    """Where a leaked pointer points, sorted by address: the kernel image as mapped (``_text``
    up to the end of the image mapping's last leaf, in the kernel's tables), the modules area
    as mapped (its first leaf up to the end of its last; none when no module is loaded: the
    area is 1 GiB, where code bytes in user pages often fall) and the direct map
    (``page_offset_base`` up to the end of its last leaf in the kernel's tables; when those
    cannot be read, up to ``ram_end``, the end of physical memory, else the layout's
    direct-map region). The tables decide, not the backend's idea of RAM: a live target and a
    dump of the same stop then search for the same pointers."""
    kpt = kernel_tables(pt, facts)
    out: list[PointerRegion] = []
    image = _first_image_leaf(kpt)
    modules = layout.bases.get("modules")
    if image is not None:
        end = image[1] if modules is None else min(image[1], modules.value)
        out.append(PointerRegion(KERNEL_IMAGE, AddrRange(image[0], end)))
    loaded = None if modules is None else _mapped_extent(kpt, AddrRange(modules.value, MODULES_END))
    if loaded is not None:
        out.append(PointerRegion(MODULES, AddrRange(*loaded)))
    direct = layout.bases.get("page_offset_base")
    if direct is not None:
        span = layout.label(direct.value).end
        mapped = _mapped_extent(kpt, AddrRange(direct.value, span))
        if mapped is not None:
            end = mapped[1]
        elif ram_end is not None:
            end = min(direct.value + ram_end, _TOP)
        else:
            end = span
        out.append(PointerRegion(DIRECT_MAP, AddrRange(direct.value, end)))
    return sorted(out, key=lambda r: r.range.start)


def scan_pointers(
    data: bytes, regions: Sequence[PointerRegion]
) -> Iterator[tuple[int, int, PointerRegion]]:
    """The 8-byte-aligned little-endian values of ``data`` that lie in one of ``regions``
    (sorted, not overlapping): ``(offset, value, region)``, in offset order.

    Every region lies in the higher half, so only words whose top byte is 0xff are decoded:
    the top bytes are taken in one slice (``data[7::8]``) and searched in C, and the words are
    read from one array of them.
    """
    find = data[7::8].find
    i = find(b"\xff")
    if i < 0:
        return
    starts = [r.range.start for r in regions]
    ends = [r.range.end for r in regions]
    words = array("Q")
    words.frombytes(memoryview(data)[: len(data) - len(data) % 8])
    if sys.byteorder != "little":
        words.byteswap()
    while i >= 0:
        value = words[i]
        k = bisect_right(starts, value) - 1
        if k >= 0 and value < ends[k]:
            yield i * 8, value, regions[k]
        i = find(b"\xff", i + 1)
