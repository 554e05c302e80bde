"""Walk evidence: the entries on the path to an address, read raw, and their text.

A finding's evidence names the entries the MMU reads, one line per level, as
``"PML4[511] @0x1a0c000 = 0x1a0f063"`` (table index, table address, entry). Where the engine's
:meth:`~gdbext.x86.paging.X86PageTable.translate` gives no
:class:`~gdbext.x86.records.Translation` (an entry the walk did not follow: reserved bits, a
recursive link, a not-present leaf), the path is read again from memory with :func:`raw_path`.

>>> step_text((1, 0x1A0C000, 5, 0x1A0F062))
'PT[5] @0x1a0c000 = 0x1a0f062'
"""

from __future__ import annotations

from collections.abc import Sequence

from gdbext.errors import PhysMemoryError
from gdbext.flags import NO_EXECUTE
from gdbext.geometry import index_shift, level_name
from gdbext.x86.entries import ROOT_ACCESS, access, fold, link_address
from gdbext.x86.paging import X86PageTable

__all__ = ["Step", "path_access", "raw_path", "step_text"]

#: One entry on a path: ``(level, table, index, entry)``.
Step = tuple[int, int, int, int]


def step_text(step: Step) -> str:
    """``"PT[5] @0x1a0c000 = 0x1a0f062"``: one line of walk evidence."""
    level, table, index, entry = step
    return f"{level_name(level)}[{index}] @0x{table:x} = 0x{entry:x}"


def raw_path(pt: X86PageTable, vaddr: int, level: int) -> list[Step]:
    """The entries from the root down to the level-``level`` entry that maps ``vaddr``, read
    raw (each entry's address bits taken as the next table, whatever its flags); it stops
    early at a table that cannot be read."""
    steps: list[Step] = []
    table = pt.root
    for lvl in range(pt.levels, level - 1, -1):
        index = (vaddr >> index_shift(lvl)) & 0x1FF
        try:
            entry = pt.read_entry(table, index)
        except PhysMemoryError:
            break
        steps.append((lvl, table, index, entry))
        table = link_address(entry, pt.rules.level(lvl))  # whatever the flags say
    return steps


def path_access(steps: Sequence[Step], nxe: bool) -> tuple[bool, bool, bool]:
    """``(user, writable, executable)`` that the entries of ``steps`` allow together (U/S and
    R/W ANDed, NX ORed when ``nxe``)."""
    acc = ROOT_ACCESS
    nx_bit = NO_EXECUTE if nxe else 0
    for _, _, _, entry in steps:
        acc = fold(acc, entry, nx_bit)
    return access(acc)
