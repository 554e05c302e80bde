"""``kaslr``: the bases KASLR chose, with their evidence, and pointers that leak them."""

from __future__ import annotations

import argparse

from gdbext.errors import EXIT_NOT_FOUND, EXIT_OK
from gdbext.frontend import argtypes
from gdbext.frontend.command import Command, Invocation

#: ``kaslr``'s help: the command line's ``--help`` and the debuggers'.
TEXT = (
    "What KASLR chose for a Linux kernel: the kernel image's virtual base (_text) and its "
    "slide from 0xffffffff81000000, its physical load address (_text translated through the "
    "kernel's root), the direct map (page_offset_base), the vmalloc and vmemmap bases and the "
    "modules area, each with how it was found (VMCOREINFO, or page-table evidence when there "
    "is none) and a line for each source that disagrees. --leaks: the 8-byte values in "
    "user-accessible pages of the selected root (its user half, or --range) that point into "
    "the kernel image or the modules as mapped, or the direct map, grouped by where they "
    "point, with VA, PA and the page's permissions; each frame is read once. Exits 1 with "
    "--leaks when none is found."
)


def arguments(p: argparse.ArgumentParser, target_options: bool) -> None:
    from gdbext.defaults import DEFAULT_MAX_LEAKS

    p.add_argument(
        "--leaks",
        action="store_true",
        help="find values in user-accessible pages that point into the kernel",
    )
    p.add_argument(
        "--range",
        type=argtypes.addr_range,
        metavar="START-END",
        help="--leaks: search this VA range (or START+SIZE, bounds may be symbols; default: "
        "the user half)",
    )
    p.add_argument(
        "--all-pages",
        action="store_true",
        help="--leaks: search supervisor pages of the range too, not only user-accessible ones",
    )
    p.add_argument(
        "--max",
        type=argtypes.integer,
        default=DEFAULT_MAX_LEAKS,
        metavar="N",
        help=f"--leaks: report at most N (default {DEFAULT_MAX_LEAKS}; the total is said)",
    )


def _prepare(args: argparse.Namespace, host: object) -> None:
    from gdbext.frontend.symbolic import check_symbol_options

    check_symbol_options(args, "range")


def run(call: Invocation) -> int:
    from gdbext.frontend.kaslr import KaslrOptions, kaslr
    from gdbext.frontend.symbolic import resolve_options

    args = call.args
    root = call.root_options()
    resolve_options(call, root, "range")
    result = kaslr(
        call.target,
        KaslrOptions(
            root=root,
            leaks=args.leaks,
            range=args.range,
            user_only=not args.all_pages,
            max_leaks=max(0, args.max),
        ),
    )
    call.emit(result)
    if args.leaks and not result.total_leaks:
        return EXIT_NOT_FOUND
    return EXIT_OK


COMMAND = Command(
    name="kaslr",
    summary="the bases KASLR chose, with evidence; --leaks: kernel pointers in user pages",
    debugger_summary="KASLR: kernel base, slide, physical load, direct map; --leaks.",
    text=TEXT,
    run=run,
    arguments=arguments,
    prepare=_prepare,
    symbols=True,
    exit_statuses=((EXIT_NOT_FOUND, "--leaks found no pointer"),),
)
