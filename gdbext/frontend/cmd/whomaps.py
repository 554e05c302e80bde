"""``who-maps``: every virtual address of the selected root that maps a physical range."""

from __future__ import annotations

import argparse

from gdbext.errors import EXIT_NOT_FOUND, UsageError
from gdbext.frontend.cmd.operands import leading_source
from gdbext.frontend.command import Command, Invocation, command_name

#: ``who-maps``'s help: the command line's ``--help`` and the debuggers'.
TEXT = (
    "Every virtual address of the selected page table that maps the physical address PADDR "
    "(or the range PADDR-END, END exclusive, or PADDR+SIZE), with its permissions, page size "
    "and Linux region. One walk builds a reverse index (kept for the stop in GDB and LLDB); "
    "a table linked many times (an alias) is one line with its count and stride, not one "
    "line per copy. --all-roots looks in every address space (roots): the kernel half once, "
    "then each process's user half. Exit status 1 when nothing maps the range. In GDB, "
    "$pt_virt is set to the lowest virtual address found."
)


def arguments(p: argparse.ArgumentParser, target_options: bool) -> None:
    p.add_argument(
        "--all-roots",
        action="store_true",
        help="in every address space roots finds: the kernel half once, then each process's "
        "user half, named by its tasks or argv",
    )
    p.add_argument(
        "operands",
        nargs="+",
        metavar="[DUMP] PADDR[-END]" if target_options else "PADDR[-END]",
        help="a dump file (when the first operand is not a number), then the physical address "
        "or range"
        if target_options
        else "the physical address or range",
    )


def _prange(name: str, text: str) -> object:
    from gdbext.addr import AddrRange
    from gdbext.units import parse_int

    try:
        if "-" in text or "+" in text:
            return AddrRange.parse(text)
        start = parse_int(text)
    except ValueError as exc:
        raise UsageError(f"{name}: argument PADDR: {exc}") from None
    if start < 0:
        raise UsageError(f"{name}: argument PADDR: {text} is negative")
    return AddrRange(start, start + 1)


def operands(args: argparse.Namespace) -> str | None:
    """``[DUMP] PADDR[-END]``: the first operand is the dump when it is not a number and no
    other backend was named (as ``read``'s). Leaves the range in ``args.prange``."""
    name = command_name(args)
    positional, rest = leading_source(args, name, "PADDR", needs=1)
    if len(rest) != 1:
        raise UsageError(f"{name}: give one PADDR[-END]{' after the DUMP' if positional else ''}")
    args.prange = _prange(name, rest[0])
    return positional


def run(call: Invocation) -> int:
    from gdbext.frontend.whomaps import who_maps, who_maps_everywhere

    find = who_maps_everywhere if call.args.all_roots else who_maps
    result = find(call.target, call.args.prange, call.root_options())
    call.emit(result)
    return result.exit_status


COMMAND = Command(
    name="who-maps",
    summary="every virtual address that maps a physical range",
    debugger_summary="Every virtual address mapping a physical address or range (reverse map).",
    text=TEXT,
    run=run,
    arguments=arguments,
    dump_operand=False,
    operands=operands,
    exit_statuses=((EXIT_NOT_FOUND, "nothing maps the range"),),
)
