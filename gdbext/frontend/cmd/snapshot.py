"""``snapshot``: save one page table as a small ELF core that ``gdbext`` opens as a target."""

from __future__ import annotations

import argparse

from gdbext.errors import EXIT_OK, UsageError
from gdbext.frontend.command import Command, Invocation, root_options

#: ``snapshot``'s help: the command line's ``--help`` and the debuggers'.
TEXT = (
    "Save the selected page table (its root, paging mode, every table frame it reaches, and "
    "the CPU's control registers with CR3 on that root) as an ELF core laid out as QEMU's "
    "dump-guest-memory, with the target's VMCOREINFO when it has one and a GDBEXT note "
    "giving the format version. The pages the leaves map are not saved: a 512 MiB guest's "
    "kernel table takes a few hundred KiB. Any command opens the file as a dump (backend "
    "core): walk it, or diff a later stop against it (diff, pt-diff FILE)."
)


def arguments(p: argparse.ArgumentParser, target_options: bool) -> None:
    p.add_argument("-o", "--output", metavar="FILE", help="the snapshot file to write (replaced)")
    if not target_options:  # pt-snapshot FILE
        p.add_argument("file", nargs="?", metavar="FILE", help="the snapshot file to write")


def _output(args: argparse.Namespace) -> str:
    positional = getattr(args, "file", None)
    if positional is not None and args.output is not None:
        raise UsageError("snapshot: give the file once (FILE or -o FILE)")
    output = positional if positional is not None else args.output
    if not output:
        raise UsageError("snapshot needs the file to write: -o FILE")
    return str(output)


def prepare(args: argparse.Namespace, host: object) -> str:
    return _output(args)


def run(call: Invocation) -> int:
    from gdbext.frontend.snapshot import SnapshotOptions, snapshot

    assert isinstance(call.prepared, str)
    call.emit(snapshot(call.target, SnapshotOptions(call.prepared, root_options(call.args))))
    return EXIT_OK


COMMAND = Command(
    name="snapshot",
    summary="save the selected page table (tables only) as an ELF core to diff against later",
    debugger_summary="Save the selected page table as a small ELF core: pt-snapshot FILE.",
    text=TEXT,
    run=run,
    arguments=arguments,
    prepare=prepare,
)
