"""``tasks``: the kernel's task list, read with the offsets of its own BTF (or a vmlinux's
DWARF)."""

from __future__ import annotations

import argparse

from gdbext.errors import EXIT_NOT_FOUND, EXIT_OK
from gdbext.frontend import argtypes
from gdbext.frontend.command import Command, Invocation

#: ``tasks``' help: the command line's ``--help`` and the debuggers'.
TEXT = (
    "The kernel's task list, walked from init_task with structure offsets from the BTF the "
    "kernel carries in its image (CONFIG_DEBUG_INFO_BTF; no symbols or debug files needed): "
    "for each thread-group leader and each of its threads, PID, TGID, comm, state (ps's "
    "letter) and root, the physical address of its mm's top table (mm->pgd through the "
    "kernel's tables); kernel threads have no mm and no root. init_task is the task whose "
    "comm is swapper/0 and whose tasks list closes. The kernel's tables are the VMCOREINFO "
    "root, else the selected CPU's. A list that does not come back to init_task, a pointer "
    "that cannot be read, or more than --max entries ends the walk: the tasks read are shown, "
    "then the error (exit status 2). With --vmlinux FILE (built with debug info), the "
    "offsets come from its DWARF instead, and init_task is its symbol moved by the KASLR "
    "slide (--system-map gives init_task's address alone); a vmlinux without debug info is "
    "an error."
)


def arguments(p: argparse.ArgumentParser, target_options: bool) -> None:
    from gdbext.defaults import MAX_TASKS

    p.add_argument(
        "--max",
        type=argtypes.integer,
        default=MAX_TASKS,
        metavar="N",
        help=f"stop after N tasks, calling the list corrupt (default {MAX_TASKS})",
    )


def run(call: Invocation) -> int:
    from gdbext.frontend.symbolic import init_task_address
    from gdbext.frontend.tasks import TasksOptions, tasks

    args = call.args
    root = call.root_options()
    init_task = init_task_address(args, call.target, root, call.warn)
    vmlinux = getattr(args, "vmlinux", None) or None
    options = TasksOptions(root, max(1, args.max), vmlinux, init_task)
    result = tasks(call.target, options)
    call.emit(result)
    if result.tasks.error is not None:
        raise result.tasks.error
    return EXIT_OK


COMMAND = Command(
    name="tasks",
    summary="the kernel's task list (PID, TGID, comm, state, root), from the dump's own BTF "
    "or a vmlinux's DWARF",
    debugger_summary="The kernel's tasks: PID, TGID, comm, state, page-table root.",
    text=TEXT,
    run=run,
    arguments=arguments,
    exit_statuses=((EXIT_NOT_FOUND, "no BTF or no init_task found"),),
    symbols=True,
)
