"""The operands the commands that take ``[DUMP] OPERAND...`` share: which one is the dump."""

from __future__ import annotations

import argparse
import os

from gdbext.errors import UsageError
from gdbext.frontend import argtypes
from gdbext.units import not_a_number


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
        and not argtypes.is_number(rest[0])
    ):
        positional = rest.pop(0)
        if dump and not os.path.exists(positional) and "did you mean" in not_a_number(positional):
            # A hex address without 0x, not a dump that was meant.
            raise UsageError(f"{name}: argument {noun}: {not_a_number(positional)}")
        return positional, rest
    return None, rest
