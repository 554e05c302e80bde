"""Where x86-64 Linux's kernel image lies in physical memory, read from the page tables.

Linux maps its image (text, read-only data, data, ``.bss``, ``.brk``) at ``__START_KERNEL_map``
(0xffffffff80000000, plus the KASLR slide) in every page table it builds, so the tables alone say
which physical ranges hold the image, without symbols and without VMCOREINFO. Two searches use
that: the kernel's ``boot_params`` copy (:mod:`gdbext.linux.e820`) and the pointers to its
VMCOREINFO
(:mod:`gdbext.linux.vmcoreinfo`), both variables of the image's ``.bss``.

:func:`image_parts` lists the image's parts with their writability; :func:`bss_first` orders
them for a search of ``.bss``. On a Debian 6.1 guest the image's highest read-only page is
``idt_table`` (page-aligned ``.bss``, made read-only at boot), and ``boot_params`` lies a few
KiB above it, 19 MiB below the image's end: searching the writable part above the highest
read-only part first, from its bottom, finds it in the first chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

from gdbext.addr import AddrRange
from gdbext.flags import ACCESSED_DIRTY
from gdbext.x86.paging import X86PageTable
from gdbext.x86.records import LeafRun

#: The virtual range of the kernel image's mapping: ``__START_KERNEL_map`` up to the modules
#: (``KERNEL_IMAGE_SIZE`` is 1 GiB with KASLR).
KERNEL_IMAGE_VA = AddrRange(0xFFFF_FFFF_8000_0000, 0xFFFF_FFFF_C000_0000)


@dataclass(frozen=True)
class ImagePart:
    """Physically contiguous pages of the image mapping, all writable or all read-only."""

    #: Physical range.
    range: AddrRange
    writable: bool


def image_parts(pt: X86PageTable) -> list[ImagePart]:
    """The leaves of ``pt`` in :data:`KERNEL_IMAGE_VA`, in virtual-address order, neighbours
    (contiguous in VA and PA) of equal writability joined; empty if nothing is mapped there."""
    parts: list[ImagePart] = []
    last_va = -1
    for r in pt.iter_runs(KERNEL_IMAGE_VA, ignore=ACCESSED_DIRTY):
        if type(r) is not LeafRun:
            continue
        size = r.count * r.page_size
        if parts and last_va == r.vaddr:
            prev = parts[-1]
            if prev.writable == r.writable and prev.range.end == r.paddr:
                parts[-1] = ImagePart(AddrRange(prev.range.start, r.paddr + size), r.writable)
                last_va = r.vaddr + size
                continue
        parts.append(ImagePart(AddrRange(r.paddr, r.paddr + size), r.writable))
        last_va = r.vaddr + size
    return parts


def bss_first(parts: list[ImagePart]) -> list[AddrRange]:
    """The parts' ranges in the order a search for a ``.bss`` variable takes: the writable parts
    above the highest read-only part (``.bss`` and ``.brk``), then the other writable parts,
    then the read-only ones, each group in image order.

    >>> ro, rw = (lambda a, b, w: ImagePart(AddrRange(a, b), w)), True
    >>> order = bss_first([ro(0, 4, False), ro(4, 6, rw), ro(6, 7, False), ro(7, 9, rw)])
    >>> [(r.start, r.end) for r in order]
    [(7, 9), (4, 6), (0, 4), (6, 7)]
    """
    last_ro = max((i for i, p in enumerate(parts) if not p.writable), default=-1)
    above = [p.range for p in parts[last_ro + 1 :]]
    below = [p.range for p in parts[: last_ro + 1] if p.writable]
    return above + below + [p.range for p in parts if not p.writable]
