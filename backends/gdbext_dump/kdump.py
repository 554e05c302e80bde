"""Reader of kdump-compressed ("diskdump") dumps: makedumpfile's format, as QEMU writes it too.

Layout of the seekable file (all little-endian; ``B`` = ``block_size``, the page size):

==============================================  =================================================
file offset                                     contents
==============================================  =================================================
0                                               :data:`DISK_DUMP_HEADER` (``"KDUMP   "``)
``B``                                           :data:`SUB_HEADER`; then (QEMU) the ELF notes
``(1 + sub_hdr_size) * B``                      two bitmaps of ``bitmap_blocks / 2`` blocks each:
                                                1st = page exists, 2nd = page dumped; the bit
                                                of pfn ``p`` is ``byte[p >> 3] >> (p & 7) & 1``
``(1 + sub_hdr_size + bitmap_blocks) * B``      :data:`PAGE_DESC` array, one per set bit of the
                                                2nd bitmap, in pfn order
``page_desc.offset``                            the page's data (absolute file offset)
==============================================  =================================================

The flattened form (makedumpfile ``-F``, QEMU ``dump-guest-memory -z``) is the same layout in
records; :mod:`gdbext_dump.kdump_flat` hides the difference.

Pages: ``page_desc.flags`` 0 is a raw page (``size == block_size``), 0x1 zlib, 0x2 lzo1x,
0x4 snappy, 0x20 zstd (:mod:`gdbext_dump.kdump_codecs`). A pfn whose 1st-bitmap bit is clear (or
beyond ``max_mapnr``) is not in the dump's RAM: :class:`~gdbext.errors.PhysMemoryError`. A pfn
whose 1st bit is set but 2nd bit clear was excluded by the dump level: it is RAM, but its bytes
are unknown: :class:`~gdbext.errors.NotCapturedError`.

Only the 64-bit header layout is read. The 32-bit one packs several sub-header fields as u32
and is refused with a message saying so. (QEMU 7.2's qemu-system-x86_64 writes the 64-bit layout
even for a guest in real mode: its BIOS ROM ends at 4 GiB, which makes the dump 64-bit class.)
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterator
from itertools import accumulate
from types import TracebackType

from gdbext.addr import AddrRange
from gdbext.errors import NotCapturedError, PhysMemoryError, ReadOnlyError
from gdbext.formats.kdump import (
    DISK_DUMP_HEADER,
    KDUMP_SIGNATURE,
    PAGE_DESC,
    SUB_HEADER,
    SUB_HEADER_FIELDS_BY_VERSION,
    SUB_HEADER_SIZE_BY_VERSION,
    UTSNAME_FIELD,
    UTSNAME_FIELDS,
)
from gdbext.plugin.target import Detail
from gdbext.units import shown
from gdbext_dump.kdump_codecs import (
    CODEC_NAMES,
    FLAG_RAW,
    INSTALL_HINTS,
    CodecError,
    CodecMissingError,
    decode,
)
from gdbext_dump.kdump_flat import FlatKdumpFile, KdumpBytes, open_kdump_bytes

# File offsets of the header fields that errors name (layouts: :mod:`gdbext.formats.kdump`).
_BLOCK_SIZE_AT = DISK_DUMP_HEADER.offset("block_size")
_SUB_HDR_SIZE_AT = DISK_DUMP_HEADER.offset("sub_hdr_size")
_BITMAP_BLOCKS_AT = DISK_DUMP_HEADER.offset("bitmap_blocks")
PAGE_DESC_FLAGS_OFFSET = PAGE_DESC.offset("flags")

#: ``disk_dump_header.status`` bits other than the codec bits.
STATUS_INCOMPLETE = 0x8
STATUS_EXCLUDED_VMEMMAP = 0x10

MIN_BLOCK_SIZE = 512
MAX_BLOCK_SIZE = 1 << 20
#: No pfn may lie beyond a 52-bit physical address space.
MAX_PHYS_BITS = 52
#: Bitmap bits per entry of the prefix-count table (4096 bits = 512 bytes).
PREFIX_BLOCK_SHIFT = 12
_PREFIX_BLOCK_BYTES = 1 << (PREFIX_BLOCK_SHIFT - 3)
#: Decompressed pages kept (4 MiB of 4 KiB pages); page tables are read a few times each.
PAGE_CACHE_SIZE = 1024
#: Scan the page descriptors for the codecs they use only up to this size (a 5 GiB guest).
MAX_DESC_SCAN = 1 << 25


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


def _popcount(data: bytes) -> int:
    return int.from_bytes(data, "little").bit_count()


def bitmap_runs(bitmap: bytes) -> list[tuple[int, int]]:
    """The runs ``(first, end)`` of set bits of an LSB-first bitmap, end exclusive.

    Whole blocks of zeros or ones cost one comparison; mixed blocks one step per run edge.

    >>> bitmap_runs(bytes([0b1110_0110, 0xFF, 0x01, 0x00]))
    [(1, 3), (5, 17)]
    """
    runs: list[tuple[int, int]] = []
    start: int | None = None
    step = _PREFIX_BLOCK_BYTES
    empty, full = bytes(step), b"\xff" * step
    for base in range(0, len(bitmap), step):
        chunk = bitmap[base : base + step]
        bit0 = base * 8
        if chunk == empty[: len(chunk)]:
            if start is not None:
                runs.append((start, bit0))
                start = None
            continue
        if chunk == full[: len(chunk)]:
            if start is None:
                start = bit0
            continue
        x = int.from_bytes(chunk, "little")
        edges = (x ^ ((x << 1) | (start is not None))) & ((1 << (len(chunk) * 8)) - 1)
        while edges:
            low = edges & -edges
            edges ^= low
            at = bit0 + low.bit_length() - 1
            if start is None:
                start = at
            else:
                runs.append((start, at))
                start = None
    if start is not None:
        runs.append((start, len(bitmap) * 8))
    return runs


class KdumpHeader:
    """The header fields of a kdump file that the reader uses, checked for sanity."""

    def __init__(self, src: KdumpBytes) -> None:
        fail = src.error
        if src.size < DISK_DUMP_HEADER.size:
            raise fail(
                f"the kdump header needs {DISK_DUMP_HEADER.size} bytes, the file has {src.size}",
                src.size,
            )
        raw = src.read(0, DISK_DUMP_HEADER.size)
        fields = DISK_DUMP_HEADER.unpack(raw)
        signature: bytes = fields["signature"]
        utsname: bytes = fields["utsname"]
        self.header_version: int = fields["header_version"]
        self.status: int = fields["status"]
        self.block_size: int = fields["block_size"]
        self.sub_hdr_size: int = fields["sub_hdr_size"]
        self.bitmap_blocks: int = fields["bitmap_blocks"]
        self.current_cpu: int = fields["current_cpu"]
        self.nr_cpus: int = fields["nr_cpus"]
        if signature != KDUMP_SIGNATURE:
            what = "the old diskdump format" if signature == b"DISKDUMP" else "not a kdump file"
            raise fail(f"signature {shown(signature)} is not {shown(KDUMP_SIGNATURE)}: {what}", 0)
        self.utsname = {
            name: _cstr(utsname[i * UTSNAME_FIELD : (i + 1) * UTSNAME_FIELD])
            for i, name in enumerate(UTSNAME_FIELDS)
        }
        if self.header_version < 1:
            raise fail(
                f"header_version {self.header_version} is not supported",
                DISK_DUMP_HEADER.offset("header_version"),
            )
        bs = self.block_size
        if not MIN_BLOCK_SIZE <= bs <= MAX_BLOCK_SIZE or bs & (bs - 1):
            hint = ""
            # The 32-bit layout's shorter timestamp puts block_size earlier: look there.
            early = range(DISK_DUMP_HEADER.offset("timestamp"), _BLOCK_SIZE_AT, 4)
            if any(struct.unpack_from("<I", raw, off)[0] == 4096 for off in early):
                hint = "; this looks like the 32-bit kdump layout, which gdbext does not read"
            raise fail(
                f"block_size {bs} is not a power of two from {MIN_BLOCK_SIZE} to "
                f"{MAX_BLOCK_SIZE}{hint}",
                _BLOCK_SIZE_AT,
            )
        self.page_shift = bs.bit_length() - 1
        version = min(self.header_version, 6)
        needed = SUB_HEADER_SIZE_BY_VERSION[version]
        if self.sub_hdr_size < 1 or self.sub_hdr_size * bs < needed:
            raise fail(
                f"sub_hdr_size {self.sub_hdr_size} blocks cannot hold the {needed}-byte "
                f"version-{version} sub-header",
                _SUB_HDR_SIZE_AT,
            )
        if self.bitmap_blocks == 0 or self.bitmap_blocks % 2:
            raise fail(
                f"bitmap_blocks {self.bitmap_blocks} is not a positive even number",
                _BITMAP_BLOCKS_AT,
            )
        self.bitmap_offset = (1 + self.sub_hdr_size) * bs
        self.bitmap_size = self.bitmap_blocks // 2 * bs
        self.desc_offset = self.bitmap_offset + self.bitmap_blocks * bs
        if self.desc_offset > src.size or 2 * self.bitmap_size > src.file_size:
            raise fail(
                f"the bitmaps ({self.bitmap_blocks} blocks of {bs} bytes at "
                f"0x{self.bitmap_offset:x}, after {self.sub_hdr_size} sub-header blocks) run "
                f"past the end of the file (0x{src.size:x} bytes)",
                _BITMAP_BLOCKS_AT,
            )
        if bs + needed > src.size:
            raise fail(
                f"the {needed}-byte sub-header at 0x{bs:x} runs past the end of the file "
                f"(0x{src.size:x} bytes)",
                bs,
            )
        raw_sub = src.read(bs, min(SUB_HEADER.size, src.size - bs))
        sub = SUB_HEADER.unpack(raw_sub.ljust(SUB_HEADER.size, b"\0"))
        for name in SUB_HEADER.names[SUB_HEADER_FIELDS_BY_VERSION[version] :]:
            sub[name] = 0  # fields of later versions: not there
        self.phys_base: int = sub["phys_base"]
        self.dump_level: int = sub["dump_level"]
        self.split: int = sub["split"]
        self.offset_vmcoreinfo: int = sub["offset_vmcoreinfo"]
        self.size_vmcoreinfo: int = sub["size_vmcoreinfo"]
        self.offset_note: int = sub["offset_note"]
        self.size_note: int = sub["size_note"]
        if version >= 6:
            self.max_mapnr: int = sub["max_mapnr_64"]
            where = bs + SUB_HEADER.offset("max_mapnr_64")
        else:
            self.max_mapnr = fields["max_mapnr"]
            where = DISK_DUMP_HEADER.offset("max_mapnr")
        if self.max_mapnr > 1 << (MAX_PHYS_BITS - self.page_shift):
            raise fail(
                f"max_mapnr 0x{self.max_mapnr:x} is beyond a {MAX_PHYS_BITS}-bit physical "
                "address space",
                where,
            )
        if self.max_mapnr > self.bitmap_size * 8:
            raise fail(
                f"the bitmaps ({self.bitmap_size} bytes each) are shorter than max_mapnr "
                f"0x{self.max_mapnr:x} bits",
                where,
            )


class KdumpMapper:
    """The physical memory of a kdump file: a read-only :class:`~gdbext.mapper.PhysMapper`.

    Pages are decoded on demand and kept in a small LRU cache; pages whose data is all zeros
    (QEMU stores every zero page once, as one shared raw page) are remembered by data offset,
    so no zero page is read twice.
    """

    read_only = True

    def __init__(self, src: KdumpBytes, header: KdumpHeader, present: bytes, dumped: bytes):
        self._src = src
        self._path = src.path
        self._block_size = header.block_size
        self._shift = header.page_shift
        self._mask = header.block_size - 1
        self._max_mapnr = header.max_mapnr
        self._desc_offset = header.desc_offset
        self._incomplete = bool(header.status & STATUS_INCOMPLETE)
        self._present = present
        self._dumped = dumped
        counts = [
            _popcount(dumped[i : i + _PREFIX_BLOCK_BYTES])
            for i in range(0, len(dumped), _PREFIX_BLOCK_BYTES)
        ]
        self._prefix = list(accumulate(counts, initial=0))
        #: How many pages the dump holds (= page descriptors).
        self.dumped_pages = self._prefix[-1]
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._zero = bytes(header.block_size)
        self._zero_offsets: set[int] = set()
        self._runs: list[tuple[int, int]] | None = None

    # -- bitmaps ------------------------------------------------------------------------------

    def desc_index(self, pfn: int) -> int:
        """The index of ``pfn``'s page descriptor: set bits of the 2nd bitmap before ``pfn``."""
        block = pfn >> PREFIX_BLOCK_SHIFT
        byte = pfn >> 3
        dumped = self._dumped
        return (
            self._prefix[block]
            + _popcount(dumped[block * _PREFIX_BLOCK_BYTES : byte])
            + (dumped[byte] & ((1 << (pfn & 7)) - 1)).bit_count()
        )

    def _state(self, pfn: int) -> int:
        """0: not in the dump's RAM; 1: in RAM, excluded; 3: in RAM and dumped."""
        if not 0 <= pfn < self._max_mapnr:
            return 0
        byte, bit = pfn >> 3, pfn & 7
        if not self._present[byte] >> bit & 1:
            return 0
        return 3 if self._dumped[byte] >> bit & 1 else 1

    def is_captured(self, paddr: int) -> bool:
        """False for a frame in the dump's RAM whose page was excluded from the dump."""
        return self._state(paddr >> self._shift) != 1

    def readable_ranges(self, start: int, end: int) -> Iterator[AddrRange]:
        """The physical ranges of dumped pages that meet ``[start, end)``, whole pages, in
        order (see :func:`gdbext.mapper.readable_ranges`). The runs of the 2nd bitmap are
        found once (one comparison per 512 bytes of an empty or full stretch of it), then each
        call is a bisect: a hole costs nothing however large."""
        if self._runs is None:
            self._runs = bitmap_runs(self._dumped)
        runs, shift = self._runs, self._shift
        i = max(bisect_right(runs, (start >> shift, 1 << 64)) - 1, 0)
        for first, stop in runs[i:]:
            lo, hi = first << shift, min(stop, self._max_mapnr) << shift
            if lo >= end:
                break
            if hi > start and hi > lo:
                yield AddrRange(lo, hi)

    # -- reads --------------------------------------------------------------------------------

    def read(self, paddr: int, size: int) -> bytes:
        """``size`` bytes at ``paddr``, reading across pages as needed.

        :raises PhysMemoryError: if a page is not in the dump's RAM.
        :raises NotCapturedError: if a page is in RAM but was excluded from the dump.
        :raises InputError: if a page's descriptor or data is malformed.
        """
        offset = paddr & self._mask
        if size >= 0 and offset + size <= self._block_size:
            pfn = paddr >> self._shift
            page = self._cache.get(pfn)
            if page is None:
                page = self._load(pfn, paddr, size)
            else:
                self._cache.move_to_end(pfn)
            return page if size == self._block_size else page[offset : offset + size]
        if size < 0:
            raise ValueError(f"negative read size {size}")
        if paddr < 0 or paddr + size > self._max_mapnr << self._shift:
            raise PhysMemoryError(paddr, size, f"not in the dump {self._path}", "read")
        out = bytearray()
        first, last = paddr >> self._shift, (paddr + size - 1) >> self._shift
        for pfn in range(first, last + 1):  # every page is checked before any is decoded
            if self._state(pfn) != 3:
                self._load(pfn, paddr, size)
        for pfn in range(first, last + 1):
            page = self._cache.get(pfn)
            out += page if page is not None else self._load(pfn, paddr, size)
        return bytes(out[offset : offset + size])

    def write(self, paddr: int, data: bytes) -> None:
        raise ReadOnlyError(f"{self._path} is a dump: its memory cannot be written")

    def _load(self, pfn: int, paddr: int, size: int) -> bytes:
        state = self._state(pfn)
        if state != 3:
            if state == 1:
                raise NotCapturedError(paddr, size)
            raise PhysMemoryError(paddr, size, f"not in the dump {self._path}", "read")
        page = self._page(pfn, paddr, size)
        cache = self._cache
        cache[pfn] = page
        if len(cache) > PAGE_CACHE_SIZE:
            cache.popitem(last=False)
        return page

    def _page(self, pfn: int, paddr: int, size: int) -> bytes:
        src = self._src
        desc_at = self._desc_offset + PAGE_DESC.size * self.desc_index(pfn)
        if desc_at + PAGE_DESC.size > src.size:
            if self._incomplete:
                raise NotCapturedError(paddr, size, "not captured: the dump is incomplete")
            raise src.error(f"the page descriptor of pfn 0x{pfn:x} is past the end", desc_at)
        offset, length, flags, _ = PAGE_DESC.struct.unpack(src.read(desc_at, PAGE_DESC.size))
        if offset in self._zero_offsets and length == self._block_size and flags == FLAG_RAW:
            return self._zero
        if length == 0 and self._incomplete:
            raise NotCapturedError(paddr, size, "not captured: the dump is incomplete")
        limit = self._block_size if flags == FLAG_RAW else 2 * self._block_size
        if not 0 < length <= limit or (flags == FLAG_RAW and length != self._block_size):
            raise src.error(
                f"the page descriptor of pfn 0x{pfn:x} has a bad size {length} "
                f"(flags 0x{flags:x}, block size {self._block_size})",
                desc_at + PAGE_DESC.offset("size"),
            )
        if offset + length > src.size:
            if self._incomplete:
                raise NotCapturedError(paddr, size, "not captured: the dump is incomplete")
            raise src.error(
                f"the data of pfn 0x{pfn:x} (0x{length:x} bytes at 0x{offset:x}) is past the "
                f"end of the file",
                desc_at,
            )
        data = src.read(offset, length)
        if flags == FLAG_RAW:
            if data == self._zero:
                if len(self._zero_offsets) < 64:
                    self._zero_offsets.add(offset)
                return self._zero
            return data
        try:
            return decode(flags, data, self._block_size)
        except KeyError:
            raise src.error(
                f"the page descriptor of pfn 0x{pfn:x} has unknown flags 0x{flags:x}",
                desc_at + PAGE_DESC_FLAGS_OFFSET,
            ) from None
        except CodecMissingError:
            name = CODEC_NAMES[flags]
            raise src.error(
                f"pfn 0x{pfn:x} is {name}-compressed, but the {name} codec is not installed "
                f"({INSTALL_HINTS[flags]})",
                offset,
            ) from None
        except CodecError as exc:
            raise src.error(
                f"the page of pfn 0x{pfn:x} does not decompress: {exc}", offset
            ) from None


class KdumpFile:
    """An opened kdump file: its memory, notes and header facts. Close it when done.

    :ivar mapper: the physical memory (:class:`KdumpMapper`).
    :ivar notes: the ELF notes blob (``offset_note``/``size_note``; empty before v4 or if none).
    :ivar notes_offset: the file offset of :attr:`notes` (for a flattened file, the position
        of their first byte in the flattened file).
    :ivar vmcoreinfo: the VMCOREINFO text (``offset_vmcoreinfo``/``size_vmcoreinfo``), or None.
    :ivar ram: the runs of pages in the 1st bitmap, as physical address ranges.
    :ivar details: facts for ``info``: format, header version, compression, page codecs seen,
        dump level, CPUs, max_mapnr, utsname machine and release.
    :ivar phys_base: the sub-header's ``phys_base`` (QEMU parses it from VMCOREINFO as hex,
        wrongly: prefer VMCOREINFO's ``NUMBER(phys_base)``).
    """

    def __init__(self, src: KdumpBytes) -> None:
        self._src = src
        self.path = src.path
        header = self.header = KdumpHeader(src)
        nbytes = (header.max_mapnr + 7) // 8
        present = _clip(src.read(header.bitmap_offset, nbytes), header.max_mapnr)
        dumped = _clip(
            src.read(header.bitmap_offset + header.bitmap_size, nbytes), header.max_mapnr
        )
        self.mapper = KdumpMapper(src, header, present, dumped)
        desc_end = header.desc_offset + PAGE_DESC.size * self.mapper.dumped_pages
        if desc_end > src.size and not header.status & STATUS_INCOMPLETE:
            raise src.error(
                f"{self.mapper.dumped_pages} page descriptors (2nd bitmap) run past the end of "
                f"the file (0x{src.size:x} bytes)",
                header.desc_offset,
            )
        self.phys_base: int = header.phys_base
        self.notes = self._blob(header.offset_note, header.size_note, "offset_note") or b""
        real = src.file_offset(header.offset_note)
        self.notes_offset = header.offset_note if real is None else real
        self.vmcoreinfo = self._blob(
            header.offset_vmcoreinfo, header.size_vmcoreinfo, "offset_vmcoreinfo"
        )
        shift = header.page_shift
        self.ram = [AddrRange(a << shift, b << shift) for a, b in bitmap_runs(present)]
        self.details = self._details(min(desc_end, src.size))

    def _blob(self, offset: int, size: int, field: str) -> bytes | None:
        src = self._src
        if size == 0:
            return None
        if offset + size > src.size or size > src.file_size:
            raise src.error(
                f"the {_BLOBS[field]} (0x{size:x} bytes at 0x{offset:x}) run past the end of "
                "the file",
                self.header.block_size + SUB_HEADER.offset(field),
            )
        return src.read(offset, size)

    def _details(self, desc_end: int) -> dict[str, str]:
        header, src = self.header, self._src
        codecs = [name for bit, name in CODEC_NAMES.items() if header.status & bit]
        details = {
            "format": src.form,
            "header version": Detail.number(header.header_version),
            "compression": ", ".join(codecs) or "none",
        }
        scan = desc_end - header.desc_offset
        if 0 < scan <= MAX_DESC_SCAN:
            raw = src.read(header.desc_offset, scan - scan % PAGE_DESC.size)
            flags = set(memoryview(raw).cast("I")[PAGE_DESC_FLAGS_OFFSET // 4 :: 6])
            names = [
                "raw" if f == FLAG_RAW else CODEC_NAMES.get(f, f"unknown 0x{f:x}")
                for f in sorted(flags)
            ]
            details["page codecs"] = ", ".join(names)
        details |= {
            "dump level": Detail.number(header.dump_level),
            "nr_cpus": Detail.number(header.nr_cpus),
            "max_mapnr": Detail.address(header.max_mapnr),
            "dumped pages": Detail.number(self.mapper.dumped_pages),
            "machine": header.utsname["machine"],
            "release": header.utsname["release"],
        }
        if header.status & STATUS_INCOMPLETE:
            details["incomplete"] = Detail.flag(True, "the writer ran out of space")
        if header.split:
            details["split"] = Detail.flag(True, "this file holds part of the pages")
        if isinstance(src, FlatKdumpFile):
            details["records"] = Detail.number(src.records)
        return details

    def close(self) -> None:
        """Release the file's mapping."""
        self._src.close()

    def __enter__(self) -> KdumpFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


#: What the sub-header's ``offset_*`` fields point to, as errors name it.
_BLOBS = {"offset_note": "notes", "offset_vmcoreinfo": "VMCOREINFO"}


def _clip(bitmap: bytes, nbits: int) -> bytes:
    """``bitmap`` without the bits from ``nbits`` on (the last byte's high bits cleared)."""
    if nbits & 7:
        return bitmap[:-1] + bytes([bitmap[-1] & ((1 << (nbits & 7)) - 1)])
    return bitmap


def open_kdump(path: str) -> KdumpFile:
    """Open the kdump file at ``path``, flattened or seekable (told apart by magic).

    :raises InputError: naming the file and offset, if it is not a kdump file this reader can
        use.
    """
    src = open_kdump_bytes(path)
    try:
        return KdumpFile(src)
    except BaseException:
        src.close()
        raise
