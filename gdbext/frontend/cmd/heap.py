"""``heap``: the kernel heap, the largest usable region of the memory map in the higher half."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING

from gdbext.errors import EXIT_NOT_FOUND, EXIT_OK, UsageError
from gdbext.frontend import argtypes
from gdbext.frontend.command import Command, Invocation, root_options
from gdbext.units import shown

if TYPE_CHECKING:
    from gdbext.frontend.heap import HeapOptions
    from gdbext.plugin.host import Host

#: What ``heap`` means, for its help: the command line's ``--help`` and the debuggers'.
TEXT = (
    "Where the kernel heap is: the largest usable region of the physical memory map, moved "
    "into the higher half by the physical memory offset. Linux: the largest Usable region of "
    "the e820 map in boot_params (found by a scan of the memory, or at --at ADDR), moved into "
    "the direct map (its base found in the page tables); e820 is the default for a Linux "
    "target (a dump with VMCOREINFO). A BootInfo kernel (booted by the bootloader crate): the "
    "seed's contract, the largest usable region of the BootInfo's memory map at its "
    "physical_memory_offset (--memmap bootinfo --at ADDR)."
)


def add_heap_arguments(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The memory map and offset options (``heap``'s, and ``audit``'s for its heap rule)."""
    p.add_argument(
        "--memmap",
        nargs="+",
        metavar=("bootinfo|e820|json", "FILE"),
        help="memory map source: 'bootinfo' (with --at), 'e820' (Linux's boot_params, found "
        "by a scan or at --at; the default for Linux) or 'json FILE'",
    )
    p.add_argument(
        "--at",
        type=argtypes.integer,
        metavar="ADDR",
        help="physical address of the BootInfo (bootinfo) or of boot_params (e820)",
    )
    p.add_argument("--bootinfo-version", choices=("0.11", "0.9"), help="BootInfo layout")
    p.add_argument(
        "--bootinfo-features",
        metavar="LIST",
        help="v0.9 cargo features, comma-separated (default map_physical_memory)",
    )
    p.add_argument(
        "--phys-offset",
        type=argtypes.offset,
        metavar="ADDR|auto",
        help="physical_memory_offset; 'auto' (the default when the memory map has none) "
        "finds the direct map's base from the page tables",
    )


def _arguments(p: argparse.ArgumentParser, target_options: bool) -> None:
    add_heap_arguments(p)


def heap_options(args: argparse.Namespace) -> HeapOptions:
    """The heap options the command line gives (checked: ``--memmap`` and its FILE)."""
    from gdbext.frontend.heap import HeapOptions

    memmap = args.memmap or []
    kind = memmap[0] if memmap else None
    path = None
    if kind == "json":
        if len(memmap) != 2:
            raise UsageError(
                "--memmap json takes exactly one FILE (put the DUMP before the options)"
            )
        path = memmap[1]
    elif kind in ("bootinfo", "e820") and len(memmap) != 1:
        raise UsageError(
            f"--memmap {kind} takes no FILE (put the DUMP before the options; "
            f"{'give --at ADDR' if kind == 'bootinfo' else '--at ADDR is optional'})"
        )
    elif kind not in (None, "bootinfo", "e820", "json"):
        raise UsageError(f"--memmap must be bootinfo, e820 or json, not {shown(kind)}")
    features = None
    if args.bootinfo_features is not None:
        features = tuple(f for f in args.bootinfo_features.split(",") if f)
    return HeapOptions(
        memmap=kind,
        at=args.at,
        bootinfo_version=args.bootinfo_version,
        bootinfo_features=features,
        json_path=path,
        phys_offset=args.phys_offset,
        root=root_options(args),
    )


def _prepare(args: argparse.Namespace, host: Host) -> HeapOptions:
    return heap_options(args)


def run(call: Invocation) -> int:
    from gdbext.frontend.heap import HeapOptions, heap

    options = call.prepared
    assert isinstance(options, HeapOptions)
    options = dataclasses.replace(options, root=call.root_options())  # --pid and the like
    call.emit(heap(call.target, options))
    return EXIT_OK


COMMAND = Command(
    name="heap",
    summary="the kernel heap: largest usable region, higher half",
    debugger_summary="Locate the kernel heap: the largest usable region, in the higher half.",
    text=TEXT,
    run=run,
    arguments=_arguments,
    prepare=_prepare,
    exit_statuses=((EXIT_NOT_FOUND, "no memory map or direct map found"),),
)
