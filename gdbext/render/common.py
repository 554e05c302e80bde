"""Small formatting helpers shared by the renderers."""

from __future__ import annotations

from gdbext.errors import TableNotCapturedError, TableOutsideRamError, TranslationError
from gdbext.flags import GLOBAL, PAT_LARGE, PRESENT, PageTableFlags, flag_names


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


def step_flag_names(entry: int, page_size: int | None = None) -> list[str]:
    """Decoded flags of one walk step's entry: a leaf's (``page_size`` given) as
    :func:`leaf_flag_names`, a table link's as :func:`~gdbext.flags.flag_names`; none for an
    entry that is not present (its other bits are the OS's, not the MMU's)."""
    if not entry & PRESENT:
        return []
    return flag_names(entry) if page_size is None else leaf_flag_names(entry, page_size)


def unread_table(err: TranslationError) -> tuple[int, int, int, str] | None:
    """Where a walk found a table it could not read: ``(level, table, index, why)``, or None."""
    if isinstance(err, TableNotCapturedError):
        return err.table_level, err.table, err.table_index, "not captured in the dump"
    if isinstance(err, TableOutsideRamError):
        return err.table_level, err.table, err.table_index, "outside physical memory"
    return None
