"""Parsing and formatting of numbers, addresses and sizes given by users.

>>> parse_int("0xffff800000000000")
18446603336221196288
>>> parse_size("2M"), parse_size("4K"), parse_size("4096")
(2097152, 4096, 4096)
>>> format_size(2 * 1024 * 1024)
'2M'
>>> shown(b"HdrS"), shown(b"\\x00\\xff"), shown("zz"), shown("a b")
('"HdrS"', '0x00ff', 'zz', '"a b"')
"""

from __future__ import annotations

import re

_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE_RE = re.compile(r"^\s*(0x[0-9a-f]+|\d+)\s*([kmgtp]?)(i?b)?\s*$", re.IGNORECASE)
_HEX_WORD = re.compile(r"^[0-9a-f_]*[a-f][0-9a-f_]*$", re.IGNORECASE)
_PLAIN = re.compile(r"^[\w.,:/+=@%^~\[\]()<>{}#-]+$")


def shown(value: object) -> str:
    """``value`` as a message shows it, without Python's reprs: text as it is (in double
    quotes when it is empty or has spaces or other characters, escapes for unprintable ones),
    bytes as ASCII text in double quotes when printable, else as hex digits; anything else
    (a JSON value) as ``str()`` gives it."""
    if not isinstance(value, (str, bytes)):
        return str(value)
    if isinstance(value, bytes):
        if value and all(0x20 <= b < 0x7F for b in value):
            return '"' + value.decode("ascii") + '"'
        return "0x" + value.hex()
    if _PLAIN.match(value):
        return value
    escaped = value.encode("unicode_escape").decode("ascii").replace('"', '\\"')
    return f'"{escaped}"'


def not_a_number(text: str) -> str:
    """The message for ``text`` that is not a number, with a hint where it is hex without
    ``0x``: ``not a number: dead (did you mean 0xdead?)``."""
    word = text.strip()
    hint = f" (did you mean 0x{word}?)" if _HEX_WORD.match(word) else ""
    return f"not a number: {shown(text)}{hint}"


def parse_int(text: str | int) -> int:
    """An integer from ``"0x..."``, ``"0o..."``, ``"0b..."`` or decimal text (``_`` allowed).

    Raises :class:`ValueError` for anything else, including negative numbers.
    """
    if isinstance(text, bool):
        raise ValueError(f"not a number: {text}")
    if isinstance(text, int):
        value = text
    else:
        try:
            value = int(text.strip().replace("_", ""), 0)
        except ValueError:
            raise ValueError(not_a_number(text)) from None
    if value < 0:
        raise ValueError(f"{shown(str(text))} is negative")
    return value


def parse_size(text: str | int) -> int:
    """A byte count from ``"4K"``, ``"2M"``, ``"1G"``, ``"256MiB"``, ``"0x1000"`` or ``4096``:
    the one size syntax of scenarios and command-line options."""
    if isinstance(text, bool):
        raise ValueError(f"not a size: {text}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"negative size: {text}")
        return text
    match = _SIZE_RE.match(text)
    if match is None:
        if text.strip().startswith("-"):
            raise ValueError(f"{shown(text)} is negative")
        hint = f" (did you mean 0x{text.strip()}?)" if _HEX_WORD.match(text.strip()) else ""
        raise ValueError(f"not a size: {shown(text)}{hint}")
    return int(match.group(1), 0) * _SIZE_UNITS[match.group(2).upper()]


#: :func:`format_size`'s units, largest first.
_FORMAT_UNITS = tuple((unit, _SIZE_UNITS[unit]) for unit in "PTGMK")


def format_size(size: int) -> str:
    """``4096`` -> ``"4K"``; the largest unit that divides the size exactly (as ptdump does)."""
    if not size:
        return "0B"
    for unit, scale in _FORMAT_UNITS:
        if not size % scale:
            return f"{size // scale}{unit}"
    return f"{size}B"


def plural(count: int) -> str:
    """The English plural ending for ``count`` things: ``"s"``, or ``""`` for one.

    >>> f"3 page{plural(3)}, 1 page{plural(1)}"
    '3 pages, 1 page'
    """
    return "" if count == 1 else "s"
