"""Small formatting helpers shared by the renderers, and the styles text output is marked up
with."""

from __future__ import annotations

from typing import NamedTuple

from gdbext.errors import TableNotCapturedError, TableOutsideRamError, TranslationError
from gdbext.flags import GLOBAL, PAT_LARGE, PRESENT, PageTableFlags, flag_names, perm_text


def hex64(value: int) -> str:
    """``0x`` and 16 hex digits, as ptdump prints addresses."""
    return f"0x{value:016x}"


def hexs(value: int) -> str:
    """A JSON-safe address: a hex string (jq cannot hold 64-bit integers)."""
    return f"0x{value:x}"


class Style(NamedTuple):
    """How text renderers mark up the fields they know: each role's escape sequence (empty:
    none) and the one that ends it. The front end chooses (:data:`ANSI` on a terminal with its
    styling on); renderers apply it to what they format, never to text already rendered."""

    #: Linux section markers (``---[ Modules ]---``).
    section: str = ""
    #: Permissions that are writable and executable (``rwx``).
    wx: str = ""
    #: Anomalies and addresses that did not translate.
    warning: str = ""
    #: Other ``#`` lines (the header, the summary).
    comment: str = ""
    reset: str = ""

    def paint(self, code: str, text: str) -> str:
        """``text`` marked up with ``code`` (one of this style's fields).

        >>> ANSI.paint(ANSI.wx, "rwx"), PLAIN.paint(PLAIN.wx, "rwx")
        ('\\x1b[1;31mrwx\\x1b[m', 'rwx')
        """
        return f"{code}{text}{self.reset}" if code else text

    def paint_word(self, lines: list[str], index: int, code: str) -> list[str]:
        """``lines`` (one text, wrapped) with its word number ``index`` (counted over every
        line, split at spaces) marked up with ``code``."""
        if not code:
            return lines
        out = []
        for line in lines:
            words = line.split(" ")
            count = sum(1 for w in words if w)
            if 0 <= index < count:
                nth = [i for i, w in enumerate(words) if w][index]
                words[nth] = self.paint(code, words[nth])
            index -= count
            out.append(" ".join(words))
        return out


#: No markup: what every output is unless the front end asks for colour.
PLAIN = Style()
#: Terminal colours: markers bold, W+X permissions red, warnings yellow, comments dim.
ANSI = Style(
    section="\x1b[1m", wx="\x1b[1;31m", warning="\x1b[33m", comment="\x1b[2m", reset="\x1b[m"
)


def perms(user: bool, writable: bool, executable: bool, style: Style = PLAIN) -> str:
    """``"rw-"`` style effective permissions, then ``user`` or ``kern``; ``rwx`` in ``style``'s
    W+X colour."""
    text = perm_text(user, writable, executable)
    if writable and executable:
        return style.paint(style.wx, text[:3]) + text[3:]
    return text


def leaf_flag_names(entry: int, page_size: int) -> list[str]:
    """Names of a leaf's flag bits; bit 7 of a 4 KiB entry and bit 12 of a large one are PAT."""
    names = flag_names(entry)
    if page_size == 4096:
        names = ["PAT" if n == "HUGE_PAGE" else n for n in names]
    elif entry & PAT_LARGE:
        names.insert(names.index("HUGE_PAGE") + 1 if "HUGE_PAGE" in names else 0, "PAT")
    return names


#: The bits :func:`extra_tokens` names (plain ints: a line of text output tests them).
_NO_CACHE = int(PageTableFlags.NO_CACHE)
_WRITE_THROUGH = int(PageTableFlags.WRITE_THROUGH)


def extra_tokens(entry: int) -> str:
    """Short tokens for the attributes text output shows besides permissions."""
    tokens = []
    if entry & GLOBAL:
        tokens.append("G")
    if entry & _NO_CACHE:
        tokens.append("PCD")
    if entry & _WRITE_THROUGH:
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
