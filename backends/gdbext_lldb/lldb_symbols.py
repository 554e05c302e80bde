"""The symbols LLDB has loaded (``target create vmlinux``, ``target modules add``), as a
:class:`~gdbext.linux.symbols.SymbolSource`: the ``pt-*`` commands take their names where an
address goes, and ``pt-translate`` shows ``<symbol+0xoff>``, when no ``--system-map`` or
``--vmlinux`` is given.

Names are looked up with ``SBTarget.FindSymbols``, addresses with ``ResolveLoadAddress``. The
addresses are where the user loaded the file: its load addresses once its sections are loaded
(``target modules load --file vmlinux --slide OFFSET`` for a KASLR slide), else the file's own
addresses. gdbext moves nothing.
"""

from __future__ import annotations

import lldb

__all__ = ["LldbSymbols", "selected_target_symbols"]

U64 = (1 << 64) - 1


class LldbSymbols:
    """The symbols of ``target``'s modules (see the module's description)."""

    source = "LLDB's loaded symbols"

    def __init__(self, target: lldb.SBTarget) -> None:
        self._target = target

    def _where(self, address: lldb.SBAddress) -> int | None:
        """``address`` where it is loaded, else its file address (a module not loaded)."""
        addr = address.GetLoadAddress(self._target)
        if addr == lldb.LLDB_INVALID_ADDRESS:
            addr = address.GetFileAddress()
        return None if addr == lldb.LLDB_INVALID_ADDRESS else int(addr) & U64

    def address(self, name: str) -> int | None:
        """The address of the first symbol named ``name``, or ``None``."""
        found = self._target.FindSymbols(name)
        for i in range(found.GetSize()):
            symbol = found.GetContextAtIndex(i).GetSymbol()
            if symbol.IsValid():
                addr = self._where(symbol.GetStartAddress())
                if addr is not None:
                    return addr
        return None

    def lookup(self, vaddr: int) -> tuple[str, int] | None:
        """The symbol LLDB resolves ``vaddr`` to (in a section of a loaded module) and the
        offset from its start; ``None`` outside them."""
        target = self._target
        address = target.ResolveLoadAddress(vaddr)
        if not address.GetSection().IsValid():
            address = target.ResolveFileAddress(vaddr)
        symbol = address.GetSymbol()
        if not address.GetSection().IsValid() or not symbol.IsValid():
            return None
        start = self._where(symbol.GetStartAddress())
        if start is None or start > vaddr:
            return None
        return str(symbol.GetName()), vaddr - start


def selected_target_symbols(debugger: lldb.SBDebugger) -> LldbSymbols | None:
    """The selected target's symbols, or ``None`` without a target or a module."""
    target = debugger.GetSelectedTarget()
    if not target.IsValid() or target.GetNumModules() == 0:
        return None
    return LldbSymbols(target)
