"""Argument types of the commands' parsers: text in, a value out, or argparse's error.

Each raises :class:`argparse.ArgumentTypeError` with the one-line reason, which argparse words
as ``argument --cr3: ...``.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Literal

from gdbext.errors import UsageError
from gdbext.units import not_a_number, parse_int

if TYPE_CHECKING:
    from gdbext.addr import AddrRange
    from gdbext.audit.model import Severity
    from gdbext.permfilter import PermFilter

#: ``--phys-offset auto`` (:attr:`gdbext.frontend.heap.HeapOptions.phys_offset`): find the direct
#: map's base from the page tables.
AUTO: Literal["auto"] = "auto"


def integer(text: str) -> int:
    """An address or a count: decimal, ``0x`` hex, ``_`` separators."""
    try:
        return parse_int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def addr_range(text: str) -> AddrRange:
    """``START-END`` or ``START+SIZE``."""
    from gdbext.addr import AddrRange

    try:
        return AddrRange.parse(text)
    except ValueError as exc:
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


def leading_source(
    args: argparse.Namespace, name: str, noun: str, *, needs: int = 0, other_backends: bool = False
) -> tuple[str | None, list[str]]:
    """The operands of ``[DUMP] OPERAND...``: the first is the dump when it is not a number,
    no ``--dump`` was given, the dump backend is the one used (or, with ``other_backends``,
    the source of the backend named, such as ``gdbstub``'s ``HOST:PORT``, before at least one
    more operand) and more than ``needs`` operands were given. Only with the target options
    (``args.backend``); a dump whose name is a number is given as ``./NAME`` or with
    ``--dump``. Returns that source (or ``None``) and the operands after it.

    :param name: the command, for messages; ``noun`` names the operand (``VADDR``).
    :raises UsageError: the first operand is not a file but a hex number without ``0x``.
    """
    from gdbext.plugin.host import DUMP_BACKEND

    rest = list(args.operands)
    dump = getattr(args, "backend", None) in (None, DUMP_BACKEND)
    if (
        hasattr(args, "backend")
        and getattr(args, "dump_option", None) is None
        and (dump or other_backends)
        and len(rest) > (needs if dump else 1)
        and not is_number(rest[0])
    ):
        positional = rest.pop(0)
        if dump and not os.path.exists(positional) and "did you mean" in not_a_number(positional):
            # A hex address without 0x, not a dump that was meant.
            raise UsageError(f"{name}: argument {noun}: {not_a_number(positional)}")
        return positional, rest
    return None, rest
