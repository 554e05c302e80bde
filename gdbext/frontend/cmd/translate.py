"""``translate``: virtual addresses to physical ones, every level shown."""

from __future__ import annotations

import argparse
import dataclasses

from gdbext.errors import EXIT_NOT_FOUND, UntranslatedError, UsageError
from gdbext.frontend.cmd.operands import leading_source
from gdbext.frontend.command import Command, Invocation, command_name


def arguments(p: argparse.ArgumentParser, target_options: bool) -> None:
    p.add_argument(
        "operands",
        nargs="+",
        metavar="[DUMP] VADDR" if target_options else "VADDR",
        help="a dump file (when the first operand is not a number), then addresses"
        if target_options
        else "virtual addresses",
    )


def operands(args: argparse.Namespace) -> str | None:
    """``[DUMP] VADDR...``: the first operand is the dump when it is not a number (only with the
    target options; a dump whose name is a number is given as ``./NAME`` or with ``--dump``),
    or, before at least one VADDR, the source of the backend named (``gdbstub``'s
    ``HOST:PORT``). Leaves the addresses, parsed, in ``args.vaddrs``."""
    from gdbext.frontend.symbolic import address_operand

    name = command_name(args)
    positional, rest = leading_source(args, name, "VADDR", other_backends=True)
    if not rest:
        raise UsageError(f"{name}: give at least one VADDR after the DUMP")
    args.vaddrs = [address_operand(args, name, "VADDR", text) for text in rest]
    return positional


def run(call: Invocation) -> int:
    from gdbext.frontend import commands, symbolic
    from gdbext.linux.symbols import describe

    root = call.root_options()
    symbols = None
    if symbolic.has_symbols(call.args):
        pt = commands.open_page_table(call.target, root)
        symbols = symbolic.target_symbols(call.args, call.target, pt, call.warn)
    translated = commands.translate(call.target, symbolic.resolve(call.args.vaddrs, symbols), root)
    if symbols is not None:
        # Each address's symbol+0xoff, when it is in the kernel image.
        translated = dataclasses.replace(
            translated,
            outcomes=[
                dataclasses.replace(o, symbol=describe(symbols, o.vaddr))
                for o in translated.outcomes
            ],
        )
    # Addresses that could not be translated (exit status 2) are errors: stderr's.
    call.emit(translated, output=translated.results())
    if translated.failures:
        raise UntranslatedError(call.name, translated.failures)
    return translated.exit_status


COMMAND = Command(
    name="translate",
    summary="translate virtual addresses, every level shown",
    debugger_summary="Translate virtual addresses: every level, raw entries and decoded flags.",
    run=run,
    arguments=arguments,
    dump_operand=False,
    operands=operands,
    symbols=True,
    exit_statuses=((EXIT_NOT_FOUND, "an address is not mapped"),),
)
