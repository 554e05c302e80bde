"""``walk``: every mapping of a page table, merged into ranges."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from gdbext.errors import EXIT_NOT_FOUND, EXIT_OK
from gdbext.frontend import argtypes
from gdbext.frontend.command import Command, Invocation, Warn

if TYPE_CHECKING:
    from gdbext.plugin.host import Host


def arguments(p: argparse.ArgumentParser, target_options: bool) -> None:
    from gdbext import defaults

    f = p.add_argument_group("filters (they prune the walk)")
    where = f.add_mutually_exclusive_group()
    where.add_argument(
        "--range",
        type=argtypes.addr_range,
        metavar="START-END",
        help="only this VA range (or START+SIZE; bounds may be symbols)",
    )
    where.add_argument(
        "--has",
        type=argtypes.address_or_symbol,
        metavar="VADDR",
        help="only the merged mapping that contains VADDR",
    )
    f.add_argument(
        "--filter",
        type=argtypes.perm_filter,
        metavar="SPEC",
        help="only leaves whose effective permissions match: terms w, ro, x, nx, u, s, wx, "
        "each negated by '!', ANDed by ',' (e.g. 'wx', 'u,x', 's,!w')",
    )
    p.add_argument(
        "--labels",
        choices=defaults.LABEL_MODES,
        default="auto",
        help="region labels in text output: Linux's layout, when it looks like Linux (auto)",
    )
    m = p.add_mutually_exclusive_group()
    m.add_argument(
        "--merge",
        dest="merge_by",
        choices=defaults.MERGE_MODES,
        default="pa",
        help="merge leaves contiguous in virtual and physical address (pa, the default), or "
        "in virtual address only, whatever their frames (va: the physical address shows as "
        "'scattered', null in JSON, when they are not contiguous)",
    )
    m.add_argument("--no-merge", dest="merge", action="store_false", help="one line per leaf entry")
    p.add_argument(
        "--max-leaves",
        type=argtypes.integer,
        default=defaults.DEFAULT_MAX_LEAVES,
        metavar="N",
        help=f"stop past N leaf entries, 0 for no limit (default {defaults.DEFAULT_MAX_LEAVES})",
    )
    p.add_argument(
        "--max-lines",
        type=argtypes.integer,
        metavar="N",
        help="stop outputs that expand shared tables (qemu-tlb, ptdump, json, --no-merge) past "
        f"N lines, 0 for no limit (default {defaults.DEFAULT_MAX_LINES}, ptdump "
        f"{defaults.DEFAULT_MAX_LINES_PTDUMP})",
    )


def _prepare(args: argparse.Namespace, host: Host) -> None:
    from gdbext.frontend.symbolic import check_symbol_options

    check_symbol_options(args, "has", "range")


def run(call: Invocation) -> int:
    from gdbext.frontend import commands
    from gdbext.frontend.symbolic import resolve_options

    args = call.args
    root = call.root_options()
    # A debugger's loaded symbols only name addresses (they give walks no sections).
    symbols = resolve_options(call, root, "has", "range")
    result = commands.walk(
        call.target,
        commands.WalkOptions(
            root,
            args.range,
            args.merge,
            args.max_leaves or None,
            perm=args.filter,
            has=args.has,
            labels=args.labels,
            merge_by=args.merge_by,
            max_lines=args.max_lines,
        ),
    )
    # A file's sections label the image's ranges (a debugger's symbols have none here).
    if symbols is not None:
        from gdbext.linux.symbols import SymbolTable

        result.symbols = symbols if isinstance(symbols, SymbolTable) else None
    call.emit(result)
    status = EXIT_NOT_FOUND if result.stats["leaves"] == 0 else EXIT_OK
    if call.warn is not None and args.format == "qemu-tlb":
        _warn_unshown(result.stats, call.warn)
    return status


def _warn_unshown(stats: dict[str, int], warn: Warn) -> None:
    """QEMU's ``info tlb`` format has no place for entries the walk did not follow: say what
    was left out, so that "not captured" never passes for "not mapped"."""
    kinds = {
        k.removeprefix("anomalies:"): n
        for k, n in stats.items()
        if k.startswith("anomalies:") and n
    }
    if kinds:
        listed = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
        warn(
            f"{sum(kinds.values())} entries were not followed ({listed}); "
            "qemu-tlb cannot show them: see the text or JSON output"
        )


COMMAND = Command(
    name="walk",
    summary="every mapping of a page table",
    debugger_summary="Walk a page table: every mapping, merged into ranges (as `gdbext walk`).",
    run=run,
    arguments=arguments,
    symbols=True,
    prepare=_prepare,
    exit_statuses=(
        (
            EXIT_NOT_FOUND,
            "no mapping found (nothing passed the filters, or --has an address not mapped)",
        ),
    ),
)
