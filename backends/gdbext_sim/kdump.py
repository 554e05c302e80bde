"""Write kdump-compressed dumps (makedumpfile's format) for tests and fixtures.

The layout follows QEMU's ``dump-guest-memory -z`` (``create_kdump_vmcore``); the structures
are those of :mod:`gdbext.formats.kdump`, which the reader in ``gdbext_dump`` shares:

==============================================  =================================================
file offset                                     contents
==============================================  =================================================
0                                               ``disk_dump_header`` (464 bytes), zero-padded to
                                                ``block_size``
``block_size``                                  ``kdump_sub_header`` (104 bytes), then the ELF
                                                notes (and VMCOREINFO, if not among the notes)
``(1 + sub_hdr_size) * block_size``             1st bitmap (pages in RAM), then 2nd bitmap
                                                (pages dumped), each a whole number of blocks
``(1 + sub_hdr_size + bitmap_blocks) * bs``     one 24-byte ``page_desc`` per dumped page, in
                                                pfn order
after the descriptors                           the shared zero page (raw), then each other
                                                dumped page, compressed if that makes it smaller
==============================================  =================================================

The flattened form (``flattened=True``) streams the same bytes as makedumpfile ``-F`` records:
a 4096-byte header (``"makedumpfile"``, big-endian type 1 and version 1), records
``{i64 offset, i64 size, data}`` (big-endian) and the terminator ``{-1, -1}``. Bitmaps are
written block by block and descriptors and data in chunks, as QEMU does; ``shuffle_records``
also cuts records at random sizes and writes them in random order.
"""

from __future__ import annotations

import os
import random
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence

from gdbext.addr import AddrRange
from gdbext.cpu import CpuState
from gdbext.formats.kdump import (
    DISK_DUMP_HEADER,
    FLAT_HEADER,
    FLAT_HEADER_SIZE,
    FLAT_RECORD,
    FLAT_SIGNATURE,
    FLAT_TYPE,
    FLAT_VERSION,
    KDUMP_SIGNATURE,
    PAGE_DESC,
    SUB_HEADER,
    UTSNAME_FIELD,
)
from gdbext_sim.elfcore import qemu_notes
from gdbext_sim.memory import SparsePhysMemory

#: ``page_desc.flags`` and ``disk_dump_header.status`` bit of each compression.
COMPRESSION_FLAGS = {"none": 0x0, "zlib": 0x1, "lzo": 0x2, "snappy": 0x4, "zstd": 0x20}
STATUS_INCOMPLETE = 0x8
#: QEMU's dump level: zero pages excluded (it stores them as one shared page instead).
QEMU_DUMP_LEVEL = 1
#: QEMU writes descriptors and page data through a buffer of this many blocks.
CHUNK_BLOCKS = 4


def _compressor(compression: str) -> Callable[[bytes], bytes]:
    if compression == "zlib":
        return lambda page: zlib.compress(page, 1)
    if compression == "lzo":
        import lzo

        return lambda page: bytes(lzo.compress(page, 1, False))
    if compression == "snappy":
        import cramjam

        return lambda page: bytes(cramjam.snappy.compress_raw(page))
    if compression == "zstd":
        import zstandard

        cctx = zstandard.ZstdCompressor(level=1)
        return lambda page: bytes(cctx.compress(page))
    if compression == "none":
        return lambda page: page
    raise ValueError(f"unknown compression {compression!r} (one of {sorted(COMPRESSION_FLAGS)})")


def _bitmap(pfns: Iterable[int], size: int) -> bytes:
    bitmap = bytearray(size)
    for pfn in pfns:
        bitmap[pfn >> 3] |= 1 << (pfn & 7)
    return bytes(bitmap)


def _set_bits(bitmap: bytearray, first: int, end: int) -> None:
    """Set bits ``[first, end)`` of an LSB-first bitmap, whole bytes at once."""
    while first < end and first & 7:
        bitmap[first >> 3] |= 1 << (first & 7)
        first += 1
    whole = (end - first) >> 3
    if whole > 0:
        bitmap[first >> 3 : (first >> 3) + whole] = b"\xff" * whole
        first += whole << 3
    while first < end:
        bitmap[first >> 3] |= 1 << (first & 7)
        first += 1


def _chunks(offset: int, data: bytes, size: int) -> list[tuple[int, bytes]]:
    return [(offset + i, data[i : i + size]) for i in range(0, len(data), size)] or [(offset, data)]


def kdump_layout(
    pages: Mapping[int, bytes],
    *,
    max_mapnr: int,
    compression: str = "zlib",
    excluded: Iterable[int] = (),
    ram: Sequence[AddrRange] | None = None,
    exclude_rest: bool = False,
    notes: bytes = b"",
    vmcoreinfo: bytes | None = None,
    nr_cpus: int = 1,
    header_version: int = 6,
    block_size: int = 4096,
    phys_base: int = 0,
    dump_level: int = QEMU_DUMP_LEVEL,
    machine: str = "x86_64",
    release: str = "",
    status: int = 0,
) -> list[tuple[int, bytes]]:
    """The writes that make up a seekable kdump file, as ``(offset, bytes)`` in QEMU's order.

    See :func:`write_kdump` for the parameters.
    """
    if compression not in COMPRESSION_FLAGS:
        raise ValueError(f"unknown compression {compression!r}")
    if block_size <= 0 or block_size & (block_size - 1):
        raise ValueError(f"block size {block_size} is not a power of two")
    if header_version < 6 and max_mapnr > 0xFFFF_FFFF:
        raise ValueError("max_mapnr above 2**32 needs header version 6")
    shift = block_size.bit_length() - 1
    excluded = set(excluded)
    present: set[int] | None = set(pages) | excluded
    ram_spans = [(r.start >> shift, (r.end + block_size - 1) >> shift) for r in ram or ()]
    if exclude_rest:
        if ram is None or excluded:
            raise ValueError("exclude_rest takes ram and no excluded pfns")
        if any(not 0 <= a <= b <= max_mapnr for a, b in ram_spans):
            raise ValueError(f"a RAM range is outside [0, max_mapnr = 0x{max_mapnr:x})")
        present = None  # RAM as ranges: not one set entry per pfn of a huge machine
        dumped = sorted(pages)
    else:
        assert present is not None
        for a, b in ram_spans:
            present.update(range(a, b))
        dumped = sorted(present - excluded)
    if any(not 0 <= pfn < max_mapnr for pfn in (present or dumped)):
        raise ValueError(f"a pfn is outside [0, max_mapnr = 0x{max_mapnr:x})")
    if excluded & set(pages):
        raise ValueError("a pfn is both dumped and excluded")
    if any(len(page) != block_size for page in pages.values()):
        raise ValueError(f"every page must be {block_size} bytes")

    # Sub-header area: sub-header, notes, then VMCOREINFO unless it is inside the notes.
    note_offset = block_size + SUB_HEADER.size
    extra = b""
    vmcoreinfo_offset = 0
    if vmcoreinfo:
        found = notes.find(vmcoreinfo)
        if found >= 0:
            vmcoreinfo_offset = note_offset + found
        else:
            vmcoreinfo_offset = note_offset + len(notes)
            extra = vmcoreinfo
    sub_hdr_size = max(1, -(-(SUB_HEADER.size + len(notes) + len(extra)) // block_size))
    bitmap_size = max(block_size, -(-max_mapnr // (8 * block_size)) * block_size)
    bitmap_blocks = 2 * bitmap_size // block_size
    bitmap_offset = (1 + sub_hdr_size) * block_size
    desc_offset = bitmap_offset + 2 * bitmap_size
    data_offset = desc_offset + PAGE_DESC.size * len(dumped)

    compress = _compressor(compression)
    flag = COMPRESSION_FLAGS[compression]
    zero = bytes(block_size)
    descs = bytearray()
    data = bytearray()
    zero_needed = any(pages.get(pfn, zero) == zero for pfn in dumped)
    if zero_needed:
        data += zero
    for pfn in dumped:
        page = pages.get(pfn, zero)
        if page == zero:
            descs += PAGE_DESC.struct.pack(data_offset, block_size, 0, 0)
            continue
        packed = compress(page)
        if flag and len(packed) < block_size:
            descs += PAGE_DESC.struct.pack(data_offset + len(data), len(packed), flag, 0)
            data += packed
        else:
            descs += PAGE_DESC.struct.pack(data_offset + len(data), block_size, 0, 0)
            data += page

    def utsname_field(text: str) -> bytes:
        return text.encode("ascii")[: UTSNAME_FIELD - 1].ljust(UTSNAME_FIELD, b"\0")

    utsname = b"".join(utsname_field(t) for t in ("", "", release, "", machine, ""))
    header = DISK_DUMP_HEADER.pack(
        signature=KDUMP_SIGNATURE,
        header_version=header_version,
        utsname=utsname,
        timestamp=bytes(16),
        status=status | flag,
        block_size=block_size,
        sub_hdr_size=sub_hdr_size,
        bitmap_blocks=bitmap_blocks,
        max_mapnr=min(max_mapnr, 0xFFFF_FFFF),
        total_ram_blocks=0,
        device_blocks=0,
        written_blocks=0,
        current_cpu=0,
        nr_cpus=nr_cpus,
    )
    v = header_version
    sub = SUB_HEADER.pack(
        phys_base=phys_base,
        dump_level=dump_level,
        split=0,
        start_pfn=0 if v < 2 else dumped[0] if dumped else 0,
        end_pfn=0 if v < 2 else min(max_mapnr, 0xFFFF_FFFF),
        offset_vmcoreinfo=vmcoreinfo_offset if v >= 3 and vmcoreinfo else 0,
        size_vmcoreinfo=len(vmcoreinfo) if v >= 3 and vmcoreinfo else 0,
        offset_note=note_offset if v >= 4 and notes else 0,
        size_note=len(notes) if v >= 4 else 0,
        offset_eraseinfo=0,
        size_eraseinfo=0,
        start_pfn_64=0 if v < 6 else dumped[0] if dumped else 0,
        end_pfn_64=0 if v < 6 else max_mapnr,
        max_mapnr_64=0 if v < 6 else max_mapnr,
    )
    writes = [(0, header), (block_size, sub)]
    if notes:
        writes.append((note_offset, notes))
    if extra:
        writes.append((vmcoreinfo_offset, extra))
    if present is None:
        bits = bytearray(_bitmap(dumped, bitmap_size))
        for a, b in ram_spans:
            _set_bits(bits, a, b)
        first = bytes(bits)
    else:
        first = _bitmap(present, bitmap_size)
    second = _bitmap(dumped, bitmap_size)
    writes += _chunks(bitmap_offset, first, block_size)
    writes += _chunks(bitmap_offset + bitmap_size, second, block_size)
    if descs:
        writes += _chunks(desc_offset, bytes(descs), CHUNK_BLOCKS * block_size)
    if data:
        writes += _chunks(data_offset, bytes(data), CHUNK_BLOCKS * block_size)
    return writes


def write_kdump(
    path: str | os.PathLike[str],
    pages: Mapping[int, bytes],
    *,
    max_mapnr: int,
    flattened: bool,
    compression: str = "zlib",
    excluded: Iterable[int] = (),
    ram: Sequence[AddrRange] | None = None,
    exclude_rest: bool = False,
    notes: bytes = b"",
    vmcoreinfo: bytes | None = None,
    nr_cpus: int = 1,
    header_version: int = 6,
    block_size: int = 4096,
    shuffle_records: bool = False,
    seed: int = 0,
    phys_base: int = 0,
    dump_level: int = QEMU_DUMP_LEVEL,
    machine: str = "x86_64",
    release: str = "",
    status: int = 0,
) -> None:
    """Write a kdump-compressed file.

    :param path: the file to create (replaced if it exists).
    :param pages: pfn -> page contents (``block_size`` bytes each): the dumped pages. All-zero
        pages share one raw zero page, as QEMU writes them.
    :param max_mapnr: the number of pfns the bitmaps cover.
    :param flattened: write makedumpfile's flattened form (else the seekable one).
    :param compression: ``"none"``, ``"zlib"``, ``"lzo"`` (needs python-lzo), ``"snappy"`` or
        ``"zstd"``. A page that does not shrink is stored raw.
    :param excluded: pfns in RAM (1st bitmap) whose pages are not dumped (2nd bitmap clear).
    :param ram: physical ranges in RAM: their pfns not in ``pages`` or ``excluded`` are dumped
        as zero pages. Without it, RAM is ``pages`` and ``excluded``.
    :param exclude_rest: the pfns of ``ram`` not in ``pages`` are excluded instead (as
        ``makedumpfile -d 31`` leaves out zero, cache, user and free pages): a dump that
        describes a big machine and holds a few pages, built without a set entry per pfn.
    :param notes: the ELF notes blob, placed right after the sub-header.
    :param vmcoreinfo: the VMCOREINFO text: pointed to inside ``notes`` if it is there, else
        stored after them.
    :param header_version: fields of later versions are written as zeros.
    :param shuffle_records: (flattened) cut the records at random sizes and write them in
        random order (``seed``).
    :param status: extra ``disk_dump_header.status`` bits (e.g. 0x8, incomplete).
    :raises ValueError: for inconsistent arguments.
    """
    writes = kdump_layout(
        pages,
        max_mapnr=max_mapnr,
        compression=compression,
        excluded=excluded,
        ram=ram,
        exclude_rest=exclude_rest,
        notes=notes,
        vmcoreinfo=vmcoreinfo,
        nr_cpus=nr_cpus,
        header_version=header_version,
        block_size=block_size,
        phys_base=phys_base,
        dump_level=dump_level,
        machine=machine,
        release=release,
        status=status,
    )
    end = max(offset + len(data) for offset, data in writes)
    with open(path, "wb") as f:
        if not flattened:
            for offset, data in writes:
                f.seek(offset)
                f.write(data)
            f.truncate(end)
            return
        if shuffle_records:
            rng = random.Random(seed)
            pieces: list[tuple[int, bytes]] = []
            for offset, data in writes:
                i = 0
                while i < len(data):
                    n = rng.randint(1, max(1, min(len(data) - i, 3 * block_size)))
                    pieces.append((offset + i, data[i : i + n]))
                    i += n
            rng.shuffle(pieces)
            writes = pieces
        header = FLAT_HEADER.pack(signature=FLAT_SIGNATURE, type=FLAT_TYPE, version=FLAT_VERSION)
        f.write(header.ljust(FLAT_HEADER_SIZE, b"\0"))
        for offset, data in writes:
            f.write(FLAT_RECORD.struct.pack(offset, len(data)))
            f.write(data)
        f.write(FLAT_RECORD.pack(offset=-1, size=-1))


def write_kdump_from_memory(
    path: str | os.PathLike[str],
    memory: SparsePhysMemory,
    cpus: Sequence[CpuState],
    *,
    flattened: bool = True,
    compression: str = "zlib",
    vmcoreinfo: str | None = None,
    excluded: Iterable[int] = (),
    shuffle_records: bool = False,
    seed: int = 0,
    header_version: int = 6,
    phys_base: int = 0,
    release: str = "",
) -> None:
    """Write a simulated machine's RAM and CPUs as QEMU's ``dump-guest-memory -z`` would.

    The notes are those of the ELF core (:func:`gdbext_sim.elfcore.qemu_notes`: CORE, QEMU with
    CR0/CR3/CR4, and VMCOREINFO if given); ``max_mapnr`` is the end of RAM. ``excluded`` pfns
    (in RAM) are left out of the dump; the other options are those of :func:`write_kdump`.
    """
    excluded = set(excluded)
    pages = {
        paddr >> 12: data for paddr, data in memory.iter_frames() if paddr >> 12 not in excluded
    }
    text = None if vmcoreinfo is None else vmcoreinfo.encode("utf-8")
    write_kdump(
        path,
        pages,
        max_mapnr=memory.ram_ranges[-1].end >> 12,
        flattened=flattened,
        compression=compression,
        excluded=excluded,
        ram=memory.ram_ranges,
        notes=qemu_notes(cpus, vmcoreinfo),
        vmcoreinfo=text,
        nr_cpus=len(cpus),
        header_version=header_version,
        shuffle_records=shuffle_records,
        seed=seed,
        phys_base=phys_base,
        release=release,
    )
