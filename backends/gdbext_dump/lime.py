"""LiME memory images: physical ranges, each behind a 32-byte header.

Each range is a header (little-endian) followed by its bytes, repeated to the end of the file:

====  ======================================================================
off   field
====  ======================================================================
0     u32 magic ``0x4C694D45`` (bytes ``45 4D 69 4C``, "EMiL")
4     u32 version (1)
8     u64 ``s_addr``: first physical address, **inclusive**
16    u64 ``e_addr``: last physical address, **inclusive**
24    8 reserved bytes
====  ======================================================================

Ranges must ascend without overlapping (as volatility3 requires too). AVML, Microsoft's
variant, writes version 2 with snappy-framed payloads; it is refused with a message saying so.
"""

from __future__ import annotations

import mmap

from gdbext.errors import InputError
from gdbext.formats.lime import AVML_VERSION, LIME_HEADER, LIME_MAGIC, LIME_VERSION
from gdbext_dump.segments import Segment, SegmentMapper, open_mmap


def lime_segments(path: str, data: mmap.mmap | bytes) -> list[Segment]:
    """The ranges of a LiME file as segments; :class:`InputError` names the bad header."""
    size = len(data)
    segments: list[Segment] = []
    pos = 0
    previous_end = -1
    while pos < size:  # each pass consumes a header and at least one byte of data
        if pos + LIME_HEADER.size > size:
            raise InputError(
                f"{size - pos} bytes at the end are too short for a LiME header "
                f"({LIME_HEADER.size} bytes)",
                path,
                pos,
            )
        header = LIME_HEADER.unpack(data, pos)
        magic: int = header["magic"]
        version: int = header["version"]
        s_addr: int = header["s_addr"]
        e_addr: int = header["e_addr"]
        if magic != LIME_MAGIC:
            raise InputError(f"no LiME header magic (found 0x{magic:08x})", path, pos)
        if version == AVML_VERSION:
            raise InputError(
                "AVML image (LiME header version 2, snappy-compressed ranges) is not supported; "
                "convert it to LiME or a raw image first",
                path,
                pos + LIME_HEADER.offset("version"),
            )
        if version != LIME_VERSION:
            raise InputError(
                f"LiME header version {version} is not 1", path, pos + LIME_HEADER.offset("version")
            )
        if e_addr < s_addr:
            raise InputError(
                f"LiME range end 0x{e_addr:x} is below its start 0x{s_addr:x}",
                path,
                pos + LIME_HEADER.offset("e_addr"),
            )
        if s_addr <= previous_end:
            raise InputError(
                f"LiME range 0x{s_addr:x}-0x{e_addr:x} overlaps or precedes the previous range "
                f"(ending at 0x{previous_end:x}); ranges must ascend",
                path,
                pos + LIME_HEADER.offset("s_addr"),
            )
        length = e_addr - s_addr + 1
        start = pos + LIME_HEADER.size
        if start + length > size:
            raise InputError(
                f"LiME range 0x{s_addr:x}-0x{e_addr:x} needs 0x{length:x} bytes but the file "
                f"ends 0x{size - start:x} bytes after its header",
                path,
                pos,
            )
        segments.append(Segment(s_addr, length, start, length, pos))
        previous_end = e_addr
        pos = start + length
    return segments


def open_lime(path: str) -> tuple[SegmentMapper, int]:
    """The physical memory of a LiME file, and its number of ranges."""
    data = open_mmap(path)
    try:
        segments = lime_segments(path, data)
        return SegmentMapper(path, data, segments), len(segments)
    except BaseException:
        data.close()
        raise
