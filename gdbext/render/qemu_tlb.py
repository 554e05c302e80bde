"""The lines QEMU's monitor command ``info tlb`` prints, for any walk.

QEMU prints one line per present leaf, ``VA: PA FLAGS``: the canonical virtual address and the
leaf's physical address (bits 12-49, 21-49 or 30-49 by page size) as 16 hex digits, then the
*leaf entry's own* flags ``X G P D A C T U W`` (NX, global, PS, dirty, accessed, PCD, PWT,
user, writable) or ``-``. Bit 7 of a 4 KiB entry (PAT) is not shown.
"""

from __future__ import annotations

from collections.abc import Iterator

from gdbext.addr import AddrRange
from gdbext.errors import InputError, OutputLimitError, WalkLimitError
from gdbext.flags import FLAGS_MASK
from gdbext.frontend.commands import WalkOptions, WalkResult
from gdbext.geometry import entry_span
from gdbext.x86.records import AliasRun, LeafRun

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
    """One ``info tlb`` line per leaf, aliases included, in virtual-address order.

    The walk collapses tables linked again (``aliases="collapse"``): the lines of such a table
    are made once, from a walk of the range where it was first met, and repeated for every
    other link, shifted in VA. Linux's ESPFIX area (65,536 lines from a few tables) costs a few
    table walks instead of 65,536 records. ``--max-leaves`` and ``--max-lines`` bound the
    lines (a table linked under every entry above it multiplies them).
    """
    flag_cache: dict[tuple[int, int], str] = {}
    templates: dict[tuple[int, int, int], list[tuple[int, str]]] = {}
    options = result.options
    lo, hi = (0, 1 << 64) if options.range is None else (options.range.start, options.range.end)
    limit = _least(options.max_leaves, options.line_limit())
    emitted = 0
    collapse = options.has is None
    for rec in result.runs(aliases="collapse" if collapse else "expand"):
        if type(rec) is LeafRun:
            emitted += rec.count
            if limit is not None and emitted > limit:
                raise _limit_error(options, limit, rec.vaddr)
            yield from _leaf_lines(rec, flag_cache)
        elif type(rec) is AliasRun:
            key = (rec.table, rec.level, rec.first_vaddr)
            template = templates.get(key)
            if template is None:
                template = templates[key] = _template(result, rec, flag_cache)
            span = entry_span(rec.level + 1)
            for base in range(rec.vaddr, rec.end, span):  # one link at a time: bounded memory
                emitted += len(template)
                if limit is not None and emitted > limit:
                    raise _limit_error(options, limit, base)
                # A link inside the range is repeated whole; one at its edge is clipped.
                lines = (
                    template
                    if lo <= base and base + span <= hi
                    else [(offset, rest) for offset, rest in template if lo <= base + offset < hi]
                )
                yield from [f"{base + offset:016x}: {rest}" for offset, rest in lines]


def _least(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _limit_error(options: WalkOptions, limit: int, vaddr: int) -> InputError:
    """Past ``--max-leaves`` (a walk's bound) or past the output's line bound (its default is
    the lower): the error names the option that stopped it."""
    if limit == options.max_leaves:
        return WalkLimitError(limit, vaddr)
    return OutputLimitError("qemu-tlb", limit, vaddr)


def _flags(entry: int, ps: int, flag_cache: dict[tuple[int, int], str]) -> str:
    """The flags column of a leaf ``entry`` of ``ps`` bytes, made once per distinct flags."""
    key = (entry & FLAGS_MASK, ps)
    flags = flag_cache.get(key)
    if flags is None:
        flags = flag_cache[key] = qemu_flags(entry, ps)
    return flags


def _leaf_lines(rec: LeafRun, flag_cache: dict[tuple[int, int], str]) -> list[str]:
    ps = rec.page_size
    flags = _flags(rec.entry, ps, flag_cache)
    pa = rec.entry & QEMU_ADDR_MASK[ps]
    if rec.count == 1:
        return [f"{rec.vaddr:016x}: {pa:016x} {flags}"]
    end = rec.vaddr + rec.count * ps
    return [
        f"{va:016x}: {p:016x} {flags}"
        for va, p in zip(range(rec.vaddr, end, ps), range(pa, pa + rec.count * ps, ps), strict=True)
    ]


def _template(
    result: WalkResult, rec: AliasRun, flag_cache: dict[tuple[int, int], str]
) -> list[tuple[int, str]]:
    """The lines under the table ``rec`` links, as (VA offset in the link's span, the rest of
    the line), from a walk of the span where the table was first met (its whole span, with the
    walk's permission filter)."""
    span = entry_span(rec.level + 1)
    sub = result.page_table.iter_runs(
        AddrRange(rec.first_vaddr, rec.first_vaddr + span),
        aliases="expand",
        max_leaves=result.options.max_leaves,
        perm=result.options.perm,
    )
    out: list[tuple[int, str]] = []
    for leaf in sub:
        if type(leaf) is LeafRun:
            ps = leaf.page_size
            flags = _flags(leaf.entry, ps, flag_cache)
            pa = leaf.entry & QEMU_ADDR_MASK[ps]
            offset = leaf.vaddr - rec.first_vaddr
            out += [(offset + i * ps, f"{pa + i * ps:016x} {flags}") for i in range(leaf.count)]
    return out
