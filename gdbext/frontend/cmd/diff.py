"""``diff``: what changed from one page table to another (two targets, or two roots of one)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from gdbext.errors import EXIT_NOT_FOUND, EXIT_OK, UsageError
from gdbext.frontend import argtypes
from gdbext.frontend.command import Command, Invocation

if TYPE_CHECKING:
    from gdbext.frontend.diff import DiffOptions
    from gdbext.plugin.target import Target

#: ``diff``'s help: the command line's ``--help`` and the debuggers'.
TEXT = (
    "What changed from page table A to page table B: the ranges mapped only in B (added), "
    "only in A (removed), or in both but otherwise (changed: the frame, the effective "
    "permissions, the page size, flag bits such as G, PCD, PWT, or a leaf against a collapsed "
    "alias), merged into ranges in VA order, each with its Linux region. A and B are two "
    "targets (gdbext diff A B: two dumps, or a dump and a snapshot), or one target with two "
    "roots (--a-cr3/--b-cr3, --a-kernel, --b-user-pgd...: each overrides the shared page-table "
    "option for its side). In GDB and LLDB, pt-diff FILE compares the snapshot FILE (A) with "
    "the current target (B). Tables linked many times (ESPFIX) are compared once, as aliases. "
    "ACCESSED and DIRTY are not compared unless --accessed-dirty. Exits 0 when the tables "
    "are equal, 1 when they differ."
)


def arguments(p: argparse.ArgumentParser, target_options: bool) -> None:
    from gdbext.defaults import LABEL_MODES
    from gdbext.frontend.rootargs import add_page_table_options

    if target_options:
        p.add_argument(
            "other",
            nargs="?",
            metavar="B",
            help="the second target's dump or snapshot (default: DUMP again, with --b-* roots)",
        )
    else:
        p.add_argument(
            "snapshot",
            nargs="?",
            metavar="FILE",
            help="the snapshot (or dump) to compare the current target with",
        )
    add_page_table_options(p, "a")
    add_page_table_options(p, "b")
    p.add_argument(
        "--range",
        type=argtypes.addr_range,
        metavar="START-END",
        help="compare only this VA range (or START+SIZE; bounds may be symbols, of the "
        "target's kernel)",
    )
    p.add_argument(
        "--accessed-dirty",
        action="store_true",
        help="compare the ACCESSED and DIRTY bits too",
    )
    p.add_argument(
        "--labels",
        choices=LABEL_MODES,
        default="auto",
        help="region labels: Linux's layout, when it looks like Linux (auto)",
    )


def prepare(args: argparse.Namespace, host: object) -> None:
    """One target needs a page table of each side: without B or a side's option, the diff of
    a table with itself is a mistake."""
    other = getattr(args, "other", None) or getattr(args, "snapshot", None)
    sides = [
        getattr(args, f"{side}_{name}", None)
        for side in "ab"
        for name in ("cpu", "cr3", "levels", "kernel", "user_pgd", "root", "pid", "comm", "exe")
    ]
    if other is None and all(value is None for value in sides):
        what = "FILE" if hasattr(args, "snapshot") else "a second target B"
        raise UsageError(
            f"diff needs {what}, or two page tables of one target (--a-cr3/--b-cr3, "
            "--b-user-pgd, --a-kernel...)"
        )


def run(call: Invocation) -> int:
    from gdbext.frontend.diff import diff
    from gdbext.frontend.symbolic import resolve_options
    from gdbext.plugin.host import DUMP_BACKEND

    args = call.args
    path = getattr(args, "other", None) or getattr(args, "snapshot", None)
    # Names are the target's kernel's: A's on the command line, the current one in a debugger.
    side = "b" if getattr(args, "snapshot", None) is not None else "a"
    resolve_options(call, call.root_options(side, call.target), "range")
    if path is None:
        result = diff(call.target, call.target, _options(call, call.target, call.target))
    else:
        info, request = call.host.backend_request(DUMP_BACKEND, {}, path)
        other = info.open(request)
        try:
            if getattr(args, "snapshot", None) is not None:
                # pt-diff FILE: FILE, then now.
                result = diff(other, call.target, _options(call, other, call.target))
            else:
                result = diff(call.target, other, _options(call, call.target, other))
        finally:
            if other.close is not None:
                other.close()
    call.emit(result)
    return EXIT_OK if result.equal else EXIT_NOT_FOUND


def _options(call: Invocation, a: Target, b: Target) -> DiffOptions:
    """Each side's page table, an address space chosen by owner (``--a-pid``...) resolved on
    that side's target."""
    from gdbext.frontend.diff import DiffOptions

    args = call.args
    return DiffOptions(
        old=call.root_options("a", a),
        new=call.root_options("b", b),
        range=args.range,
        accessed_dirty=args.accessed_dirty,
        labels=args.labels,
    )


COMMAND = Command(
    name="diff",
    summary="what changed between two page tables: added, removed, changed ranges",
    debugger_summary="What changed: pt-diff FILE compares a snapshot with now.",
    text=TEXT,
    run=run,
    arguments=arguments,
    prepare=prepare,
    symbols=True,
    exit_statuses=((EXIT_NOT_FOUND, "the tables differ"),),
)
