"""Symbol names where addresses go, when the user gave the kernel's symbols.

``--system-map FILE`` or ``--vmlinux FILE`` (:func:`add_symbol_options`, on the commands that
declare :attr:`~gdbext.frontend.command.Command.symbols`) load a
:class:`~gdbext.linux.symbols.SymbolTable`; :func:`target_symbols` moves it to where the
target's kernel image is (the KASLR slide: where ``_text`` is, by
:func:`~gdbext.linux.kaslr.kernel_text`, against the file's ``_text``). An address operand is
then a number or ``NAME[+-OFFSET]`` (:func:`address_operand` keeps the name until the target is
open; :func:`resolve` turns it into an address), and a range operand's bounds may be such
expressions too (``init_task-jiffies``, ``_text+2M``: :func:`split_range`). A command resolves
its options that hold names with :func:`resolve_options` once its target is open. Without
either option nothing changes: a word that is not a number is the usage error it always was.

In GDB and LLDB, when neither option is given, the symbols the debugger has loaded serve the
same way: the session puts the adapter's :class:`~gdbext.linux.symbols.SymbolSource` in the
parsed arguments (:data:`LOADED`) before the operands are parsed. Those addresses are where the
user loaded the symbols (``symbol-file vmlinux -o OFFSET``): no slide is applied to them.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from gdbext.errors import InputError, UnknownSymbolError, UsageError
from gdbext.frontend.argtypes import command_name
from gdbext.units import parse_int

if TYPE_CHECKING:
    from gdbext.addr import AddrRange
    from gdbext.frontend.commands import RootOptions
    from gdbext.linux.symbols import SymbolSource, SymbolTable
    from gdbext.plugin.target import Target
    from gdbext.x86.paging import X86PageTable

__all__ = [
    "add_symbol_options",
    "address_operand",
    "banner_warning",
    "check_symbol_options",
    "has_file",
    "has_symbols",
    "init_task_address",
    "loaded_symbols",
    "resolve",
    "resolve_options",
    "resolve_range",
    "split_range",
    "target_symbols",
]

#: An address operand: a number, or a symbol expression resolved once the target is open.
Operand = int | str

#: The attribute of the parsed arguments that holds a debugger's loaded symbols (a
#: :class:`~gdbext.linux.symbols.SymbolSource`; the session sets it, no option does).
LOADED = "loaded_symbols"

#: Loaded files, by (path, size, mtime): a debugger session loads a System.map once.
_LOADED: dict[tuple[str, str, int, int], SymbolTable] = {}


def add_symbol_options(p: argparse.ArgumentParser) -> None:
    """``--system-map FILE`` and ``--vmlinux FILE``: one or the other."""
    g = p.add_argument_group("symbols (names for kernel addresses)")
    which = g.add_mutually_exclusive_group()
    which.add_argument(
        "--system-map",
        metavar="FILE",
        help="the kernel's System.map (or a saved /proc/kallsyms): symbol names "
        "(NAME, NAME+0x10) where an address goes, symbol+0xoff shown; moved by the KASLR slide "
        "(in GDB and LLDB, without this or --vmlinux: the symbols the debugger loaded, as loaded)",
    )
    which.add_argument(
        "--vmlinux",
        metavar="FILE",
        help="the kernel's vmlinux: its ELF symbols and sections, as --system-map",
    )


def has_file(args: argparse.Namespace) -> bool:
    """Whether the command was given a symbol file."""
    return bool(getattr(args, "system_map", None) or getattr(args, "vmlinux", None))


def loaded_symbols(args: argparse.Namespace) -> SymbolSource | None:
    """The debugger's loaded symbols the session passed in (:data:`LOADED`), if any."""
    loaded: SymbolSource | None = getattr(args, LOADED, None)
    return loaded


def has_symbols(args: argparse.Namespace) -> bool:
    """Whether the command has symbols: a symbol file, or the debugger's loaded ones."""
    return has_file(args) or loaded_symbols(args) is not None


def address_operand(args: argparse.Namespace, name: str, noun: str, text: str) -> Operand:
    """An address operand as parsed before the target is open: a number, or (with a symbol
    file) ``NAME[+-OFFSET]`` kept as text for :func:`resolve`.

    :raises UsageError: not a number, and not a symbol expression with a symbol file given.
    """
    try:
        return parse_int(text)
    except ValueError as exc:
        from gdbext.linux.symbols import parse_symbol

        if has_symbols(args) and parse_symbol(text) is not None:
            return text
        raise UsageError(f"{name}: argument {noun}: {exc}") from None


def check_symbol_options(args: argparse.Namespace, *options: str) -> None:
    """Each of ``options`` (destinations, ``has``) that holds a name rather than a number
    (a :class:`~gdbext.frontend.argtypes.RangeText` for a range) needs a symbol file: without
    one it is the usage error a number's option gives.

    :raises UsageError: a name without ``--system-map``/``--vmlinux``, or not a symbol
        expression (a range: not two bounds each a number or one).
    """
    from gdbext.frontend.argtypes import RangeText
    from gdbext.units import not_a_number

    for dest in options:
        value = getattr(args, dest, None)
        if not isinstance(value, str):
            continue
        flag = "--" + dest.replace("_", "-")
        name = command_name(args)
        if isinstance(value, RangeText):
            if not has_symbols(args):
                from gdbext.addr import AddrRange

                try:  # the reason the numbers' parser gives
                    AddrRange.parse(value)
                except ValueError as exc:
                    raise UsageError(f"{name}: argument {flag}: {exc}") from None
            elif split_range(value) is None:
                raise UsageError(f"{name}: argument {flag}: {_range_problem(value)}")
            continue
        if not has_symbols(args):
            raise UsageError(f"{name}: argument {flag}: {not_a_number(value)}")
        from gdbext.linux.symbols import parse_symbol

        if parse_symbol(value) is None:
            raise UsageError(f"{name}: argument {flag}: not a symbol or number: {value!r}")


def _bound(text: str) -> Operand | None:
    """A bound of a range: a number, a symbol expression kept as text, or ``None``."""
    from gdbext.linux.symbols import parse_symbol

    try:
        return parse_int(text)
    except ValueError:
        pass
    try:
        return text if parse_symbol(text) is not None else None
    except InputError:  # NAME+OFFSET whose offset is no number
        return None


def split_range(text: str) -> tuple[Operand, str, Operand] | None:
    """``START-END`` or ``START+SIZE`` whose bounds may be symbol expressions, as ``(START,
    separator, END or SIZE)``; ``None`` when it is not one. A symbol's offset uses the same
    signs, so the last separator that leaves a valid bound on each side is the range's.

    >>> split_range("init_task-jiffies")
    ('init_task', '-', 'jiffies')
    >>> split_range("_text+0x10-_etext")
    ('_text+0x10', '-', '_etext')
    >>> split_range("_text+2M")
    ('_text', '+', 2097152)
    >>> split_range("jiffies-0x10+8")
    ('jiffies-0x10', '+', 8)
    >>> split_range("init_task") is None
    True
    """
    from gdbext.units import parse_size

    for i in range(len(text) - 1, 0, -1):
        sep = text[i]
        if sep not in "+-":
            continue
        start = _bound(text[:i].strip())
        if start is None:
            continue
        right = text[i + 1 :].strip()
        end: Operand | None
        if sep == "+":
            try:
                end = parse_size(right)
            except ValueError:
                continue
        else:
            end = _bound(right)
        if end is not None:
            return start, sep, end
    return None


def _range_problem(text: str) -> str:
    """Why ``text`` is not a range :func:`split_range` takes: its size's problem when a valid
    START stands before a ``+``, else what a range is."""
    from gdbext.units import parse_size

    for i in range(len(text) - 1, 0, -1):
        if text[i] == "+" and _bound(text[:i].strip()) is not None:
            try:
                parse_size(text[i + 1 :].strip())
            except ValueError as exc:
                return str(exc)
    return f"not an address range (START-END or START+SIZE, of numbers or symbols): {text!r}"


def resolve_range(text: str, symbols: SymbolSource | None) -> AddrRange:
    """The address range ``text`` gives (:func:`split_range`), its names looked up.

    :raises InputError: not a range, or one whose end is before its start.
    :raises UnknownSymbolError: a name the symbols lack.
    """
    from gdbext.addr import AddrRange

    parts = split_range(text)
    if parts is None:
        raise InputError(f"not an address range (START-END or START+SIZE): {text!r}")
    first, sep, second = parts
    (start,) = resolve([first], symbols)
    if sep == "+":
        assert isinstance(second, int)
        end = start + second
    else:
        (end,) = resolve([second], symbols)
    try:
        return AddrRange(start, end)
    except ValueError as exc:
        raise InputError(f"{text}: {exc}") from None


class Call(Protocol):
    """What :func:`resolve_options` needs of a command's
    :class:`~gdbext.frontend.command.Invocation`."""

    @property
    def args(self) -> argparse.Namespace: ...
    @property
    def target(self) -> Target: ...
    @property
    def warn(self) -> Callable[[str], None] | None: ...
    @property
    def name(self) -> str: ...


def resolve_options(call: Call, root: RootOptions, *options: str) -> SymbolSource | None:
    """Resolves, in ``call.args``, each of ``options`` (destinations) that holds a name: an
    address option's name becomes its address, a range's (a
    :class:`~gdbext.frontend.argtypes.RangeText`) its :class:`~gdbext.addr.AddrRange`. The
    symbols are moved to where the kernel image is in the page table ``root`` selects
    (:func:`target_symbols`). Returns those symbols: with a symbol file they are loaded even
    when no option names one; else ``None`` when none does.

    :raises UnknownSymbolError: a name the symbols lack.
    :raises UsageError: a range whose end is before its start.
    """
    from gdbext.frontend import commands
    from gdbext.frontend.argtypes import RangeText

    args = call.args
    named = [dest for dest in options if isinstance(getattr(args, dest, None), str)]
    if not named and not has_file(args):
        return None
    pt = commands.open_page_table(call.target, root)
    symbols = target_symbols(args, call.target, pt, call.warn)
    for dest in named:
        value = getattr(args, dest)
        if isinstance(value, RangeText):
            try:
                setattr(args, dest, resolve_range(value, symbols))
            except UnknownSymbolError:
                raise
            except InputError as exc:
                flag = "--" + dest.replace("_", "-")
                raise UsageError(f"{call.name}: argument {flag}: {exc}") from None
        else:
            (address,) = resolve([value], symbols)
            setattr(args, dest, address)
    return symbols


def _load(args: argparse.Namespace) -> SymbolTable | None:
    kind = "vmlinux" if getattr(args, "vmlinux", None) else "system_map"
    path = getattr(args, kind, None)
    if not path:
        return None
    path = os.path.expanduser(path)
    try:
        st = os.stat(path)
        key = (kind, path, st.st_size, st.st_mtime_ns)
    except OSError:
        key = None
    if key is not None and key in _LOADED:
        return _LOADED[key]
    from gdbext.linux.symbols import load_symbols

    table = load_symbols(**{kind: path})
    if key is not None and table is not None:
        _LOADED.clear()
        _LOADED[key] = table
    return table


#: What ``linux_banner`` starts with: a symbol file of another kernel does not find it there.
BANNER = b"Linux version "


def banner_warning(table: SymbolSource, target: Target, pt: X86PageTable) -> str | None:
    """A warning when ``table``'s ``linux_banner`` does not hold :data:`BANNER` in ``target``
    (the symbols are another kernel's, or the slide is wrong); ``None`` when it does, or when
    the map has no ``linux_banner`` or its bytes cannot be read."""
    from gdbext.errors import GdbextError

    addr = table.address("linux_banner")
    if addr is None:
        return None
    try:
        data = target.mapper.read(pt.translate(addr).paddr, len(BANNER))
    except GdbextError:
        return None
    if data == BANNER:
        return None
    return (
        f"{table.source}: linux_banner (0x{addr:x}) does not hold 'Linux version': "
        "the symbols may be another kernel's"
    )


def target_symbols(
    args: argparse.Namespace,
    target: Target,
    pt: X86PageTable,
    warn: Callable[[str], None] | None = None,
) -> SymbolSource | None:
    """The symbol file the command was given, moved to where ``target``'s kernel image is;
    else the debugger's loaded symbols as they are (:func:`loaded_symbols`); ``None`` without
    either. ``warn`` is given :func:`banner_warning`'s warning, if any.

    :raises SymbolFileError: the file cannot be read as symbols.
    """
    from gdbext.errors import GdbextError
    from gdbext.linux.kaslr import kernel_text
    from gdbext.linux.symbols import SymbolTable, slide_for

    table: SymbolSource | None = _load(args)
    if isinstance(table, SymbolTable):
        facts = target.facts
        try:
            text = kernel_text(pt, facts).value
        except GdbextError:  # the kernel's tables cannot be read: VMCOREINFO's offset alone
            text = None
        table = table.slid(slide_for(table, text, facts.kernel_offset))
    else:
        table = loaded_symbols(args)
    if table is None:
        return None
    if warn is not None:
        message = banner_warning(table, target, pt)
        if message is not None:
            warn(message)
    return table


def resolve(operands: Sequence[Operand], symbols: SymbolSource | None) -> list[int]:
    """``operands`` as addresses: numbers as they are, symbol expressions looked up.

    :raises UnknownSymbolError: a name the symbols lack.
    """
    from gdbext.linux.symbols import resolve as resolve_name

    out = []
    for op in operands:
        if isinstance(op, int):
            out.append(op)
        elif symbols is None:
            raise UnknownSymbolError(op, None)
        else:
            out.append(resolve_name(symbols, op))
    return out


def init_task_address(
    args: argparse.Namespace,
    target: Target,
    root: RootOptions,
    warn: Callable[[str], None] | None = None,
) -> int | None:
    """``init_task`` of the symbols the command has (:func:`target_symbols`: moved to where the
    kernel image is in the page table ``root`` selects), where the task list starts; ``None``
    without symbols or without that name (the task walk then looks for it)."""
    if not has_symbols(args):
        return None
    from gdbext.frontend.commands import open_page_table

    symbols = target_symbols(args, target, open_page_table(target, root), warn)
    return None if symbols is None else symbols.address("init_task")
