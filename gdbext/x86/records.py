"""What the paging engine returns: translations, walk records and the results of changes.

Plain values (named tuples: cheap to make, and cheap to declare at start-up, where every
dataclass costs its generated methods), made by :mod:`gdbext.x86.paging`, :mod:`gdbext.x86.walk`
and :mod:`gdbext.x86.mutate` and read by everything above them. The ``new_*`` functions build the
named tuples from one tuple of fields without the keyword handling of their ``__new__``: the walk
makes many of them.

>>> run = LeafRun(0xffff800000000000, 0x200000, 3, 0x1000, 0x200063, False, True, True)
>>> hex(run.end), [hex(m.paddr) for m in run.mappings()]
('0xffff800000003000', ['0x200000', '0x201000', '0x202000'])
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from itertools import repeat
from typing import NamedTuple

from gdbext.addr import hex_repr
from gdbext.errors import NotCapturedError, PhysMemoryError
from gdbext.flags import FLAGS_MASK, PageTableFlags
from gdbext.x86.tlbflush import Flush

__all__ = [
    "AliasRun",
    "Anomaly",
    "Batch",
    "CleanUp",
    "LeafRun",
    "Mapping",
    "Translation",
    "Unmapped",
    "WalkRecord",
    "WalkStep",
    "missing_table",
    "new_mapping",
    "new_run",
    "new_step",
    "new_translation",
]


@hex_repr("table", "entry")
class WalkStep(NamedTuple):
    """One level of a walk: the table read, the index used and the raw entry found."""

    level: int
    table: int
    index: int  # type: ignore[assignment]  # shadows tuple.index on purpose (public name)
    entry: int


@hex_repr("vaddr", "paddr", "page_size", "entry")
class Translation(NamedTuple):
    """A successful translation of ``vaddr``."""

    vaddr: int
    paddr: int
    page_size: int
    #: The raw leaf entry.
    entry: int
    #: The level of the leaf (1 for 4 KiB, 2 for 2 MiB, 3 for 1 GiB).
    level: int
    user: bool
    writable: bool
    executable: bool
    steps: tuple[WalkStep, ...]

    @property
    def flags(self) -> PageTableFlags:
        """The leaf entry's own flag bits."""
        return PageTableFlags(self.entry & FLAGS_MASK)

    @property
    def frame(self) -> int:
        """Physical address of the start of the page."""
        return self.paddr - (self.vaddr & (self.page_size - 1))


@hex_repr("vaddr", "paddr", "page_size", "entry")
class Mapping(NamedTuple):
    """One leaf: a page of ``page_size`` bytes at ``vaddr`` mapped to ``paddr``."""

    vaddr: int
    paddr: int
    page_size: int
    #: The raw leaf entry.
    entry: int
    user: bool
    writable: bool
    executable: bool

    @property
    def flags(self) -> PageTableFlags:
        return PageTableFlags(self.entry & FLAGS_MASK)


new_mapping = partial(tuple.__new__, Mapping)
new_step = partial(tuple.__new__, WalkStep)
new_translation = partial(tuple.__new__, Translation)


@hex_repr("vaddr", "paddr", "page_size", "entry")
class LeafRun(NamedTuple):
    """``count`` consecutive leaves of one table, contiguous in VA and PA, with equal flags.

    The leaves' entries differ only by their address, except in the bits a walk was told to
    ignore (:meth:`~gdbext.x86.paging.X86PageTable.iter_runs`'s ``ignore``).
    """

    vaddr: int
    paddr: int
    count: int  # type: ignore[assignment]  # shadows tuple.count on purpose (public name)
    page_size: int
    #: The first leaf's raw entry.
    entry: int
    user: bool
    writable: bool
    executable: bool

    @property
    def end(self) -> int:
        """Exclusive end of the virtual range."""
        return self.vaddr + self.count * self.page_size

    @property
    def size(self) -> int:
        return self.count * self.page_size

    @property
    def flags(self) -> PageTableFlags:
        return PageTableFlags(self.entry & FLAGS_MASK)

    def mappings(self) -> Iterator[Mapping]:
        """The run's leaves, one :class:`Mapping` each."""
        ps, n = self.page_size, self.count
        return map(
            new_mapping,
            zip(
                range(self.vaddr, self.vaddr + n * ps, ps),
                range(self.paddr, self.paddr + n * ps, ps),
                repeat(ps, n),
                range(self.entry, self.entry + n * ps, ps),
                repeat(self.user, n),
                repeat(self.writable, n),
                repeat(self.executable, n),
                strict=True,
            ),
        )


new_run = partial(tuple.__new__, LeafRun)


@hex_repr("vaddr", "end", "table", "first_vaddr", "mapped")
class AliasRun(NamedTuple):
    """``count`` consecutive entries that link a table already walked elsewhere.

    Only produced by :meth:`~gdbext.x86.paging.X86PageTable.iter_runs` with
    ``aliases="collapse"``. The linked table (at ``level``) was first walked under
    ``first_vaddr``; each link maps ``leaves`` leaves (``mapped`` bytes) again. ``user``,
    ``writable`` and ``executable`` are what the path down to the linked table allows (each
    leaf's own bits are ANDed in, as ever); ``same_access`` says whether that path allows the
    same as the path of the first walk, so that every leaf has the same effective permissions
    as there.
    """

    vaddr: int
    end: int
    count: int  # type: ignore[assignment]  # shadows tuple.count on purpose (public name)
    table: int
    level: int
    first_vaddr: int
    leaves: int
    mapped: int
    user: bool
    writable: bool
    executable: bool
    same_access: bool = True


@hex_repr("vaddr", "table", "entry")
class Anomaly(NamedTuple):
    """Something a walk found and did not follow.

    ``kind`` is one of ``"reserved-bits"``, ``"huge-page-forbidden"``, ``"recursive"`` (the
    entry links a table that is already on the path from the root, such as a bootloader's
    recursive index), ``"table-outside-ram"`` or ``"table-not-captured"`` (in RAM, but not in
    the dump: unknown whether anything below it is mapped).
    """

    kind: str
    vaddr: int
    level: int
    table: int
    index: int  # type: ignore[assignment]  # shadows tuple.index on purpose (public name)
    entry: int
    detail: str = ""


def missing_table(
    exc: PhysMemoryError, va: int, level: int, parent: int, index: int, entry: int, table: int
) -> Anomaly:
    """The anomaly for a table that could not be read: outside RAM, or not in the dump."""
    kind = "table-not-captured" if isinstance(exc, NotCapturedError) else "table-outside-ram"
    return Anomaly(kind, va, level + 1, parent, index, entry, f"table 0x{table:x}")


WalkRecord = LeafRun | AliasRun | Anomaly
#: What the walk passes along internally: the records of about one table.
Batch = list[WalkRecord]


@hex_repr("vaddr", "paddr", "page_size", "entry")
class Unmapped(NamedTuple):
    """What :meth:`~gdbext.x86.paging.X86PageTable.unmap` removed. (This and :class:`CleanUp`
    are named tuples: every command that opens a page table imports them, and making a
    dataclass costs start-up time.)"""

    vaddr: int
    paddr: int
    page_size: int
    entry: int
    flushes: tuple[Flush, ...]


class CleanUp(NamedTuple):
    """What :meth:`~gdbext.x86.paging.X86PageTable.clean_up` freed (table frames) and the
    flushes it required."""

    freed: tuple[int, ...]
    #: Empty tables left in place because more than one entry links them.
    shared: tuple[int, ...]
    flushes: tuple[Flush, ...]
