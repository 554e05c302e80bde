"""The lines QEMU's monitor command ``info tlb`` prints, for any walk.

QEMU prints one line per present leaf, ``VA: PA FLAGS``: the canonical virtual address and the
leaf's physical address (bits 12-49, 21-49 or 30-49 by page size) as 16 hex digits, then the
*leaf entry's own* flags ``X G P D A C T U W`` (NX, global, PS, dirty, accessed, PCD, PWT,
user, writable) or ``-``. Bit 7 of a 4 KiB entry (PAT) is not shown.
"""

from __future__ import annotations

from collections.abc import Iterator

from gdbext.commands import WalkResult
from gdbext.flags import FLAGS_MASK
from gdbext.paging import LeafRun

#: QEMU's address masks by page size.
QEMU_ADDR_MASK = {
    1 << 12: 0x3_FFFF_FFFF_F000,
    1 << 21: 0x3_FFFF_FFE0_0000,
    1 << 30: 0x3_FFFF_C000_0000,
}
_FLAG_CHARS = (
    (1 << 63, "X"),
    (1 << 8, "G"),
    (1 << 7, "P"),
    (1 << 6, "D"),
    (1 << 5, "A"),
    (1 << 4, "C"),
    (1 << 3, "T"),
    (1 << 2, "U"),
    (1 << 1, "W"),
)


def qemu_flags(entry: int, page_size: int) -> str:
    if page_size == 1 << 12:
        entry &= ~(1 << 7)
    return "".join(ch if entry & bit else "-" for bit, ch in _FLAG_CHARS)


def render_walk(result: WalkResult) -> Iterator[str]:
    """One ``info tlb`` line per leaf, aliases included, in virtual-address order."""
    flag_cache: dict[tuple[int, int], str] = {}
    for rec in result.runs():
        if type(rec) is not LeafRun:
            continue
        ps = rec.page_size
        mask = QEMU_ADDR_MASK[ps]
        key = (rec.entry & FLAGS_MASK, ps)
        flags = flag_cache.get(key)
        if flags is None:
            flags = flag_cache[key] = qemu_flags(rec.entry, ps)
        pa = rec.entry & mask
        if rec.count == 1:
            yield f"{rec.vaddr:016x}: {pa:016x} {flags}"
            continue
        end = rec.vaddr + rec.count * ps
        yield from [
            f"{va:016x}: {p:016x} {flags}"
            for va, p in zip(
                range(rec.vaddr, end, ps), range(pa, pa + rec.count * ps, ps), strict=True
            )
        ]
