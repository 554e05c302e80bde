"""The bytes of a kdump file, seekable or in makedumpfile's flattened form, behind one interface.

A kdump-compressed file is laid out at fixed offsets (header, sub-header, bitmaps, page
descriptors, page data). makedumpfile's *flattened* form (``makedumpfile -F``, QEMU's
``dump-guest-memory -z|-l|-s``) streams that same layout as records instead:

============  ================================================================================
file offset   contents
============  ================================================================================
0             flat header, 4096 bytes: ``signature[16] = "makedumpfile\\0\\0\\0\\0"``,
              ``i64 type`` (big-endian, 1), ``i64 version`` (big-endian, 1), zero padding
4096          records ``{i64 offset; i64 size; u8 data[size]}`` (big-endian), each meaning
              "these bytes belong at ``offset`` of the seekable file", in any order
end           the terminator record ``{-1, -1}``
============  ================================================================================

:class:`FlatKdumpFile` indexes the records in one pass over their headers (seeking past the
data, never loading the file) and then reads the *virtual* seekable file through the index:
bytes no record wrote read as zeros, as they would in the file makedumpfile ``-R`` rebuilds.
:class:`SeekableKdumpFile` is the plain form. Both read through a read-only ``mmap``.

Errors name the real file and a real file offset: for a flattened file, the position in the
flattened file of the byte asked for, with the virtual offset alongside.
"""

from __future__ import annotations

import mmap
import os
from bisect import bisect_right

from gdbext.errors import InputError
from gdbext.formats.kdump import (
    FLAT_END,
    FLAT_HEADER,
    FLAT_HEADER_SIZE,
    FLAT_RECORD,
    FLAT_SIGNATURE,
    FLAT_TYPE,
    FLAT_VERSION,
)

#: No record may reach beyond this virtual offset: 4 PiB, far past the layout of any dump of a
#: 52-bit physical address space, far below what overflows anything.
MAX_VIRTUAL_SIZE = 1 << 52


class KdumpBytes:
    """Random access to the bytes of the seekable kdump layout (the "virtual file").

    :ivar path: the file, for error messages.
    :ivar size: the size of the virtual file (for a flattened file, the end of its last record).
    :ivar file_size: the size of the file on disk; every byte of the virtual file that is not
        a hole comes from it, so no region bigger than this is ever materialised.
    :ivar form: ``"kdump"`` or ``"kdump (flattened)"``.
    """

    path: str
    size: int
    file_size: int
    form: str

    def read(self, offset: int, size: int) -> bytes:
        """``size`` bytes at virtual ``offset``; the caller checks ``offset + size <= size``."""
        raise NotImplementedError

    def file_offset(self, offset: int) -> int | None:
        """The offset in the real file of the byte at virtual ``offset`` (None for a hole)."""
        raise NotImplementedError

    def error(self, message: str, offset: int) -> InputError:
        """An :class:`InputError` about the byte at virtual ``offset``, naming the real file."""
        return InputError(message, path=self.path, offset=offset)

    def close(self) -> None:
        raise NotImplementedError


def _map(path: str) -> tuple[mmap.mmap | None, int]:
    """A read-only mapping of ``path`` and its size (no mapping for an empty file)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return None, 0
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), size
    except OSError as exc:
        raise InputError(f"cannot read the dump: {exc.strerror or exc}", path=path) from None
    except ValueError as exc:  # mmap of something that is not a regular file
        raise InputError(f"cannot map the dump: {exc}", path=path) from None


class SeekableKdumpFile(KdumpBytes):
    """A kdump file in its plain, seekable layout: virtual offsets are file offsets."""

    form = "kdump"

    def __init__(self, path: str, mm: mmap.mmap, size: int) -> None:
        self.path = path
        self._mm = mm
        self.size = self.file_size = size

    def read(self, offset: int, size: int) -> bytes:
        return self._mm[offset : offset + size]

    def file_offset(self, offset: int) -> int | None:
        return offset

    def close(self) -> None:
        self._mm.close()


class FlatKdumpFile(KdumpBytes):
    """A flattened kdump file, read through an index of its records.

    :raises InputError: for a bad header, a record with a negative or absurd offset or size,
        records that overlap, data that runs past the end of the file, or a missing
        terminator.
    """

    form = "kdump (flattened)"

    def __init__(self, path: str, mm: mmap.mmap, size: int) -> None:
        self.path = path
        self._mm = mm
        self.file_size = size
        if size < FLAT_HEADER_SIZE:
            raise InputError(
                f"the flattened header needs {FLAT_HEADER_SIZE} bytes, the file has {size}",
                path=path,
                offset=size,
            )
        header_fields = FLAT_HEADER.unpack(mm)
        ftype, version = header_fields["type"], header_fields["version"]
        if ftype != FLAT_TYPE or version != FLAT_VERSION:
            raise InputError(
                f"flattened header type {ftype} version {version}, expected "
                f"{FLAT_TYPE} and {FLAT_VERSION}",
                path=path,
                offset=FLAT_HEADER.offset("type"),
            )
        records: list[tuple[int, int, int]] = []  # (virtual start, size, file position)
        pos = FLAT_HEADER_SIZE
        unpack = FLAT_RECORD.struct.unpack_from
        header = FLAT_RECORD.size
        while True:  # each pass moves pos forward by >= 16 bytes: bounded by the file size
            if pos + header > size:
                raise InputError(
                    "the records end without the {-1, -1} terminator (truncated file?)",
                    path=path,
                    offset=pos,
                )
            offset, length = unpack(mm, pos)
            if offset == FLAT_END and length == FLAT_END:
                break
            if offset < 0 or length < 0 or offset + length > MAX_VIRTUAL_SIZE:
                raise InputError(
                    f"record with offset 0x{offset & (1 << 64) - 1:x} and size "
                    f"0x{length & (1 << 64) - 1:x} is out of range",
                    path=path,
                    offset=pos,
                )
            if pos + header + length > size:
                raise InputError(
                    f"record of 0x{length:x} bytes runs past the end of the file "
                    f"(0x{size:x} bytes; truncated?)",
                    path=path,
                    offset=pos,
                )
            if length:
                records.append((offset, length, pos + header))
            pos += header + length
        records.sort()
        previous_end = 0
        previous_pos = FLAT_HEADER_SIZE
        for start, length, data_pos in records:
            if start < previous_end:
                raise InputError(
                    f"record for 0x{start:x}-0x{start + length:x} overlaps the record at file "
                    f"offset 0x{previous_pos - header:x}, which ends at 0x{previous_end:x}",
                    path=path,
                    offset=data_pos - header,
                )
            previous_end = start + length
            previous_pos = data_pos
        self.records = len(records)
        self._starts = [r[0] for r in records]
        self._ends = [r[0] + r[1] for r in records]
        self._pos = [r[2] for r in records]
        self.size = previous_end

    def read(self, offset: int, size: int) -> bytes:
        starts = self._starts
        i = bisect_right(starts, offset) - 1
        if i >= 0 and offset + size <= self._ends[i]:
            p = self._pos[i] + offset - starts[i]
            return self._mm[p : p + size]
        out = bytearray(size)  # holes read as zeros
        end = offset + size
        i = max(i, 0)
        ends, pos, mm = self._ends, self._pos, self._mm
        while i < len(starts) and starts[i] < end:
            lo, hi = max(starts[i], offset), min(ends[i], end)
            if lo < hi:
                p = pos[i] + lo - starts[i]
                out[lo - offset : hi - offset] = mm[p : p + hi - lo]
            i += 1
        return bytes(out)

    def file_offset(self, offset: int) -> int | None:
        i = bisect_right(self._starts, offset) - 1
        if i >= 0 and offset < self._ends[i]:
            return self._pos[i] + offset - self._starts[i]
        return None

    def error(self, message: str, offset: int) -> InputError:
        real = self.file_offset(offset)
        where = f"kdump offset 0x{offset:x}" + ("" if real is not None else ", in no record")
        return InputError(f"{message} ({where})", path=self.path, offset=real)

    def close(self) -> None:
        self._mm.close()


def open_kdump_bytes(path: str) -> KdumpBytes:
    """The kdump file at ``path`` as a :class:`KdumpBytes`, flattened form detected by magic.

    :raises InputError: if the file cannot be read or its flattened form is malformed.
    """
    mm, size = _map(path)
    if mm is None:
        raise InputError("the file is empty", path=path, offset=0)
    try:
        if mm[: len(FLAT_SIGNATURE)] == FLAT_SIGNATURE:
            return FlatKdumpFile(path, mm, size)
        return SeekableKdumpFile(path, mm, size)
    except BaseException:
        mm.close()
        raise
