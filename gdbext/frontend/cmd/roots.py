"""``roots``: every address space of a Linux target, found in RAM without symbols."""

from __future__ import annotations

import argparse

from gdbext.errors import EXIT_OK
from gdbext.frontend import argtypes
from gdbext.frontend.command import Command, Invocation

#: ``roots``' help: the command line's ``--help`` and the debuggers'.
TEXT = (
    "Every address space of a Linux kernel, from RAM alone (no symbols): the 4 KiB pages "
    "whose kernel half (top-level entries 256..511) equals the kernel's own top table's "
    "(--cr3 ADDR, else VMCOREINFO's init_top_pgt, else the CPU's CR3 traded for its PTI "
    "kernel twin), "
    "in its paging mode (4- or 5-level), and whose user half is a table (each present entry "
    "links a table in RAM and sets no reserved bit). A PTI pair (kernel PGD and user PGD at "
    "+4 KiB) is one address space. Each is named by its id, the physical address of the table "
    "with the kernel half in hex (what --cr3 takes), with its user mappings (leaf runs, bytes, "
    "W+X pages, counted on the table user mode runs on), the CPUs running on it, and the "
    "process's identity read from its user stack's top page (execve's file name and argv) "
    "when it was captured, and the tasks that own it (PID and comm, from the kernel's task "
    "list when its BTF is there; then a table no task owns and no CPU is on, a freed one, is "
    "left out and named after the list)."
)


def arguments(p: argparse.ArgumentParser, target_options: bool) -> None:
    from gdbext.defaults import DEFAULT_MAX_ROOTS

    p.add_argument(
        "--max",
        type=argtypes.integer,
        default=DEFAULT_MAX_ROOTS,
        metavar="N",
        help=f"list at most N address spaces (default {DEFAULT_MAX_ROOTS})",
    )
    p.add_argument(
        "--no-identity",
        action="store_true",
        help="do not read the processes' stacks for their file names and argv",
    )
    p.add_argument(
        "--no-tasks",
        action="store_true",
        help="do not read the kernel's task list (BTF) for the PIDs and comms owning each",
    )


def run(call: Invocation) -> int:
    from gdbext.frontend.roots import RootsOptions, roots

    args = call.args
    result = roots(
        call.target,
        RootsOptions(
            root=call.root_options(),
            max_roots=max(1, args.max),
            identity=not args.no_identity,
            tasks=not args.no_tasks,
        ),
    )
    call.emit(result)
    return EXIT_OK


COMMAND = Command(
    name="roots",
    summary="every address space in RAM: page-table roots, user mappings, process argv",
    debugger_summary="Every address space: roots, user mappings, process identity.",
    text=TEXT,
    run=run,
    arguments=arguments,
)
