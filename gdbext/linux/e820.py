"""Linux's e820 memory map, read from a ``struct boot_params`` (the "zero page") in a dump.

Linux on x86 receives its physical memory map from the firmware as e820 entries in
``struct boot_params`` (``arch/x86/include/uapi/asm/bootparam.h``), and copies that structure
into its own ``boot_params`` variable early in boot. Both copies stay in memory, so a dump of a
running kernel holds the map. :func:`scan_boot_params` finds candidates by the setup header's
magic ``"HdrS"`` and validates them; :func:`choose_boot_params` prefers the kernel's own copy
(the one inside the kernel image); :func:`kernel_boot_params` finds that copy without reading
the rest of RAM: it searches the kernel image's ranges in a given order (``.bss`` first, see
:mod:`gdbext.linux.kernelimage`), and its answer is the one :func:`choose_boot_params` would make
of a
full scan.
:meth:`BootParams.regions` converts the entries to the heap locator's
:class:`~gdbext.heap.MemoryRegion` (type 1, RAM, is ``Usable``).

Scans read only what the mapper can read (:func:`~gdbext.mapper.readable_ranges`): a kdump that
describes 64 GiB and holds 63 pages costs 63 pages.

Everything here is a pure function over a :class:`~gdbext.mapper.PhysMapper` and RAM ranges.

>>> table = E820_ENTRY.pack(addr=0, size=0x9FC00, type=1) + E820_ENTRY.pack(
...     addr=0x100000, size=0x7EE0000, type=1)
>>> blob = BOOT_PARAMS.pack(e820_entries=2, boot_flag=0xAA55, jump=0, header=SETUP_MAGIC,
...                         version=0x20F, e820_table=table)
>>> bp = parse_boot_params(blob, 0x7000)
>>> [(hex(r.start), hex(r.end), r.kind) for r in bp.regions()]
[('0x0', '0x9fc00', 'Usable'), ('0x100000', '0x7fe0000', 'Usable')]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from gdbext.addr import AddrRange
from gdbext.errors import InputError, NotFoundError, PhysMemoryError
from gdbext.formats.bootparams import (
    BOOT_FLAG_VALUE,
    BOOT_PARAMS,
    E820_ENTRY,
    E820_MAX_ENTRIES,
    SETUP_MAGIC,
)
from gdbext.heap import USABLE, MemoryRegion
from gdbext.mapper import PhysMapper, readable_chunks, readable_ranges
from gdbext.units import shown

__all__ = [
    "BootParams",
    "E820Entry",
    "choose_boot_params",
    "e820_kind",
    "kernel_boot_params",
    "parse_boot_params",
    "read_boot_params",
    "scan_boot_params",
]

# --- struct boot_params (the zero page, :mod:`gdbext.formats.bootparams`) ---------------------

BOOT_PARAMS_SIZE = BOOT_PARAMS.size
E820_ENTRIES_OFFSET = BOOT_PARAMS.offset("e820_entries")
HEADER_OFFSET = BOOT_PARAMS.offset("header")
E820_TABLE_OFFSET = BOOT_PARAMS.offset("e820_table")
#: ``struct boot_params`` holds 64-bit fields: every copy is at least 8-byte aligned.
BOOT_PARAMS_ALIGN = 8

#: e820 types (``enum e820_type``) by name; the first five as the rust-osdev bootloader names
#: the regions it converts from e820.
E820_TYPES = {
    1: USABLE,
    2: "Reserved",
    3: "AcpiReclaimable",
    4: "AcpiNvs",
    5: "BadMemory",
    7: "Pmem",
    12: "Pram",
    128: "ReservedKern",
    0xEFFFFFFF: "SoftReserved",
}

#: Bytes read per step of the scan (pages that cannot be read are then tried one by one).
SCAN_CHUNK = 1 << 20
#: The first read of a kernel-image search: the copy tends to lie near where it starts.
FIRST_CHUNK = 64 << 10
_PAGE = 0x1000
#: At most this many magic hits are validated (memory full of copies is not a reason to hang).
MAX_HITS = 1 << 16


def e820_kind(type_: int) -> str:
    """The region kind of an e820 type: ``"Usable"`` for 1 (RAM), ``"Unknown(N)"`` if unknown.

    >>> e820_kind(1), e820_kind(4), e820_kind(99)
    ('Usable', 'AcpiNvs', 'Unknown(99)')
    """
    return E820_TYPES.get(type_, f"Unknown({type_})")


@dataclass(frozen=True)
class E820Entry:
    """One e820 entry: ``size`` bytes at physical ``addr`` of ``type`` (1 = RAM)."""

    addr: int
    size: int
    type: int

    @property
    def end(self) -> int:
        return self.addr + self.size

    @property
    def kind(self) -> str:
        return e820_kind(self.type)


@dataclass(frozen=True)
class BootParams:
    """A validated ``struct boot_params`` at physical address ``paddr``."""

    paddr: int
    entries: tuple[E820Entry, ...]
    #: ``hdr.version``, the boot protocol version (e.g. 0x20f).
    version: int
    #: ``hdr.boot_flag`` is 0xAA55.
    boot_flag: bool

    def regions(self) -> list[MemoryRegion]:
        """The entries as memory regions, in table order (type 1 is ``"Usable"``)."""
        return [MemoryRegion(e.addr, e.end, e.kind) for e in self.entries]


def _invalid(data: bytes) -> str | None:
    """Why ``data`` (the 4 KiB of a candidate) is not a boot_params with an e820 map, or None."""
    if len(data) < BOOT_PARAMS_SIZE:
        return f"only {len(data)} bytes"
    if data[HEADER_OFFSET : HEADER_OFFSET + 4] != SETUP_MAGIC:
        return f"no setup header magic {shown(SETUP_MAGIC)} at +0x{HEADER_OFFSET:x}"
    count = data[E820_ENTRIES_OFFSET]
    if not 1 <= count <= E820_MAX_ENTRIES:
        return f"e820_entries (+0x{E820_ENTRIES_OFFSET:x}) is {count}, not 1..{E820_MAX_ENTRIES}"
    usable = False
    table = data[E820_TABLE_OFFSET : E820_TABLE_OFFSET + count * E820_ENTRY.size]
    for i, (addr, size, type_) in enumerate(E820_ENTRY.struct.iter_unpack(table)):
        if size == 0 or addr + size > 1 << 64 or type_ == 0:
            return f"e820 entry {i} (0x{addr:x} +0x{size:x} type {type_}) is not valid"
        usable |= type_ == 1
    if not usable:
        return "the e820 table has no RAM (type 1) entry"
    return None


def parse_boot_params(data: bytes, paddr: int) -> BootParams | None:
    """The boot_params in ``data`` (read at ``paddr``), or ``None`` if it is not one."""
    if _invalid(data) is not None:
        return None
    fields = BOOT_PARAMS.unpack(data)
    count = fields["e820_entries"]
    table = fields["e820_table"][: count * E820_ENTRY.size]
    entries = tuple(E820Entry(a, s, t) for a, s, t in E820_ENTRY.struct.iter_unpack(table))
    return BootParams(paddr, entries, fields["version"], fields["boot_flag"] == BOOT_FLAG_VALUE)


def read_boot_params(mapper: PhysMapper, paddr: int) -> BootParams:
    """The boot_params at ``paddr``; :class:`InputError` saying what is wrong if it is not one.

    Reads outside the memory raise :class:`~gdbext.errors.PhysMemoryError`.
    """
    data = mapper.read(paddr, BOOT_PARAMS_SIZE)
    reason = _invalid(data)
    if reason is not None:
        raise InputError(f"no Linux boot_params at physical 0x{paddr:x}: {reason}")
    found = parse_boot_params(data, paddr)
    assert found is not None
    return found


@dataclass
class _Scan:
    """What a scan has done so far: bytes searched, aligned candidates examined."""

    scanned: int = 0
    hits: int = 0


def scan_boot_params(mapper: PhysMapper, ram: Iterable[AddrRange]) -> tuple[list[BootParams], int]:
    """Every valid boot_params in the readable memory of ``ram``, and the bytes scanned.

    A candidate is an 8-byte-aligned address whose +0x202 holds ``"HdrS"``; it is kept when
    :func:`parse_boot_params` accepts its 4 KiB (at most :data:`MAX_HITS` are examined).
    """
    found: list[BootParams] = []
    scan = _Scan()
    for at, blob in _setup_magic(mapper, ram, scan):
        paddr = at - HEADER_OFFSET
        if paddr < 0 or paddr % BOOT_PARAMS_ALIGN:
            continue
        scan.hits += 1
        if blob is None:
            try:
                blob = mapper.read(paddr, BOOT_PARAMS_SIZE)
            except PhysMemoryError:
                continue
        candidate = parse_boot_params(blob, paddr)
        if candidate is not None:
            found.append(candidate)
    return found, scan.scanned


def _setup_magic(
    mapper: PhysMapper, ram: Iterable[AddrRange], scan: _Scan
) -> Iterator[tuple[int, bytes | None]]:
    """The physical addresses of ``"HdrS"`` in the readable memory of ``ram``, until
    :data:`MAX_HITS` candidates were examined, each with the 4 KiB of its boot_params when they
    were read already (``None``: read them).

    Through the mapper's own ``find(needle, start, end)`` when it has one (a dump's
    :class:`~gdbext_dump.segments.SegmentMapper` searches its file in place, so a segment whose
    memory size claims far more than its file holds, zero fill, costs nothing); otherwise each
    RAM range is read once, in :data:`SCAN_CHUNK` pieces, skipping pages that cannot be read
    (not captured).
    """
    finder = getattr(mapper, "find", None)
    if callable(finder):
        for r in readable_ranges(mapper, ram):
            scan.scanned += r.end - r.start
            pos = r.start
            while scan.hits < MAX_HITS and (at := finder(SETUP_MAGIC, pos, r.end)) >= 0:
                yield at, None
                pos = at + 1
        return
    for base, data in readable_chunks(mapper, ram, SCAN_CHUNK):
        scan.scanned += len(data)
        pos = data.find(SETUP_MAGIC)
        while pos >= 0 and scan.hits < MAX_HITS:
            start = pos - HEADER_OFFSET
            inside = start >= 0 and start + BOOT_PARAMS_SIZE <= len(data)
            yield base + pos, data[start : start + BOOT_PARAMS_SIZE] if inside else None
            pos = data.find(SETUP_MAGIC, pos + 1)


def kernel_boot_params(
    mapper: PhysMapper, kernel_image: Sequence[AddrRange], ram: Sequence[AddrRange]
) -> BootParams | None:
    """The kernel's own boot_params, searched for in ``kernel_image`` only; ``None`` if none.

    :param kernel_image: the physical ranges of the kernel image (its mapping at
        ``__START_KERNEL_map``), in the order to search them (see
        :func:`gdbext.linux.kernelimage.bss_first`).
    :param ram: the RAM ranges; only the parts of the image inside them are read.

    Each range is read from its bottom up, in chunks that grow from :data:`FIRST_CHUNK` to
    :data:`SCAN_CHUNK`, and the search stops at the first valid copy wholly inside the range:
    the copy :func:`choose_boot_params` picks from a scan of all memory whenever that scan finds
    one inside the image. On a live target that is a few KiB instead of all of RAM.
    """
    for image in kernel_image:
        parts = [
            AddrRange(max(image.start, r.start), min(image.end, r.end))
            for r in sorted(ram)
            if max(image.start, r.start) < min(image.end, r.end)
        ]
        for piece in readable_ranges(mapper, parts):
            found = _lowest_in(mapper, piece)
            if found is not None:
                return found
    return None


def _lowest_in(mapper: PhysMapper, piece: AddrRange) -> BootParams | None:
    """The lowest valid boot_params wholly inside ``piece`` (readable), bottom up."""
    low = piece.start
    chunk = FIRST_CHUNK
    while low < piece.end:
        top = min(piece.end, low + chunk)
        # Candidates start in [low, top); their 4 KiB may reach past top.
        end = min(piece.end, top + BOOT_PARAMS_SIZE)
        try:
            data = mapper.read(low, end - low)
        except PhysMemoryError:
            return None
        pos = data.find(SETUP_MAGIC)
        while pos >= 0:
            paddr = low + pos - HEADER_OFFSET
            if low <= paddr < top and paddr % BOOT_PARAMS_ALIGN == 0:
                offset = paddr - low
                candidate = parse_boot_params(data[offset : offset + BOOT_PARAMS_SIZE], paddr)
                if candidate is not None:
                    return candidate
            pos = data.find(SETUP_MAGIC, pos + 1)
        low = top
        chunk = min(chunk * 2, SCAN_CHUNK)
    return None


def _rank(paddr: int, ranges: Sequence[AddrRange]) -> int:
    """The index of the first of ``ranges`` that holds the 4 KiB at ``paddr``, else len."""
    for i, r in enumerate(ranges):
        if r.start <= paddr and paddr + BOOT_PARAMS_SIZE <= r.end:
            return i
    return len(ranges)


def choose_boot_params(
    found: Sequence[BootParams], kernel_image: Sequence[AddrRange] = (), scanned: int = 0
) -> BootParams:
    """The kernel's own copy among ``found``: one inside ``kernel_image`` (the physical ranges
    of the kernel image, in search order) if any, the one in the earliest range and lowest
    there (as :func:`kernel_boot_params` finds it); else the one at the highest address (a
    bootloader's zero page sits low). :class:`~gdbext.errors.NotFoundError` if ``found`` is
    empty."""
    if not found:
        raise NotFoundError(
            f"no Linux boot_params (setup header {shown(SETUP_MAGIC)} at +0x{HEADER_OFFSET:x} "
            f"with a valid e820 table) in the {scanned >> 20} MiB of readable memory scanned; "
            "give its physical address with --at ADDR"
        )
    inside = [bp for bp in found if _rank(bp.paddr, kernel_image) < len(kernel_image)]
    if inside:
        return min(inside, key=lambda bp: (_rank(bp.paddr, kernel_image), bp.paddr))
    return max(found, key=lambda bp: bp.paddr)
