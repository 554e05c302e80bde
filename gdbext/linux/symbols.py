"""A kernel's symbols when the user has them: a ``System.map`` or a ``vmlinux``.

:func:`load_system_map` reads nm-style lines (``ADDR TYPE NAME``, as ``System.map`` and
``/proc/kallsyms`` write them; a module's symbols, ``NAME [MODULE]``, are skipped: modules are
not part of the image); :func:`load_vmlinux` reads an ELF's symbol table and sections with
pyelftools. Either gives a :class:`SymbolTable`: names to addresses, an address to the nearest
symbol at or below it (``init_task+0x10``) and the kernel image's sections. A ``System.map``
has no sections; they come from its markers (``_text``/``_etext``, ``__start_rodata``...).

Both files name the addresses the kernel was linked at. A kernel booted with KASLR runs its
image moved by a slide: :meth:`SymbolTable.slid` moves every image symbol (those in the high
kernel mapping; per-CPU offsets stay), and :func:`slide_for` computes the slide from where the
target's ``_text`` really is. :func:`with_sections` adds the image's sections to a layout's
markers, for walks that label the image's ranges with them.

:class:`SymbolSource` is what the commands need of symbols (a name's address, an address's
nearest symbol): a :class:`SymbolTable` is one, and so are the symbols a debugger has loaded
(the GDB and LLDB adapters pass theirs in; those are already where the user loaded them).
"""

from __future__ import annotations

import os
import re
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from operator import itemgetter
from typing import Protocol

from gdbext.errors import InputError, SymbolFileError, UnknownSymbolError
from gdbext.linux.layout import START_KERNEL, START_KERNEL_MAP, Layout, Marker

__all__ = [
    "Section",
    "SymbolSource",
    "SymbolTable",
    "describe",
    "load_symbols",
    "load_system_map",
    "load_vmlinux",
    "parse_symbol",
    "resolve",
    "slide_for",
    "with_sections",
]

_TOP = 1 << 64

#: nm's types of symbols that name code or data (``symbol+0x10`` is computed from them); the
#: others (absolute ``A``, undefined ``U``, debugging ``N``...) only resolve by name.
LOOKUP_TYPES = frozenset("TtDdBbRrVvWwGgSs")

#: The kernel image's sections as ``System.map``'s markers bound them (vmlinux.lds.S), in
#: address order: (name, start symbol, end symbol). Linux frees the init sections after boot.
MARKER_SECTIONS = (
    (".text", "_text", "_etext"),
    (".rodata", "__start_rodata", "__end_rodata"),
    (".data", "_sdata", "_edata"),
    ("init (freed)", "__init_begin", "__init_end"),
    (".bss", "__bss_start", "__bss_stop"),
)

_HEX_WORD = re.compile(r"[0-9A-Fa-f]+")
_SYMBOL = re.compile(r"([A-Za-z_.$][\w.$]*)(?:\s*([+-])\s*(\S+))?")


class SymbolSource(Protocol):
    """Symbols to look up both ways, wherever they come from: a file (:class:`SymbolTable`) or
    a debugger's loaded symbols. Addresses are where the target's image is."""

    @property
    def source(self) -> str:
        """Where the symbols come from, for messages (a path, ``GDB's symbols``)."""
        ...

    def address(self, name: str) -> int | None:
        """The address of symbol ``name``, or ``None``."""
        ...

    def lookup(self, vaddr: int) -> tuple[str, int] | None:
        """The nearest code or data symbol at or below ``vaddr`` and the offset from it, when
        ``vaddr`` is inside the kernel image (or the debugger's loaded files); else ``None``."""
        ...


def describe(symbols: SymbolSource, vaddr: int) -> str | None:
    """``init_task`` or ``init_task+0x10`` for ``vaddr`` (see :meth:`SymbolSource.lookup`)."""
    found = symbols.lookup(vaddr)
    if found is None:
        return None
    name, offset = found
    return name if offset == 0 else f"{name}+0x{offset:x}"


def resolve(symbols: SymbolSource, text: str) -> int:
    """The address ``text`` names in ``symbols``: ``NAME``, ``NAME+OFFSET`` or ``NAME-OFFSET``.

    :raises InputError: no such symbol, or an offset that is not a number.
    """
    parsed = parse_symbol(text)
    if parsed is None:
        raise InputError(f"{text!r} is neither a number nor a symbol name")
    name, offset = parsed
    addr = symbols.address(name)
    if addr is None:
        hint = ""
        if offset == 0 and _HEX_WORD.fullmatch(name):
            hint = f" (did you mean 0x{name}?)"
        raise UnknownSymbolError(name, symbols.source, hint)
    return (addr + offset) % _TOP


@dataclass(frozen=True)
class Section:
    """``[start, end)`` of the kernel image and its name (``.text``)."""

    name: str
    start: int
    end: int


@dataclass(frozen=True)
class _Index:
    """What lookups bisect: names to file addresses, and the image's code and data symbols
    sorted by address. Made once per file; a slid table shares it."""

    by_name: dict[str, int]
    starts: list[int]
    names: list[str]

    @classmethod
    def of(cls, symbols: Iterable[tuple[int, str, str]]) -> _Index:
        symbols = tuple(symbols)
        # The first symbol of a name wins: later ones are written first.
        by_name = {name: addr for addr, _, name in reversed(symbols)}
        code = [
            (addr, name)
            for addr, kind, name in symbols
            if kind in LOOKUP_TYPES and addr >= START_KERNEL_MAP
        ]
        code.sort(key=itemgetter(0))  # stable: symbols at one address keep the file's order
        return cls(by_name, list(map(itemgetter(0), code)), list(map(itemgetter(1), code)))


@dataclass(frozen=True)
class SymbolTable:
    """A kernel's symbols: look names and addresses up both ways (bisect over sorted lists).

    :param source: the file they came from, for messages.
    :param symbols: every symbol, ``(address, type, name)``, at the file's addresses.
    :param sections: the image's sections, moved by :attr:`slide`.
    """

    source: str
    symbols: tuple[tuple[int, str, str], ...]
    sections: tuple[Section, ...] = ()
    #: How far the image was moved from the file's addresses (:meth:`slid`).
    slide: int = 0
    index: _Index | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.index is None:
            object.__setattr__(self, "index", _Index.of(self.symbols))

    @property
    def _index(self) -> _Index:
        assert self.index is not None
        return self.index

    def __len__(self) -> int:
        return len(self.symbols)

    def _moved(self, addr: int) -> int:
        """A file address where the image is: image symbols move, per-CPU offsets do not."""
        return (addr + self.slide) % _TOP if addr >= START_KERNEL_MAP else addr

    def address(self, name: str) -> int | None:
        """The address of symbol ``name`` (the first one of that name), or ``None``."""
        addr = self._index.by_name.get(name)
        return None if addr is None else self._moved(addr)

    @property
    def image_end(self) -> int | None:
        """Where the image ends: ``_end``, else the last section's end, else ``None``."""
        end = self.address("_end")
        if end is None and self.sections:
            end = max(s.end for s in self.sections)
        return end

    def lookup(self, vaddr: int) -> tuple[str, int] | None:
        """The nearest code or data symbol at or below ``vaddr`` and the offset from it, for an
        address inside the kernel image (from its first symbol to its end); else ``None``."""
        end = self.image_end
        if end is not None and vaddr >= end:
            return None
        index = self._index
        i = bisect_right(index.starts, (vaddr - self.slide) % _TOP) - 1
        if i < 0:
            return None
        return index.names[i], vaddr - self._moved(index.starts[i])

    def describe(self, vaddr: int) -> str | None:
        """``init_task`` or ``init_task+0x10`` for ``vaddr`` (see :meth:`lookup`)."""
        return describe(self, vaddr)

    def section(self, vaddr: int) -> Section | None:
        """The image section holding ``vaddr``, or ``None``."""
        for sec in self.sections:
            if sec.start <= vaddr < sec.end:
                return sec
        return None

    def slid(self, slide: int) -> SymbolTable:
        """This table with the image moved by ``slide`` (a KASLR slide, modulo 2^64) from the
        file's addresses: symbols in the high kernel mapping move, per-CPU offsets do not."""
        slide %= _TOP
        delta = (slide - self.slide) % _TOP
        if delta == 0:
            return self

        def move(addr: int) -> int:
            return (addr + delta) % _TOP if addr >= START_KERNEL_MAP else addr

        return replace(
            self,
            sections=tuple(replace(s, start=move(s.start), end=move(s.end)) for s in self.sections),
            slide=slide,
        )

    def resolve(self, text: str) -> int:
        """The address ``text`` names: ``NAME``, ``NAME+OFFSET`` or ``NAME-OFFSET``.

        :raises InputError: no such symbol, or an offset that is not a number.
        """
        return resolve(self, text)


def parse_symbol(text: str) -> tuple[str, int] | None:
    """``NAME[+-OFFSET]`` as ``(NAME, offset)``, or ``None`` when ``text`` is not one.

    :raises InputError: the offset is not a number.
    """
    from gdbext.units import parse_int

    m = _SYMBOL.fullmatch(text.strip())
    if m is None:
        return None
    if m[2] is None:
        return m[1], 0
    try:
        offset = parse_int(m[3])
    except ValueError as exc:
        raise InputError(f"{text!r}: the offset: {exc}") from None
    return m[1], -offset if m[2] == "-" else offset


def _marker_sections(names: Mapping[str, int]) -> tuple[Section, ...]:
    out = []
    for name, start, end in MARKER_SECTIONS:
        if start in names and end in names and names[start] < names[end]:
            out.append(Section(name, names[start], names[end]))
    return tuple(sorted(out, key=lambda s: s.start))


def _marker_addresses(symbols: Iterable[tuple[int, str, str]]) -> dict[str, int]:
    """The addresses of :data:`MARKER_SECTIONS`' symbols (the first of each name)."""
    wanted = {n for _, start, end in MARKER_SECTIONS for n in (start, end)}
    found: dict[str, int] = {}
    for addr, _, name in symbols:
        if name in wanted:
            found.setdefault(name, addr)
    return found


def _parse_map(text: str, path: str) -> list[tuple[int, str, str]]:
    """The lines of a ``System.map``: ``ADDR TYPE NAME``; a module's symbol (kallsyms' fourth
    column, ``[MODULE]``) is skipped. A tight loop: a kernel's map has some 150,000 lines."""
    out: list[tuple[int, str, str]] = []
    append = out.append
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        n = len(parts)
        if n == 0:
            continue
        if 3 <= n <= 4 and len(parts[1]) == 1 and len(parts[0]) <= 16:
            try:
                addr = int(parts[0], 16)
            except ValueError:
                pass
            else:
                if n == 3:
                    append((addr, parts[1], parts[2]))
                    continue
                if parts[3].startswith("["):
                    continue
        shown = line.strip()
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise SymbolFileError(f"not a System.map line (ADDR TYPE NAME): {shown!r}", path, number)
    return out


def load_system_map(path: str | os.PathLike[str]) -> SymbolTable:
    """The symbols of a ``System.map`` (or a saved ``/proc/kallsyms``), at its addresses.

    :raises InputError: the file cannot be read, a line is not ``ADDR TYPE NAME`` (the path
        and line number are in the message), or it names no symbol.
    """
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8", errors="replace") as f:
            symbols = tuple(_parse_map(f.read(), name))
    except OSError as exc:
        raise SymbolFileError(str(exc.strerror or exc), name) from None
    if not symbols:
        raise SymbolFileError("no symbols in it (an empty System.map?)", name)
    return SymbolTable(name, symbols, _marker_sections(_marker_addresses(symbols)))


#: ELF symbol types (``st_info.type``) that name code or data, as nm's types.
_ELF_KINDS = {"STT_FUNC": "T", "STT_OBJECT": "D", "STT_NOTYPE": "D", "STT_TLS": "D"}


def load_vmlinux(path: str | os.PathLike[str]) -> SymbolTable:
    """The symbols and sections of a ``vmlinux`` ELF (pyelftools), at its link addresses.

    Sections are the allocated ones in the high kernel mapping; when the symbol table has
    ``System.map``'s markers, the sections they bound are used instead (the kernel's
    grouping: ``.text``, ``.rodata``, ``.data``, init, ``.bss``).

    :raises InputError: not an ELF file, or one without a symbol table.
    """
    from elftools.common.exceptions import ELFError
    from elftools.construct.core import ConstructError
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import SymbolTableSection

    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            elf = ELFFile(f)
            symbols: list[tuple[int, str, str]] = []
            elf_sections: list[Section] = []
            for sec in elf.iter_sections():
                flags = sec["sh_flags"]
                addr, size = sec["sh_addr"], sec["sh_size"]
                if flags & 0x2 and size and addr >= START_KERNEL_MAP:  # SHF_ALLOC
                    elf_sections.append(Section(sec.name, addr, addr + size))
                if not isinstance(sec, SymbolTableSection) or sec["sh_type"] != "SHT_SYMTAB":
                    continue
                for sym in sec.iter_symbols():
                    kind = _ELF_KINDS.get(sym["st_info"]["type"])
                    if not sym.name or kind is None or sym["st_shndx"] == "SHN_UNDEF":
                        continue
                    if sym["st_shndx"] == "SHN_ABS":
                        kind = "A"
                    elif sym["st_info"]["bind"] == "STB_LOCAL":
                        kind = kind.lower()
                    symbols.append((sym["st_value"], kind, sym.name))
    except OSError as exc:
        raise SymbolFileError(str(exc.strerror or exc), name) from None
    except (ELFError, ConstructError, ValueError) as exc:
        raise SymbolFileError(f"not a vmlinux (ELF): {exc}", name) from None
    if not symbols:
        raise SymbolFileError("no symbol table (a stripped vmlinux?)", name)
    sections = _marker_sections(_marker_addresses(symbols)) or tuple(
        sorted(elf_sections, key=lambda s: s.start)
    )
    return SymbolTable(name, tuple(symbols), sections)


def load_symbols(
    system_map: str | os.PathLike[str] | None = None,
    vmlinux: str | os.PathLike[str] | None = None,
) -> SymbolTable | None:
    """The symbols of whichever file was given (``None``: neither)."""
    if vmlinux is not None:
        return load_vmlinux(vmlinux)
    if system_map is not None:
        return load_system_map(system_map)
    return None


def slide_for(table: SymbolTable, kernel_text: int | None, kernel_offset: int | None) -> int:
    """The slide that moves ``table`` to where the target's image is: ``kernel_text`` (where
    ``_text`` really is) minus the table's ``_text``; without either, ``kernel_offset``
    (VMCOREINFO ``KERNELOFFSET``, for a table of unslid addresses); else 0."""
    text = table.address("_text")
    if text is not None and kernel_text is not None:
        return (kernel_text - text) % _TOP
    if kernel_offset is not None and (text is None or text == START_KERNEL):
        return kernel_offset % _TOP
    return 0


def with_sections(layout: Layout, table: SymbolTable) -> Layout:
    """``layout`` with a marker where each of ``table``'s image sections starts (``Kernel
    image .text``) and, where the next section does not follow at once, one where it ends
    (``High Kernel Mapping`` again): a text walk then labels each range of the kernel image
    with its section. The sections are placed as ``table`` is (slid)."""
    extra = []
    sections = table.sections
    for i, sec in enumerate(sections):
        extra.append(Marker(sec.start, f"Kernel image {sec.name}"))
        if i + 1 == len(sections) or sections[i + 1].start != sec.end:
            extra.append(Marker(sec.end, "High Kernel Mapping"))
    markers = sorted((*layout.markers, *extra), key=lambda m: m.start)
    return replace(layout, markers=tuple(markers))
