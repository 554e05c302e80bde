"""Where a virtual search looks, from the selected page table and the Linux layout: the
mapping ``--has`` names, and the region ``--pointer-into`` names."""

from __future__ import annotations

from gdbext.addr import AddrRange
from gdbext.errors import NotFoundError, UsageError
from gdbext.flags import (
    FLAGS_MASK,
    HUGE_PAGE,
    NO_EXECUTE,
    PRESENT,
    USER_ACCESSIBLE,
    WRITABLE,
)
from gdbext.frontend.commands import (
    RootOptions,
    WalkOptions,
    open_page_table,
    target_layout,
    walk,
)
from gdbext.permfilter import PermFilter
from gdbext.plugin.target import Target

#: Entry bits the leaves of one run a search reads may differ in: all but those that say what
#: the page is and who may use it (the engine then gives longer runs).
IGNORED_FLAGS = FLAGS_MASK & ~(PRESENT | WRITABLE | USER_ACCESSIBLE | NO_EXECUTE | HUGE_PAGE)

#: Regions ``--pointer-into`` names: (name, the layout region names it covers).
POINTER_REGIONS: dict[str, tuple[str, ...]] = {
    "kernel-text": ("kernel text mapping",),
    "modules": ("module mapping space",),
    "direct-map": ("direct mapping of all physical memory",),
    "vmalloc": ("vmalloc/ioremap space",),
    "vmemmap": ("virtual memory map",),
}


def has_window(
    target: Target,
    root: RootOptions,
    vaddr: int,
    perm: PermFilter | None,
    window: AddrRange | None,
) -> AddrRange:
    """The virtual range ``--has VADDR`` searches: the mapping that contains ``vaddr``, its
    virtually contiguous leaves of one page size and the same permissions, whatever their
    frames and other flags, within ``window`` (``--range``). A search is by virtual address:
    a match across two pages of it is found whether or not their frames are contiguous.

    :raises NotMappedError: ``vaddr`` is not mapped (exit status 1, naming the level).
    :raises NotFoundError: its page does not pass ``perm``, or its mapping misses ``window``.
    """
    walked = walk(target, WalkOptions(root, max_leaves=None, perm=perm, has=vaddr))
    span = walked.has_range(IGNORED_FLAGS, by_va=True)
    if window is None:
        return span
    start, end = max(span.start, window.start), min(span.end, window.end)
    if start >= end:
        raise NotFoundError(
            f"0x{vaddr:x} is mapped by 0x{span.start:x}-0x{span.end:x}, outside --range "
            f"0x{window.start:x}-0x{window.end:x}"
        )
    return AddrRange(start, end)


def pointer_range(target: Target, root: RootOptions, region: str) -> AddrRange:
    """The virtual range ``--pointer-into REGION`` names, from the target's Linux layout.

    :raises UsageError: an unknown region name.
    """
    names = POINTER_REGIONS.get(region)
    if names is None:
        known = ", ".join(POINTER_REGIONS)
        raise UsageError(f"search: --pointer-into: no region {region!r} (regions: {known})")
    layout = target_layout(target, open_page_table(target, root))
    spans = [AddrRange(r.start, r.end) for r in layout.regions if r.name.startswith(names)]
    if not spans:
        raise UsageError(f"search: --pointer-into: the layout has no {region} region")
    return AddrRange(min(s.start for s in spans), max(s.end for s in spans))
