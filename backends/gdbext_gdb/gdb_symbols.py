"""The symbols GDB has loaded (``symbol-file vmlinux``, ``add-symbol-file``), as a
:class:`~gdbext.linux.symbols.SymbolSource`: the ``pt-*`` commands take their names where an
address goes, and ``pt-translate`` shows ``<symbol+0xoff>``, when no ``--system-map`` or
``--vmlinux`` is given.

Names are looked up as GDB's own symbols (``gdb.lookup_global_symbol``,
``gdb.lookup_static_symbol``) and, for an ELF symbol table without debug information (minimal
symbols), as GDB evaluates ``&'NAME'``; an address's name is ``info symbol``'s answer. The
addresses are where the user loaded the file (``symbol-file vmlinux -o OFFSET`` for a KASLR
slide): gdbext moves nothing.
"""

from __future__ import annotations

import re

import gdb

__all__ = ["GdbSymbols", "current_symbols"]

U64 = (1 << 64) - 1

#: ``info symbol``'s answer: ``init_task + 16 in section .data`` (``of FILE`` after it when
#: GDB has several files).
_INFO_SYMBOL = re.compile(r"(\S+)(?: \+ (\d+))? in section \S+")


class GdbSymbols:
    """The symbols of GDB's loaded files (see the module's description)."""

    source = "GDB's loaded symbols"

    def address(self, name: str) -> int | None:
        """The address of symbol ``name``, or ``None`` when GDB knows no such symbol."""
        try:
            symbol = gdb.lookup_global_symbol(name) or gdb.lookup_static_symbol(name)
            if symbol is not None and symbol.addr_class not in (
                gdb.SYMBOL_LOC_CONST,
                gdb.SYMBOL_LOC_TYPEDEF,
                gdb.SYMBOL_LOC_REGISTER,
                gdb.SYMBOL_LOC_COMPUTED,
                gdb.SYMBOL_LOC_OPTIMIZED_OUT,
            ):
                where = symbol.value().address
                if where is not None:
                    return int(where) & U64
            # A minimal symbol (no debug information): GDB's quotes take any name.
            return int(gdb.parse_and_eval(f"&'{name}'")) & U64
        except (gdb.error, RuntimeError, ValueError, TypeError):
            return None

    def lookup(self, vaddr: int) -> tuple[str, int] | None:
        """The symbol ``info symbol`` names for ``vaddr`` (the nearest at or below it, in a
        section of a loaded file) and the offset from it; ``None`` outside them."""
        try:
            text = gdb.execute(f"info symbol 0x{vaddr & U64:x}", to_string=True)
        except gdb.error:
            return None
        m = _INFO_SYMBOL.match(text.strip())
        if m is None:
            return None
        return m[1], int(m[2] or 0)


def current_symbols() -> GdbSymbols | None:
    """GDB's loaded symbols, or ``None`` while it has loaded no file."""
    try:
        files = gdb.objfiles()
    except RuntimeError:
        return None
    return GdbSymbols() if files else None
