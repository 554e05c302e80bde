"""``read``'s core: memory as bytes, physical or virtual, with its gaps.

:func:`read_memory` checks a request (``ADDR``, ``SIZE``, physical or through the selected page
table) and returns a :class:`ReadResult`, which reads nothing until it is iterated:

- :meth:`ReadResult.plan` says what a read will find without reading a byte: each page
  translated by the engine (:meth:`~gdbext.x86.paging.X86PageTable.translate`), whatever the
  page size (4 KiB, 2 MiB, 1 GiB), and each frame asked whether the backend holds it
  (:func:`~gdbext.mapper.is_captured`, :func:`~gdbext.mapper.readable_ranges`): :class:`Span`
  pieces (bytes to read) and :class:`Gap` pieces (bytes that cannot be read, and why);
- :meth:`ReadResult.chunks` reads the spans in chunks of at most :data:`CHUNK` bytes:
  :class:`Chunk` pieces (the bytes) and the gaps, in address order. A chunk whose read fails
  (:class:`~gdbext.errors.PhysMemoryError`: outside RAM, not in the dump) is read again page by
  page, and each page that fails is a gap with the backend's reason.

A gap is never zeros: a page that is not mapped, not captured in a dump, or not readable is a
:class:`Gap` with its kind (:data:`NOT_MAPPED`, :data:`NOT_CAPTURED`, :data:`UNREADABLE`,
:data:`BAD_ENTRY`) and reason; adjacent gaps of the same kind and reason are one. Nothing here
prints; the renderers of :mod:`gdbext.render.memory` format the pieces.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from gdbext.addr import AddrRange
from gdbext.defaults import DEFAULT_MAX_SIZE
from gdbext.errors import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    NotCapturedError,
    NotMappedError,
    PhysMemoryError,
    TableNotCapturedError,
    TranslationError,
    UsageError,
)
from gdbext.frontend.commands import RootOptions, open_page_table, root_warnings
from gdbext.geometry import PAGE_SIZE, entry_span, level_name
from gdbext.mapper import PhysMapper, is_captured, readable_ranges
from gdbext.plugin.target import Target
from gdbext.units import format_size
from gdbext.x86.paging import X86PageTable

#: The most bytes read from the backend at once (and held by one :class:`Chunk`).
CHUNK = 1 << 20

#: Gap kinds: no present entry maps the page.
NOT_MAPPED = "not mapped"
#: The page (or a table on the way to it) is in RAM but not in the dump: its bytes are unknown.
NOT_CAPTURED = "not captured"
#: The backend cannot read the frame (outside RAM, refused by the target).
UNREADABLE = "unreadable"
#: An entry on the way the MMU would fault on (reserved bits, a table outside memory).
BAD_ENTRY = "bad entry"


@dataclass(frozen=True)
class ReadOptions:
    """What to read: ``size`` bytes at ``address``, physical or through ``root``'s table."""

    address: int
    size: int
    physical: bool = False
    root: RootOptions = field(default_factory=RootOptions)
    #: Refuse a larger ``size`` (``None`` or 0: no limit).
    max_size: int | None = DEFAULT_MAX_SIZE


@dataclass(frozen=True)
class Span:
    """``size`` bytes at ``address`` to be read at physical ``paddr`` (planned, not read)."""

    address: int
    paddr: int
    size: int

    @property
    def end(self) -> int:
        return self.address + self.size


@dataclass(frozen=True)
class Chunk:
    """Bytes read: ``data`` at ``address`` (virtual, or physical for a physical read), from
    physical ``paddr``."""

    address: int
    paddr: int
    data: bytes

    @property
    def end(self) -> int:
        return self.address + len(self.data)


@dataclass(frozen=True)
class Gap:
    """``size`` bytes at ``address`` that were not read: ``kind`` (one of :data:`NOT_MAPPED`,
    :data:`NOT_CAPTURED`, :data:`UNREADABLE`, :data:`BAD_ENTRY`) and ``reason`` (which entry,
    which frame). ``paddr``: the physical address of its first byte, when it is mapped."""

    address: int
    size: int
    kind: str
    reason: str
    paddr: int | None = None

    @property
    def end(self) -> int:
        return self.address + self.size

    def describe(self) -> str:
        """``not mapped: PD entry not present``; with the frame when the page is mapped."""
        where = "" if self.paddr is None else f" (physical 0x{self.paddr:x})"
        return f"{self.kind}: {self.reason}{where}" if self.reason else f"{self.kind}{where}"

    def joins(self, other: Gap) -> bool:
        """``other`` continues this gap: adjacent, same kind and reason, frames contiguous."""
        if other.address != self.end or (other.kind, other.reason) != (self.kind, self.reason):
            return False
        if self.paddr is None or other.paddr is None:
            return self.paddr is other.paddr
        return other.paddr == self.paddr + self.size


Piece = Span | Gap


@dataclass
class ReadResult:
    """A read to be rendered: nothing is read until :meth:`chunks` (or :meth:`plan`) is
    iterated; the counts fill while it streams."""

    options: ReadOptions
    mapper: PhysMapper
    #: The page table of a virtual read; ``None`` for a physical one.
    page_table: X86PageTable | None = None
    #: One-line warnings about the selected table (``--user-pgd``).
    warnings: list[str] = field(default_factory=list)
    bytes_read: int = 0
    gap_count: int = 0
    gap_bytes: int = 0

    @property
    def address(self) -> int:
        return self.options.address

    @property
    def end(self) -> int:
        return self.options.address + self.options.size

    @property
    def physical(self) -> bool:
        return self.page_table is None

    @property
    def exit_status(self) -> int:
        """0 when every byte was read, 1 when there was a gap (after :meth:`chunks`)."""
        return EXIT_NOT_FOUND if self.gap_count else EXIT_OK

    def plan(self) -> Iterator[Piece]:
        """What a read finds, in address order, without reading: spans and gaps."""
        pieces = self._physical_plan() if self.page_table is None else self._virtual_plan()
        return _joined(pieces)

    def chunks(self) -> Iterator[Chunk | Gap]:
        """The bytes and the gaps, in address order, read in chunks of at most :data:`CHUNK`
        bytes; counted in :attr:`bytes_read`, :attr:`gap_count` and :attr:`gap_bytes`."""
        for piece in _joined_gaps(self._read(self.plan())):
            if isinstance(piece, Gap):
                self.gap_count += 1
                self.gap_bytes += piece.size
            else:
                self.bytes_read += len(piece.data)
            yield piece

    # --- planning ----------------------------------------------------------------------------

    def _physical_plan(self) -> Iterator[Span | Gap]:
        yield from _frames(self.mapper, self.address, self.address, self.options.size, False)

    def _virtual_plan(self) -> Iterator[Span | Gap]:
        pt = self.page_table
        assert pt is not None
        addr, end = self.address, self.end
        while addr < end:
            try:
                leaf = pt.translate(addr)
            except TranslationError as exc:
                stop = end if exc.entry is None else _entry_end(addr, exc.level, end)
                kind, reason = _translation_gap(exc)
                yield Gap(addr, stop - addr, kind, reason)
                addr = stop
                continue
            stop = min(end, addr - (addr & (leaf.page_size - 1)) + leaf.page_size)
            yield from _frames(self.mapper, addr, leaf.paddr, stop - addr, True)
            addr = stop

    # --- reading -----------------------------------------------------------------------------

    def _read(self, plan: Iterator[Piece]) -> Iterator[Chunk | Gap]:
        mapper = self.mapper
        virtual = self.page_table is not None
        for piece in plan:
            if isinstance(piece, Gap):
                yield piece
                continue
            done = 0
            while done < piece.size:
                n = min(CHUNK, piece.size - done)
                addr, paddr = piece.address + done, piece.paddr + done
                try:
                    yield Chunk(addr, paddr, mapper.read(paddr, n))
                except PhysMemoryError:
                    yield from _by_page(mapper, addr, paddr, n, virtual)
                done += n


def read_memory(target: Target, options: ReadOptions) -> ReadResult:
    """A read of ``options.size`` bytes at ``options.address`` on ``target``: physical with
    ``options.physical``, else virtual through the table ``options.root`` selects.

    :raises UsageError: a size of 0, over ``options.max_size``, a range past 2**64, root
        options with a physical read, or a virtual range that is not canonical (its start or
        end, or one that crosses the non-canonical hole between the halves).
    """
    address, size = options.address, options.size
    if size <= 0:
        raise UsageError("read: SIZE must be 1 or more bytes")
    limit = options.max_size
    if limit and size > limit:
        raise UsageError(
            f"read: SIZE {format_size(size)} is over --max-size {format_size(limit)} "
            "(raise it, 0 for no limit)"
        )
    if not 0 <= address < 1 << 64 or address + size > 1 << 64:
        raise UsageError(
            f"read: 0x{address:x}+0x{size:x} goes past the end of the address space (2**64)"
        )
    if options.physical:
        root = options.root
        if root.cr3 is not None or root.kernel or root.user_pgd or root.cpu is not None:
            raise UsageError("read: --phys reads physical memory: it takes no page-table option")
        return ReadResult(options, target.mapper)
    pt = open_page_table(target, options.root)
    _check_canonical(pt, address, address + size - 1)
    return ReadResult(options, target.mapper, pt, root_warnings(pt, options.root))


def _check_canonical(pt: X86PageTable, first: int, last: int) -> None:
    """A virtual range must be canonical from ``first`` to ``last``: one half of the address
    space (what lies between them is no memory, not a gap)."""
    geo = pt.geometry
    if not geo.is_canonical(first):
        raise UsageError(
            f"read: 0x{first:x} is not canonical for {geo.va_bits}-bit virtual addresses"
        )
    if not geo.is_canonical(last) or first < geo.lower_half_end <= last:
        raise UsageError(
            f"read: 0x{first:x}-0x{last + 1:x} crosses the non-canonical hole "
            f"0x{geo.lower_half_end:x}-0x{geo.higher_half_start:x} ({geo.va_bits}-bit "
            "virtual addresses)"
        )


def _entry_end(addr: int, level: int, end: int) -> int:
    """The end of what the entry at ``level`` that holds ``addr`` covers, or ``end``."""
    span = entry_span(level)
    return min(end, (addr & ~(span - 1)) + span)


def _translation_gap(exc: TranslationError) -> tuple[str, str]:
    """The kind and reason of a gap from the engine's error."""
    if isinstance(exc, NotMappedError):
        return NOT_MAPPED, f"{level_name(exc.level)} entry not present"
    if isinstance(exc, TableNotCapturedError):
        return NOT_CAPTURED, f"{level_name(exc.table_level)} table 0x{exc.table:x} not in the dump"
    return BAD_ENTRY, str(exc).removeprefix(f"0x{exc.vaddr:x}: ")


def _frames(
    mapper: PhysMapper, addr: int, paddr: int, size: int, virtual: bool
) -> Iterator[Span | Gap]:
    """The physical ``[paddr, paddr + size)`` (at ``addr``) as spans to read and gaps of what
    the backend says it does not hold: the holes in its readable ranges and the frames it
    says were not captured (page by page, only for a backend that says)."""
    wanted = AddrRange(paddr, paddr + size)
    parts = readable_ranges(mapper, [wanted])
    probe = hasattr(mapper, "is_captured")
    pos = paddr
    for part in parts:
        if part.start > pos:
            yield from _holes(mapper, addr + pos - paddr, pos, part.start - pos, virtual)
        if probe:
            yield from _captured(mapper, addr + part.start - paddr, part.start, part.size, virtual)
        else:
            yield Span(addr + part.start - paddr, part.start, part.size)
        pos = part.end
    if pos < paddr + size:
        yield from _holes(mapper, addr + pos - paddr, pos, paddr + size - pos, virtual)


def _pages(paddr: int, size: int) -> Iterator[tuple[int, int]]:
    """``[paddr, paddr + size)`` cut at 4 KiB boundaries: ``(paddr, size)`` pieces."""
    end = paddr + size
    while paddr < end:
        stop = min(end, (paddr | (PAGE_SIZE - 1)) + 1)
        yield paddr, stop - paddr
        paddr = stop


def _captured(
    mapper: PhysMapper, addr: int, paddr: int, size: int, virtual: bool
) -> Iterator[Span | Gap]:
    """Readable ranges whose frames the backend may still call not captured."""
    for page, n in _pages(paddr, size):
        at = addr + page - paddr
        if is_captured(mapper, page):
            yield Span(at, page, n)
        else:
            yield Gap(at, n, NOT_CAPTURED, "not in the dump", page if virtual else None)


def _holes(mapper: PhysMapper, addr: int, paddr: int, size: int, virtual: bool) -> Iterator[Gap]:
    """What the backend's readable ranges leave out: not captured, or not in its RAM."""
    for page, n in _pages(paddr, size):
        at = addr + page - paddr
        frame = page if virtual else None
        if is_captured(mapper, page):
            yield Gap(at, n, UNREADABLE, "not in the dump's RAM", frame)
        else:
            yield Gap(at, n, NOT_CAPTURED, "not in the dump", frame)


def _by_page(
    mapper: PhysMapper, addr: int, paddr: int, size: int, virtual: bool
) -> Iterator[Chunk | Gap]:
    """A failed read again page by page: the pages that read, and a gap for each that fails."""
    for page, n in _pages(paddr, size):
        at = addr + page - paddr
        try:
            yield Chunk(at, page, mapper.read(page, n))
        except PhysMemoryError as exc:
            kind = NOT_CAPTURED if isinstance(exc, NotCapturedError) else UNREADABLE
            yield Gap(at, n, kind, exc.reason, page if virtual else None)


def _joined(pieces: Iterator[Piece]) -> Iterator[Piece]:
    """``pieces`` with adjacent gaps that :meth:`Gap.joins` joined, and adjacent spans whose
    frames are contiguous joined (up to :data:`CHUNK` bytes)."""
    held: Piece | None = None
    for piece in pieces:
        if held is None:
            held = piece
            continue
        if isinstance(held, Gap) and isinstance(piece, Gap) and held.joins(piece):
            held = Gap(held.address, held.size + piece.size, held.kind, held.reason, held.paddr)
            continue
        if (
            isinstance(held, Span)
            and isinstance(piece, Span)
            and piece.address == held.end
            and piece.paddr == held.paddr + held.size
            and held.size + piece.size <= CHUNK
        ):
            held = Span(held.address, held.paddr, held.size + piece.size)
            continue
        yield held
        held = piece
    if held is not None:
        yield held


def _joined_gaps(pieces: Iterator[Chunk | Gap]) -> Iterator[Chunk | Gap]:
    """``pieces`` with adjacent gaps that :meth:`Gap.joins` joined (a failed chunk read again
    page by page gives a gap a page)."""
    held: Gap | None = None
    for piece in pieces:
        if isinstance(piece, Gap):
            if held is not None and held.joins(piece):
                held = Gap(held.address, held.size + piece.size, held.kind, held.reason, held.paddr)
                continue
            if held is not None:
                yield held
            held = piece
            continue
        if held is not None:
            yield held
            held = None
        yield piece
    if held is not None:
        yield held
