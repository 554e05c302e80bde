"""Small formatting helpers shared by the renderers."""

from __future__ import annotations

from gdbext.flags import GLOBAL, PAT_LARGE, PageTableFlags, flag_names


def hex64(value: int) -> str:
    """``0x`` and 16 hex digits, as ptdump prints addresses."""
    return f"0x{value:016x}"


def hexs(value: int) -> str:
    """A JSON-safe address: a hex string (jq cannot hold 64-bit integers)."""
    return f"0x{value:x}"


def plural(count: int) -> str:
    """The English plural ending for ``count`` things: ``"s"``, or ``""`` for one.

    >>> f"3 page{plural(3)}, 1 page{plural(1)}"
    '3 pages, 1 page'
    """
    return "" if count == 1 else "s"


def perms(user: bool, writable: bool, executable: bool) -> str:
    """``"rw-"`` style effective permissions, then ``user`` or ``kern``."""
    return (
        "r"
        + ("w" if writable else "-")
        + ("x" if executable else "-")
        + (" user" if user else " kern")
    )


def leaf_flag_names(entry: int, page_size: int) -> list[str]:
    """Names of a leaf's flag bits; bit 7 of a 4 KiB entry and bit 12 of a large one are PAT."""
    names = flag_names(entry)
    if page_size == 4096:
        names = ["PAT" if n == "HUGE_PAGE" else n for n in names]
    elif entry & PAT_LARGE:
        names.insert(names.index("HUGE_PAGE") + 1 if "HUGE_PAGE" in names else 0, "PAT")
    return names


def extra_tokens(entry: int) -> str:
    """Short tokens for the attributes text output shows besides permissions."""
    tokens = []
    if entry & GLOBAL:
        tokens.append("G")
    if entry & PageTableFlags.NO_CACHE:
        tokens.append("PCD")
    if entry & PageTableFlags.WRITE_THROUGH:
        tokens.append("PWT")
    return " ".join(tokens)
