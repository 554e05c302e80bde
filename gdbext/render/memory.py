"""``read``'s output: memory as a hexdump, as 64- or 32-bit values, as raw bytes, or as JSON.

Each renderer iterates :meth:`~gdbext.frontend.memread.ReadResult.chunks` (the bytes are read
while the lines are made, a chunk at a time) and formats what it is given:

- ``hexdump``: ``hexdump -C``'s lines with the memory's addresses (16 hex digits)::

      ffffffff81000000  48 8d 25 51 3f 60 01 48  8d 3d f2 ff ff ff b9 01  |H.%Q?`.H.=......|

  lines start at the read's address and follow in steps of 16 bytes; after a gap, at its end;
- ``u64`` / ``u32``: one little-endian value a line, with its address;
- ``raw``: the bytes themselves (``bytes``, not lines: the command writes them to a file or a
  pipe); a gap stops it with :class:`~gdbext.errors.ReadGapError` unless ``fill`` is given;
- ``json``: an array, one object a line: ``{"address", "data"}`` (hex, at most 4 KiB) or
  ``{"address", "size", "gap", "reason"}``.

In the line formats a gap is one line, ``START-END  ** SIZE KIND: REASON **`` (the end
exclusive), never zeros.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from gdbext.errors import ReadGapError
from gdbext.frontend.memread import CHUNK, Chunk, Gap, ReadResult
from gdbext.units import format_size, plural

#: Bytes a hexdump line shows.
LINE = 16
#: ``hexdump -C``'s printable characters: ASCII 0x20..0x7e, the others as ``.``.
_ASCII = bytes(b if 0x20 <= b < 0x7F else ord(".") for b in range(256))
#: Bytes in one JSON ``data`` string.
JSON_DATA = 4096


def gap_line(gap: Gap) -> str:
    """A gap, as every line format shows it."""
    return f"{gap.address:016x}-{gap.end:016x}  ** {format_size(gap.size)} {gap.describe()} **"


def hexdump_line(address: int, data: bytes) -> str:
    """One ``hexdump -C`` line of up to 16 bytes at ``address``."""
    left = data[:8].hex(" ")
    right = data[8:16].hex(" ")
    text = data.translate(_ASCII).decode("ascii")
    return f"{address:016x}  {left:<23}  {right:<23}  |{text}|"


def _contiguous(result: ReadResult, unit: int) -> Iterator[tuple[int, bytes] | Gap]:
    """The bytes in runs of whole ``unit``s (the rest carried into the next chunk when that
    follows on, else a run of its own), and the gaps, in address order."""
    pending = b""
    at = 0
    for piece in result.chunks():
        if isinstance(piece, Gap):
            if pending:
                yield at, pending
                pending = b""
            yield piece
            continue
        if pending and piece.address == at + len(pending):
            data = pending + piece.data
        else:
            if pending:
                yield at, pending
            data, at = piece.data, piece.address
        cut = len(data) - len(data) % unit
        if cut:
            yield at, data[:cut]
        pending = data[cut:]
        at += cut
    if pending:
        yield at, pending


def render_hexdump(result: ReadResult) -> Iterator[str]:
    """``hexdump -C`` lines with the memory's addresses; a line per gap."""
    for run in _contiguous(result, LINE):
        if isinstance(run, Gap):
            yield gap_line(run)
            continue
        at, data = run
        view = memoryview(data)
        for i in range(0, len(data), LINE):
            yield hexdump_line(at + i, bytes(view[i : i + LINE]))


def _values(result: ReadResult, size: int) -> Iterator[str]:
    digits = 2 * size
    for run in _contiguous(result, size):
        if isinstance(run, Gap):
            yield gap_line(run)
            continue
        at, data = run
        whole = len(data) - len(data) % size
        for i in range(0, whole, size):
            value = int.from_bytes(data[i : i + size], "little")
            yield f"{at + i:016x}  0x{value:0{digits}x}"
        if whole < len(data):
            rest = data[whole:]
            count = f"{len(rest)} byte{plural(len(rest))}"
            yield f"{at + whole:016x}  {count}: {rest.hex(' ')}"


def render_u64(result: ReadResult) -> Iterator[str]:
    """One little-endian 64-bit value a line: ``ADDRESS  0xVALUE``; a line per gap."""
    return _values(result, 8)


def render_u32(result: ReadResult) -> Iterator[str]:
    """One little-endian 32-bit value a line: ``ADDRESS  0xVALUE``; a line per gap."""
    return _values(result, 4)


def render_raw(result: ReadResult, fill: int | None = None) -> Iterator[bytes]:
    """The bytes; a gap is ``fill`` repeated, or without ``fill`` stops the output with
    :class:`ReadGapError` (exit status 1)."""
    for piece in result.chunks():
        if isinstance(piece, Chunk):
            yield piece.data
            continue
        if fill is None:
            raise ReadGapError(piece.address, piece.size, piece.describe())
        left = piece.size
        while left:
            n = min(left, CHUNK)
            yield bytes([fill]) * n
            left -= n


def render_json(result: ReadResult) -> Iterator[str]:
    """A JSON array, one object a line: the bytes in hex, at most :data:`JSON_DATA` bytes an
    object, and the gaps."""
    yield "["
    first = True
    for run in _contiguous(result, 1):
        if isinstance(run, Gap):
            record: dict[str, object] = {
                "address": f"0x{run.address:x}",
                "size": run.size,
                "gap": run.kind,
                "reason": run.reason,
            }
            if run.paddr is not None:
                record["paddr"] = f"0x{run.paddr:x}"
            items = [record]
        else:
            at, data = run
            items = [
                {"address": f"0x{at + i:x}", "data": data[i : i + JSON_DATA].hex()}
                for i in range(0, len(data), JSON_DATA)
            ]
        for item in items:
            yield ("" if first else ",") + json.dumps(item)
            first = False
    yield "]"
