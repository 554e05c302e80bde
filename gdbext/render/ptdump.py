"""``--format ptdump``: the lines of Linux's ``/sys/kernel/debug/page_tables`` for any walk.

The walk is :class:`gdbext.linux.ptdump.PtdumpWalk`'s (Linux's ptdump walk, replayed on the
tables); this module formats its records as the kernel prints them::

    ---[ High Kernel Mapping ]---
    0xffffffff80000000-0xffffffff81000000          16M                               pmd
    0xffffffff81000000-0xffffffff82000000          16M     ro         PSE     GLB x  pmd

**Protections.** The flags are those of the raw prot (``val & PTE_FLAGS_MASK``): bit 12 of a
large page, its PAT bit, is a frame bit to that mask, so ``PAT`` shows for 4 KiB pages only,
exactly as the kernel prints it. Tables that cannot be read are listed after the dump as ``#``
lines.
"""

from __future__ import annotations

from collections.abc import Iterator

from gdbext.defaults import DEFAULT_MAX_LINES_PTDUMP
from gdbext.errors import OutputLimitError, UsageError
from gdbext.flags import (
    GLOBAL,
    HUGE_PAGE,
    NO_EXECUTE,
    PAT_LARGE,
    PRESENT,
    USER_ACCESSIBLE,
    WRITABLE,
    PageTableFlags,
)
from gdbext.frontend.commands import WalkResult
from gdbext.geometry import level_name
from gdbext.linux.layout import Marker
from gdbext.linux.ptdump import PtdumpRecord, PtdumpWalk, Series, Skipped
from gdbext.linux.ptdump_rules import LEVEL_NAMES
from gdbext.x86.records import Anomaly

UNITS = "BKMGTPE"
_TOP = 1 << 64
_PWT = int(PageTableFlags.WRITE_THROUGH)
_PCD = int(PageTableFlags.NO_CACHE)
_PAT_4K = HUGE_PAGE
_NO_FLAGS = " " * 30


def prot_flags(prot: int, level: int) -> str:
    """The fixed-width flag tokens ptdump prints for ``prot`` at ``level`` (30 characters).

    >>> prot_flags(0x8000000000000163, 4)
    '    RW                 GLB NX '
    >>> prot_flags(0x1F9, 3)
    '    ro PWT PCD PSE     GLB x  '
    >>> prot_flags(0, 2) == " " * 30
    True
    """
    if not prot & PRESENT:
        return _NO_FLAGS
    return (
        ("USR " if prot & USER_ACCESSIBLE else "    ")
        + ("RW " if prot & WRITABLE else "ro ")
        + ("PWT " if prot & _PWT else "    ")
        + ("PCD " if prot & _PCD else "    ")
        + ("PSE " if level <= 3 and prot & HUGE_PAGE else "    ")
        + (
            "PAT "
            if (level == 4 and prot & _PAT_4K) or (level in (2, 3) and prot & PAT_LARGE)
            else "    "
        )
        + ("GLB " if prot & GLOBAL else "    ")
        + ("NX " if prot & NO_EXECUTE else "x  ")
    )


def size_field(delta: int) -> str:
    """``%9lu%c``: the size divided by 1024 while it divides, with its unit from ``BKMGTPE``.

    >>> size_field(0x2000), size_field(0x1800), size_field(1 << 60)
    ('        8K', '        6K', '        1E')
    """
    unit = 0
    while not delta & 1023 and unit < len(UNITS) - 1:
        delta >>= 10
        unit += 1
    return f"{delta:9d}{UNITS[unit]}"


def ptdump_line(start: int, end: int, level: int, prot: int) -> str:
    """One ptdump line for the series ``[start, end)`` (``end`` taken modulo 2^64).

    >>> ptdump_line(0xFFFFFFFF81000000, 0xFFFFFFFF82000000, 3, 0x1A1)
    '0xffffffff81000000-0xffffffff82000000          16M     ro         PSE     GLB x  pmd'
    """
    end %= _TOP
    return (
        f"0x{start:016x}-0x{end:016x}   {size_field((end - start) % _TOP)} "
        f"{prot_flags(prot, level)}{LEVEL_NAMES[level]}"
    )


def record_line(rec: PtdumpRecord) -> str:
    """The line of one record of the walk.

    >>> record_line(Skipped(1)), record_line(Marker(0, "User Space"))
    ('... 1 entry skipped ... ', '---[ User Space ]---')
    """
    if type(rec) is Series:
        return ptdump_line(rec.start, rec.end, rec.level, rec.prot)
    if type(rec) is Marker:
        return f"---[ {rec.name} ]---"
    if type(rec) is Skipped:
        return f"... {rec.count} entr{'y' if rec.count == 1 else 'ies'} skipped ... "
    assert type(rec) is Anomaly
    return (
        f"# 0x{rec.vaddr:016x}: {level_name(rec.level)}[{rec.index}] entry 0x{rec.entry:x} "
        f"in table 0x{rec.table:x}: {rec.kind} ({rec.detail})"
    )


def render_walk(result: WalkResult) -> Iterator[str]:
    """The walk in ptdump's line format, with the sections of the result's Linux layout.

    Shared tables are not collapsed (ptdump prints every link's series), so a table linked
    under every entry above it can multiply the lines: they stop at ``--max-lines`` (default
    :data:`~gdbext.defaults.DEFAULT_MAX_LINES_PTDUMP`) with
    :class:`~gdbext.errors.OutputLimitError`."""
    options = result.options
    if options.perm is not None:
        raise UsageError("--format ptdump prints every entry, holes too: --filter does not apply")
    rng = result.has_range() if options.has is not None else options.range
    lo, hi = (0, _TOP) if rng is None else (rng.start, rng.end)
    dump = PtdumpWalk(result.page_table, result.layout, lo, hi, options.max_leaves)
    stats = result.stats
    limit = options.line_limit(DEFAULT_MAX_LINES_PTDUMP)
    written = 0
    try:
        for batch in dump.batches():
            stats["leaves"] = dump.leaves
            if limit is not None and written + len(batch) > limit:
                yield from map(record_line, batch[: limit - written])
                over = batch[limit - written]
                at = over.start if type(over) is Series else dump.start
                raise OutputLimitError("ptdump", limit, at)
            written += len(batch)
            yield from map(record_line, batch)
    finally:
        stats["leaves"] = dump.leaves
        stats["anomalies"] = len(dump.anomalies)
