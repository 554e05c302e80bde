"""Page codecs of kdump-compressed dumps: zlib, lzo1x, snappy, zstd.

Each decoder takes the stored bytes of one page and the block size, and returns exactly
``block_size`` bytes or raises :class:`CodecError` with a short reason. zlib is in the standard
library; zstd (``zstandard``) and snappy (``cramjam``) are dependencies of gdbext; lzo
(``python-lzo``) is optional because it builds only against liblzo2's headers.

Every decoder bounds its output by the block size *before* allocating: a corrupted length field
in a snappy preamble or a zstd frame header is refused, not honoured.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

#: ``page_desc.flags`` values.
FLAG_RAW = 0x0
FLAG_ZLIB = 0x1
FLAG_LZO = 0x2
FLAG_SNAPPY = 0x4
FLAG_ZSTD = 0x20

#: The same bits in ``disk_dump_header.status`` (which codecs the writer used).
CODEC_NAMES: dict[int, str] = {
    FLAG_ZLIB: "zlib",
    FLAG_LZO: "lzo",
    FLAG_SNAPPY: "snappy",
    FLAG_ZSTD: "zstd",
}

#: How to get a missing codec.
INSTALL_HINTS: dict[int, str] = {
    FLAG_LZO: "apt-get install liblzo2-dev; pip install python-lzo (or: pip install 'gdbext[lzo]')",
    FLAG_SNAPPY: "pip install cramjam",
    FLAG_ZSTD: "pip install zstandard",
}


class CodecError(Exception):
    """A page that does not decode; the caller adds the file and offset."""


class CodecMissingError(Exception):
    """The codec a page needs is not installed."""


Decoder = Callable[[bytes, int], bytes]


def _optional(name: str) -> ModuleType | None:
    try:
        return __import__(name)
    except ImportError:
        return None


def _zlib(data: bytes, block_size: int) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, block_size)
    except zlib.error as exc:
        raise CodecError(f"zlib: {exc}") from None
    if not d.eof:
        if d.unconsumed_tail:
            raise CodecError(f"zlib: decompresses to more than {block_size} bytes")
        raise CodecError("zlib: the stream is cut short")
    return out


def _lzo(data: bytes, block_size: int) -> bytes:
    lzo = _optional("lzo")
    if lzo is None:
        raise CodecMissingError("lzo")
    try:
        out: bytes = lzo.decompress(data, False, block_size)
    except lzo.error as exc:
        raise CodecError(f"lzo: {exc}") from None
    return out


def _varint(data: bytes) -> tuple[int, int]:
    """A snappy preamble: the little-endian base-128 uncompressed length, and its size."""
    value = 0
    for i in range(min(len(data), 5)):
        value |= (data[i] & 0x7F) << (7 * i)
        if not data[i] & 0x80:
            return value, i + 1
    raise CodecError("snappy: bad length preamble")


def _snappy(data: bytes, block_size: int) -> bytes:
    length, _ = _varint(data)
    if length != block_size:
        raise CodecError(f"snappy: the preamble says {length} bytes, not {block_size}")
    cramjam = _optional("cramjam")
    if cramjam is None:
        raise CodecMissingError("snappy")
    try:
        return bytes(cramjam.snappy.decompress_raw(data))
    except cramjam.DecompressionError as exc:
        # cramjam's messages begin with "snappy: " already: say it once.
        raise CodecError(f"snappy: {str(exc).removeprefix('snappy: ')}") from None


_zstd_state: dict[str, Any] = {}


def _zstd(data: bytes, block_size: int) -> bytes:
    zstandard = _optional("zstandard")
    if zstandard is None:
        raise CodecMissingError("zstd")
    dctx = _zstd_state.get("dctx")
    if dctx is None:
        dctx = _zstd_state["dctx"] = zstandard.ZstdDecompressor()
    try:
        size = zstandard.frame_content_size(data)
        if size not in (-1, block_size):
            raise CodecError(f"zstd: the frame says {size} bytes, not {block_size}")
        out: bytes = dctx.decompress(data, max_output_size=block_size)
    except zstandard.ZstdError as exc:
        raise CodecError(f"zstd: {exc}") from None
    return out


DECODERS: dict[int, Decoder] = {
    FLAG_ZLIB: _zlib,
    FLAG_LZO: _lzo,
    FLAG_SNAPPY: _snappy,
    FLAG_ZSTD: _zstd,
}


def available(flag: int) -> bool:
    """True if the codec of ``page_desc.flags`` value ``flag`` can be used here."""
    module = {FLAG_LZO: "lzo", FLAG_SNAPPY: "cramjam", FLAG_ZSTD: "zstandard"}.get(flag)
    return flag in (FLAG_RAW, FLAG_ZLIB) or (module is not None and _optional(module) is not None)


def decode(flag: int, data: bytes, block_size: int) -> bytes:
    """``block_size`` bytes of one page stored with ``flag``.

    :raises KeyError: for a flag that names no codec.
    :raises CodecMissingError: if the codec is not installed.
    :raises CodecError: if the data does not decode to exactly ``block_size`` bytes.
    """
    out = DECODERS[flag](data, block_size)
    if len(out) != block_size:
        raise CodecError(f"{CODEC_NAMES[flag]}: decompresses to {len(out)} bytes, not {block_size}")
    return out
