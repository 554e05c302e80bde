"""Argument types of the commands' parsers: text in, a value out, or argparse's error.

Each raises :class:`argparse.ArgumentTypeError` with the one-line reason, which argparse words
as ``argument --cr3: ...``.
"""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING, Literal

from gdbext.errors import UsageError
from gdbext.units import parse_int

if TYPE_CHECKING:
    from gdbext.addr import AddrRange
    from gdbext.audit.model import Severity
    from gdbext.permfilter import PermFilter

#: ``--phys-offset auto`` (:attr:`gdbext.frontend.heap.HeapOptions.phys_offset`): find the direct
#: map's base from the page tables.
AUTO: Literal["auto"] = "auto"


def command_name(args: argparse.Namespace) -> str:
    """The command's name for messages: ``walk``, or the prog of a one-command parser."""
    return str(getattr(args, "prog", None) or args.command)


def integer(text: str) -> int:
    """An address or a count: decimal, ``0x`` hex, ``_`` separators."""
    try:
        return parse_int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def address_or_symbol(text: str) -> int | str:
    """An address, or a symbol expression (``NAME[+-OFFSET]``) kept as text: whether there
    are symbols to resolve it with is known once every option is parsed
    (:func:`gdbext.frontend.symbolic.check_symbol_options`)."""
    try:
        return parse_int(text)
    except ValueError as exc:
        word = text.strip()
        if word[:1].isalpha() or word[:1] in "_.":
            return text
        raise argparse.ArgumentTypeError(str(exc)) from None


class RangeText(str):
    """A range operand whose bounds name symbols (``init_task-jiffies``, ``_text+2M``), kept
    as text until the target is open: :func:`gdbext.frontend.symbolic.check_symbol_options`
    checks it, :func:`gdbext.frontend.symbolic.resolve_options` makes it an address range."""


#: A bound of a range that starts with a letter: a symbol name, not a number.
_NAMED_BOUND = re.compile(r"(?:^|[+-])\s*[A-Za-z_.$]")


def addr_range(text: str) -> AddrRange | RangeText:
    """``START-END`` or ``START+SIZE``; with a bound that is a name, the text as a
    :class:`RangeText`."""
    from gdbext.addr import AddrRange

    try:
        return AddrRange.parse(text)
    except ValueError as exc:
        if _NAMED_BOUND.search(text):
            return RangeText(text)
        raise argparse.ArgumentTypeError(str(exc)) from None


def offset(text: str) -> int | str:
    """``--phys-offset``: an address or ``auto``."""
    if text.strip().lower() == AUTO:
        return AUTO
    return integer(text)


def perm_filter(text: str) -> PermFilter:
    """``--filter SPEC``."""
    from gdbext.permfilter import PermFilter

    try:
        return PermFilter.parse(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--filter: ")) from None


def severity(text: str) -> Severity:
    """A finding's severity: ``info``, ``low``, ``medium``, ``high``, ``critical``."""
    from gdbext.audit.model import Severity

    try:
        return Severity.parse(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def ids(text: str) -> tuple[str, ...]:
    """``a,b``: rule ids."""
    return tuple(word.strip() for word in text.split(",") if word.strip())


def is_number(text: str) -> bool:
    """Whether ``text`` reads as an integer (an address, not a file name)."""
    try:
        parse_int(text)
    except ValueError:
        return False
    return True
