"""How gdbext reaches physical memory and page-table frames: two tiny protocols.

A :class:`PhysMapper` reads and writes physical bytes; everything else ("read a whole table",
"read one entry") is a free function over it. A :class:`FrameAllocator` hands out and takes
back 4 KiB frames for page tables.

A mapper that must never be written (a dump, a live target the user did not open for writing)
sets ``read_only = True`` and raises :class:`~gdbext.errors.ReadOnlyError` from ``write``;
:func:`is_read_only` reads that attribute without making it part of the protocol. Likewise a
mapper that knows which parts of its RAM it can read (a kdump holds the pages it dumped, nothing
else) may define ``readable_ranges``, which :func:`readable_ranges` asks for, so that a scan of
memory skips what is not there in one step per hole.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import Protocol, runtime_checkable

from gdbext.addr import AddrRange
from gdbext.errors import PhysMemoryError
from gdbext.geometry import ENTRIES_PER_TABLE, PAGE_SIZE, TABLE_SIZE

TABLE_STRUCT = struct.Struct(f"<{ENTRIES_PER_TABLE}Q")
U64 = struct.Struct("<Q")


@runtime_checkable
class PhysMapper(Protocol):
    """Physical memory, as a backend sees it."""

    def read(self, paddr: int, size: int) -> bytes:
        """``size`` bytes at ``paddr``; :class:`~gdbext.errors.PhysMemoryError` if not there."""
        ...

    def write(self, paddr: int, data: bytes) -> None:
        """Store ``data`` at ``paddr``; :class:`~gdbext.errors.ReadOnlyError` if refused."""
        ...


@runtime_checkable
class FrameAllocator(Protocol):
    """Source of 4 KiB physical frames for new page tables."""

    def allocate_frame(self) -> int | None:
        """The physical address of a free 4 KiB frame, or ``None`` if none is left."""
        ...

    def deallocate_frame(self, paddr: int) -> None:
        """Give back a frame that :meth:`allocate_frame` returned."""
        ...


def is_read_only(mapper: PhysMapper) -> bool:
    """True if ``mapper`` declares itself read-only (attribute ``read_only``)."""
    return bool(getattr(mapper, "read_only", False))


def is_captured(mapper: PhysMapper, paddr: int) -> bool:
    """False if ``mapper`` knows that the frame at ``paddr`` is in RAM but not in its dump.

    Dump mappers may define ``is_captured(paddr)``; every other mapper captures what it has.
    A translation that ends in an uncaptured frame is *mapped*, but its bytes are unknown.
    """
    probe = getattr(mapper, "is_captured", None)
    return True if probe is None else bool(probe(paddr))


def readable_ranges(mapper: PhysMapper, ranges: Iterable[AddrRange]) -> Iterator[AddrRange]:
    """The parts of ``ranges`` that ``mapper`` can read, in order (empty parts left out).

    Dump mappers may define ``readable_ranges(start, end)``: the readable parts of ``[start,
    end)`` in address order, each hole skipped in one step (a kdump of 64 GiB that holds 63
    pages yields a few runs, not 16 million page checks). Every other mapper reads what it has:
    ``ranges`` come back as they are, and a read there may still fail.
    """
    probe = getattr(mapper, "readable_ranges", None)
    for r in ranges:
        if not r:
            continue
        if probe is None:
            yield r
            continue
        for part in probe(r.start, r.end):
            start, end = max(part.start, r.start), min(part.end, r.end)
            if start < end:
                yield AddrRange(start, end)


def read_table(mapper: PhysMapper, paddr: int) -> tuple[int, ...]:
    """The 512 entries of the table at ``paddr`` (one 4 KiB read)."""
    return TABLE_STRUCT.unpack(mapper.read(paddr, TABLE_SIZE))


def read_u64(mapper: PhysMapper, paddr: int) -> int:
    """One little-endian 64-bit value, e.g. a single page-table entry."""
    return int(U64.unpack(mapper.read(paddr, 8))[0])


def write_u64(mapper: PhysMapper, paddr: int, value: int) -> None:
    mapper.write(paddr, U64.pack(value))


def write_table(mapper: PhysMapper, paddr: int, entries: tuple[int, ...] | list[int]) -> None:
    mapper.write(paddr, TABLE_STRUCT.pack(*entries))


def readable_chunks(
    mapper: PhysMapper, ranges: Iterable[AddrRange], chunk: int
) -> Iterator[tuple[int, bytes]]:
    """``(paddr, bytes)`` of the readable 4 KiB pages of ``ranges`` (:func:`readable_ranges`,
    page-aligned inwards), in pieces of at most ``chunk`` bytes, each page once; a piece the
    mapper refuses is read a page at a time, the refused pages skipped (not captured, holes)."""
    for part in readable_ranges(mapper, ranges):
        start = part.start + -part.start % PAGE_SIZE
        end = part.end - part.end % PAGE_SIZE
        for pos in range(start, end, chunk):
            n = min(chunk, end - pos)
            try:
                yield pos, mapper.read(pos, n)
                continue
            except PhysMemoryError:
                pass
            for page in range(pos, pos + n, PAGE_SIZE):
                try:
                    data = mapper.read(page, PAGE_SIZE)
                except PhysMemoryError:
                    continue
                yield page, data
