"""A memory map given by the user as JSON, for when no ``BootInfo`` can be read.

The JSON is a list of regions, or an object whose ``"regions"`` key holds that list. Each
region is ``{"start": ..., "end": ..., "kind": ...}`` with ``end`` exclusive; numbers are
JSON integers or strings such as ``"0x100000"`` (see :func:`gdbext.units.parse_int`).

>>> load_memmap_json('[{"start": "0x100000", "end": "0x8000000", "kind": "Usable"}]')
(MemoryRegion(start=0x100000, end=0x8000000, kind='Usable'),)
"""

from __future__ import annotations

import os

from gdbext.addr import U64_MAX
from gdbext.errors import InputError
from gdbext.heap import MemoryRegion
from gdbext.jsonfile import load_json_file, load_json_text
from gdbext.units import parse_int, shown

#: How a memory map given as text (not as a file) is named in error messages.
TEXT_SOURCE = "<memory map JSON>"


def load_memmap_json(path_or_text: str | os.PathLike[str]) -> tuple[MemoryRegion, ...]:
    """The regions of a JSON memory map, from a file path or from the JSON text itself.

    A ``str`` whose first non-blank character is ``[`` or ``{`` is JSON text; any other
    ``str`` or path-like object names a file. Errors are :class:`~gdbext.errors.InputError`
    naming the file (or ``<memory map JSON>``) and the index of the bad region.

    >>> load_memmap_json('{"regions": [{"start": 0, "end": 4096, "kind": "Bootloader"}]}')
    (MemoryRegion(start=0x0, end=0x1000, kind='Bootloader'),)
    """
    text: str | None
    if isinstance(path_or_text, str) and path_or_text.lstrip()[:1] in ("[", "{"):
        source, text = TEXT_SOURCE, path_or_text
    else:
        source = str(path_or_text)
        text = None
    document = (
        load_json_file(source, "memory map") if text is None else load_json_text(text, source)
    )
    if isinstance(document, dict):
        if "regions" not in document:
            raise InputError('a JSON object memory map needs a "regions" list', path=source)
        document = document["regions"]
    if not isinstance(document, list):
        raise InputError("a memory map is a JSON list of regions", path=source)
    return tuple(_region(element, index, source) for index, element in enumerate(document))


def _region(element: object, index: int, source: str) -> MemoryRegion:
    if not isinstance(element, dict):
        raise InputError(f"region {index} is not a JSON object", path=source)
    for key in ("start", "end", "kind"):
        if key not in element:
            raise InputError(f"region {index} has no {shown(key)}", path=source)
    start = _address(element["start"], "start", index, source)
    end = _address(element["end"], "end", index, source)
    kind = element["kind"]
    if not isinstance(kind, str) or not kind:
        raise InputError(f"region {index}: kind must be a non-empty string", path=source)
    if start > end:
        raise InputError(
            f"region {index} starts at 0x{start:x} after its end 0x{end:x}", path=source
        )
    return MemoryRegion(start, end, kind)


def _address(value: object, key: str, index: int, source: str) -> int:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise InputError(
            f"region {index}: {shown(key)} must be an integer or a string, not {shown(value)}",
            path=source,
        )
    try:
        number = parse_int(value)
    except ValueError:
        raise InputError(
            f"region {index}: {shown(key)} is not a number: {shown(value)}", path=source
        ) from None
    if number > U64_MAX + 1:
        raise InputError(
            f"region {index}: {shown(key)} 0x{number:x} is beyond 64 bits", path=source
        )
    return number
