"""Physical memory of a dump file whose pages are stored uncompressed: ELF, LiME, raw images.

A dump of this kind is a list of segments: ``memsz`` bytes of physical memory at ``paddr``,
whose first ``filesz`` bytes are stored at file ``offset`` and whose rest reads as zeros (ELF's
``p_filesz < p_memsz``). :class:`SegmentMapper` reads them through an ``mmap`` of the file
(``ACCESS_READ``: the file is never written and never loaded whole).

Segments are checked when the mapper is built: data past the end of the file, an address range
past 2^64, or two segments that give the same physical byte different contents raise
:class:`~gdbext.errors.InputError` naming the file and the offset of the offending header.
Segments that overlap with the *same* contents (QEMU's paging dumps store each physical page
once and point several PT_LOADs at it) are merged.

>>> import mmap, tempfile
>>> with tempfile.TemporaryFile() as f:
...     _ = f.write(bytes(range(16)))
...     f.flush()
...     m = SegmentMapper("x.core", mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ),
...                       [Segment(0x1000, 12, 4, 8, header_offset=0)])
>>> m.read(0x1006, 4).hex(), m.is_captured(0x100b), m.is_captured(0x100c)
('0a0b0000', True, False)
>>> m.read(0x100a, 4)
Traceback (most recent call last):
...
gdbext.errors.PhysMemoryError: physical read of 4 bytes at 0x100a: not in the dump x.core
>>> m.close()
"""

from __future__ import annotations

import errno
import mmap
import os
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from gdbext.addr import AddrRange
from gdbext.errors import InputError, PhysMemoryError, ReadOnlyError

_U64_LIMIT = 1 << 64


class Segment(NamedTuple):
    """One stored range of physical memory, as a header in the file describes it."""

    paddr: int
    memsz: int
    #: File offset of the first stored byte.
    offset: int
    #: Bytes stored in the file (``<= memsz``); the rest of ``memsz`` reads as zeros.
    filesz: int
    #: File offset of the header that describes the segment (for errors).
    header_offset: int = 0


def open_mmap(path: str) -> mmap.mmap:
    """``path`` mapped read-only; :class:`InputError` if it cannot be opened or is empty."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise InputError(f"cannot open: {exc.strerror or exc}", path) from None
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise InputError("the file is empty", path, 0)
        try:
            return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot map the file: {exc}", path) from None
    finally:
        os.close(fd)


class SegmentMapper:
    """A read-only :class:`~gdbext.mapper.PhysMapper` over the segments of an mmapped dump.

    :param path: the dump file, for messages.
    :param data: the file's contents (an ``mmap``; closed by :meth:`close`).
    :param segments: the segments, in any order.
    :raises InputError: for segments the file cannot hold or that contradict each other.

    Reads are a bisect over the merged pieces; a read inside the piece the last read used (the
    engine reads 4 KiB tables, mostly from one large piece) skips even that.
    """

    read_only = True

    def __init__(self, path: str, data: mmap.mmap | bytes, segments: Iterable[Segment]) -> None:
        self.path = path
        self._data = data
        self._reason = f"not in the dump {path}"
        pieces = _merge(path, len(data), segments, data)
        self._starts = [p[0] for p in pieces]
        self._ends = [p[1] for p in pieces]
        # File offset minus physical address, or None for a piece that reads as zeros.
        self._deltas: list[int | None] = [p[2] for p in pieces]
        self.segment_count = len(pieces)
        # The piece the last read used: [lo, hi) stored at paddr + delta.
        self._lo = self._hi = 0
        self._delta = 0
        self._ram = _ranges(pieces)
        # The file's data extents (start and end file offsets), found on the first search.
        self._extents: tuple[list[int], list[int]] | None = None

    # --- PhysMapper ---------------------------------------------------------------------------

    def read(self, paddr: int, size: int) -> bytes:
        """``size`` bytes at ``paddr``; :class:`PhysMemoryError` if any is not in the dump."""
        if self._lo <= paddr and paddr + size <= self._hi and size >= 0:
            offset = paddr + self._delta
            return self._data[offset : offset + size]
        return self._read_slow(paddr, size)

    def _read_slow(self, paddr: int, size: int) -> bytes:
        if size < 0 or paddr < 0:
            raise PhysMemoryError(paddr, size, self._reason, "read")
        i = bisect_right(self._starts, paddr) - 1
        if i < 0 or paddr >= self._ends[i]:
            raise PhysMemoryError(paddr, size, self._reason, "read")
        end = paddr + size
        delta = self._deltas[i]
        if end <= self._ends[i]:
            if delta is None:
                return bytes(size)
            self._lo, self._hi, self._delta = self._starts[i], self._ends[i], delta
            return self._data[paddr + delta : end + delta]
        # Spans pieces: each must start where the previous one ends.
        out = bytearray()
        pos = paddr
        count = len(self._starts)
        while pos < end:
            if i >= count or self._starts[i] > pos:
                raise PhysMemoryError(paddr, size, self._reason, "read")
            stop = min(end, self._ends[i])
            delta = self._deltas[i]
            if delta is None:
                out += bytes(stop - pos)
            else:
                out += self._data[pos + delta : stop + delta]
            pos = stop
            i += 1
        return bytes(out)

    def write(self, paddr: int, data: bytes) -> None:
        raise ReadOnlyError(f"the dump {self.path} is read-only")

    # --- Dump mapper extras -------------------------------------------------------------------

    def is_captured(self, paddr: int) -> bool:
        """True if the byte at ``paddr`` is in the dump (stored, or zero-filled by it)."""
        i = bisect_right(self._starts, paddr) - 1
        return i >= 0 and paddr < self._ends[i]

    @property
    def ram(self) -> list[AddrRange]:
        """The physical ranges the dump holds, adjacent segments joined."""
        return list(self._ram)

    def find(self, needle: bytes, start: int, end: int) -> int:
        """The lowest physical address in ``[start, end)`` where ``needle`` is stored, or -1.

        Searches the file directly (``mmap.find``, no copies); zero-filled pieces and matches
        that straddle two pieces are not found. The holes of a sparse file read as zeros, so a
        needle that is not all zeros is looked for only around the file's data (a minimised
        dump or a sparse raw image is mostly holes, which would otherwise be paged in).
        """
        if not needle:
            return -1
        i = max(bisect_right(self._starts, start) - 1, 0)
        for j in range(i, len(self._starts)):
            lo, hi, delta = self._starts[j], self._ends[j], self._deltas[j]
            if lo >= end:
                break
            lo, hi = max(lo, start), min(hi, end)
            if delta is None or hi - lo < len(needle):
                continue
            at = self._find_stored(needle, lo + delta, hi + delta)
            if at >= 0:
                return at - delta
        return -1

    def _find_stored(self, needle: bytes, start: int, end: int) -> int:
        """The lowest file offset in ``[start, end)`` where ``needle`` is, or -1: only in the
        windows of the file that reach its data (a match of a needle that is not all zeros
        overlaps the data by one byte at least)."""
        if self._extents is None:
            self._extents = _data_extents(self.path, self._data)
        starts, ends = self._extents
        if not starts or not needle.strip(b"\0"):
            return _find(self._data, needle, start, end)
        reach = len(needle) - 1
        lo = hi = -1  # the window being grown: overlapping windows are searched as one
        for k in range(bisect_right(ends, start - reach), len(starts)):
            w_lo, w_hi = max(starts[k] - reach, start), min(ends[k] + reach, end)
            if w_lo >= end:
                break
            if w_lo <= hi:
                hi = max(hi, w_hi)
                continue
            if hi - lo >= len(needle) and (at := _find(self._data, needle, lo, hi)) >= 0:
                return at
            lo, hi = w_lo, w_hi
        if hi - lo >= len(needle):
            return _find(self._data, needle, lo, hi)
        return -1

    def close(self) -> None:
        """Unmap the file (reads afterwards raise ``ValueError``)."""
        if isinstance(self._data, mmap.mmap):
            self._data.close()

    def __repr__(self) -> str:
        return f"SegmentMapper({self.path!r}, pieces={self.segment_count})"


def _find(data: bytes | mmap.mmap, needle: bytes, start: int, end: int) -> int:
    """``data.find(needle, start, end)``, safe at the very end of an mmap.

    CPython 3.11.2's ``mmap.find`` (the Python GDB embeds) reads one byte past ``end``; when
    ``end`` is the end of a mapping whose size is a multiple of the page size (every raw RAM
    image), that byte is unmapped and the process dies with SIGSEGV. So the search stops one
    byte short, and the one window it then misses, the last, is compared by hand.
    """
    if end < len(data) or not isinstance(data, mmap.mmap):
        return data.find(needle, start, end)
    at = data.find(needle, start, end - 1) if end - 1 - start >= len(needle) else -1
    last = end - len(needle)
    if at < 0 and last >= start and data[last:end] == needle:
        at = last
    return at


def _data_extents(path: str, data: mmap.mmap | bytes) -> tuple[list[int], list[int]]:
    """Where the file ``path`` (mapped as ``data``) stores data, as sorted extent starts and
    ends (``SEEK_DATA``/``SEEK_HOLE``); empty lists when that cannot be told (not a mapped
    file, a system or file system that cannot say, a file at ``path`` now whose size is not the
    mapping's), and the whole file is then searched."""
    seek_data, seek_hole = getattr(os, "SEEK_DATA", None), getattr(os, "SEEK_HOLE", None)
    if not isinstance(data, mmap.mmap) or seek_data is None or seek_hole is None:
        return [], []
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return [], []
    starts: list[int] = []
    ends: list[int] = []
    try:
        size = os.fstat(fd).st_size
        if size != len(data):
            return [], []
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, seek_data)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no data after pos
                    break
                return [], []
            pos = os.lseek(fd, start, seek_hole)
            starts.append(start)
            ends.append(pos)
    except OSError:
        return [], []
    finally:
        os.close(fd)
    if not starts:  # all holes: a window of nothing, so that nothing is searched
        return [size], [size]
    return starts, ends


_Piece = tuple[int, int, "int | None", int]


def _check(path: str, file_size: int, s: Segment) -> None:
    where = s.header_offset
    if s.paddr < 0 or s.memsz < 0 or s.offset < 0 or s.filesz < 0:
        raise InputError("segment with a negative field", path, where)
    if s.filesz > s.memsz:
        raise InputError(
            f"segment file size 0x{s.filesz:x} exceeds its memory size 0x{s.memsz:x}",
            path,
            where,
        )
    if s.paddr + s.memsz > _U64_LIMIT:
        raise InputError(
            f"segment 0x{s.paddr:x} + 0x{s.memsz:x} runs past the 64-bit address space",
            path,
            where,
        )
    if s.offset + s.filesz > file_size:
        raise InputError(
            f"segment data at file offset 0x{s.offset:x} + 0x{s.filesz:x} runs past the "
            f"end of the file (0x{file_size:x} bytes)",
            path,
            where,
        )


def _overlap_error(path: str, s: Segment, other: Segment) -> InputError:
    return InputError(
        f"segment 0x{s.paddr:x}-0x{s.paddr + s.memsz:x} overlaps segment "
        f"0x{other.paddr:x}-0x{other.paddr + other.memsz:x} (header at offset "
        f"0x{other.header_offset:x}) with different contents",
        path,
        s.header_offset,
    )


def _merge(
    path: str,
    file_size: int,
    segments: Iterable[Segment],
    data: bytes | mmap.mmap | None = None,
) -> list[_Piece]:
    """Check the segments and merge them into disjoint sorted pieces ``(start, end, delta,
    header_offset)`` where ``delta`` is file offset minus physical address (``None``: zeros).

    A segment entirely inside another one is an alias of memory the other already holds
    (``/proc/vmcore``'s kernel-text PT_LOAD inside its RAM PT_LOAD; QEMU's paging dumps) and is
    dropped, if it stores the same bytes (the same file offsets, or equal contents, compared
    from ``data``). A segment that overlaps the end of another one is accepted only if both
    store the shared bytes at the same file offsets; otherwise :class:`InputError`.
    """
    checked: list[Segment] = []
    for s in segments:
        _check(path, file_size, s)
        if s.memsz:
            checked.append(s)
    checked.sort(key=lambda s: (s.paddr, -s.memsz, s.header_offset))
    pieces: list[_Piece] = []
    cover: Segment | None = None
    cover_end = 0
    for s in checked:
        end = s.paddr + s.memsz
        if cover is not None and s.paddr < cover_end:
            if end <= cover_end:
                if not _same_bytes(s, cover, data):
                    raise _overlap_error(path, s, cover)
                continue  # an alias inside ``cover``
            same = s.offset - s.paddr == cover.offset - cover.paddr
            if not same or cover.filesz != cover.memsz:
                raise _overlap_error(path, s, cover)
        cover, cover_end = s, end
        if s.filesz:
            pieces.append((s.paddr, s.paddr + s.filesz, s.offset - s.paddr, s.header_offset))
        if s.memsz > s.filesz:
            pieces.append((s.paddr + s.filesz, end, None, s.header_offset))
    merged: list[_Piece] = []
    for piece in pieces:
        start, end, delta, where = piece
        if merged:
            last_start, last_end, last_delta, last_where = merged[-1]
            if start < last_end and delta != last_delta:
                raise InputError(
                    f"segment bytes 0x{start:x}-0x{end:x} overlap 0x{last_start:x}-"
                    f"0x{last_end:x} (header at offset 0x{last_where:x}) with different "
                    "contents",
                    path,
                    where,
                )
            if start <= last_end and delta == last_delta:
                merged[-1] = (last_start, max(end, last_end), delta, last_where)
                continue
        merged.append(piece)
    return merged


def _same_bytes(inner: Segment, cover: Segment, data: bytes | mmap.mmap | None) -> bool:
    """Whether ``inner`` (inside ``cover``) stores what ``cover`` stores for its addresses."""
    if (
        inner.offset - inner.paddr == cover.offset - cover.paddr
        and inner.memsz == inner.filesz
        and inner.paddr + inner.memsz <= cover.paddr + cover.filesz
    ):
        return True  # the very same file bytes (QEMU's paging dumps)
    if data is None:
        return True  # nothing to compare with: trust the headers
    chunk = 1 << 20
    # Past both segments' file bytes both read zeros: compare at most the file's worth.
    upto = min(inner.memsz, max(inner.filesz, cover.filesz - (inner.paddr - cover.paddr)))
    for pos in range(0, upto, chunk):
        size = min(chunk, upto - pos)
        there = inner.paddr - cover.paddr + pos
        if _bytes_at(inner, pos, size, data) != _bytes_at(cover, there, size, data):
            return False
    return True


def _bytes_at(s: Segment, pos: int, size: int, data: bytes | mmap.mmap) -> bytes:
    """``size`` bytes of segment ``s``'s memory from ``pos`` (file bytes, then zero fill)."""
    backed = max(0, min(size, s.filesz - pos))
    head = data[s.offset + pos : s.offset + pos + backed] if backed else b""
    return bytes(head) + bytes(size - backed)


def _ranges(pieces: Sequence[_Piece]) -> list[AddrRange]:
    ranges: list[AddrRange] = []
    for start, end, _delta, _where in pieces:
        if ranges and ranges[-1].end == start:
            ranges[-1] = AddrRange(ranges[-1].start, end)
        else:
            ranges.append(AddrRange(start, end))
    return ranges
