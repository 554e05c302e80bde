"""Parsing and formatting of numbers, addresses and sizes given by users.

>>> parse_int("0xffff800000000000")
18446603336221196288
>>> parse_size("2M"), parse_size("4K"), parse_size("4096")
(2097152, 4096, 4096)
>>> format_size(2 * 1024 * 1024)
'2M'
"""

from __future__ import annotations

import re

_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE_RE = re.compile(r"^\s*(0x[0-9a-f]+|\d+)\s*([kmgtp]?)(i?b)?\s*$", re.IGNORECASE)


def parse_int(text: str | int) -> int:
    """An integer from ``"0x..."``, ``"0o..."``, ``"0b..."`` or decimal text (``_`` allowed).

    Raises :class:`ValueError` for anything else, including negative numbers.
    """
    if isinstance(text, bool):
        raise ValueError(f"not a number: {text!r}")
    value = text if isinstance(text, int) else int(text.strip().replace("_", ""), 0)
    if value < 0:
        raise ValueError(f"negative value: {text!r}")
    return value


def parse_size(text: str | int) -> int:
    """A byte count from ``"4K"``, ``"2M"``, ``"1G"``, ``"256MiB"``, ``"0x1000"`` or ``4096``."""
    if isinstance(text, bool):
        raise ValueError(f"not a size: {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"negative size: {text}")
        return text
    match = _SIZE_RE.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r}")
    return int(match.group(1), 0) * _SIZE_UNITS[match.group(2).upper()]


def format_size(size: int) -> str:
    """``4096`` -> ``"4K"``; the largest unit that divides the size exactly (as ptdump does)."""
    for unit in "PTGMK":
        scale = _SIZE_UNITS[unit]
        if size and size % scale == 0:
            return f"{size // scale}{unit}"
    return f"{size}B" if size else "0B"
