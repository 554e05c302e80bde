"""The commands, one module each: ``info``, ``walk``, ``translate``, ``read``, ``search``,
``who-maps``, ``aliases``, ``heap``, ``audit``, ``kaslr``, ``roots``, ``tasks``,
``snapshot``, ``diff``, ``map``.

Each module declares its :class:`~gdbext.frontend.command.Command` as ``COMMAND``; adding a
command is writing its module and naming it in :data:`COMMANDS`. The command line, the debuggers
and the command reference list the commands in this order. :mod:`~gdbext.frontend.cmd.operands`
holds what commands taking ``[DUMP] OPERAND...`` share.
"""

from __future__ import annotations

from gdbext.errors import UsageError
from gdbext.frontend.cmd import (
    aliases,
    audit,
    diff,
    heap,
    info,
    kaslr,
    map,
    read,
    roots,
    search,
    snapshot,
    tasks,
    translate,
    walk,
    whomaps,
)
from gdbext.frontend.command import Command
from gdbext.units import shown

COMMANDS: tuple[Command, ...] = (
    info.COMMAND,
    walk.COMMAND,
    translate.COMMAND,
    read.COMMAND,
    search.COMMAND,
    whomaps.COMMAND,
    aliases.COMMAND,
    heap.COMMAND,
    audit.COMMAND,
    kaslr.COMMAND,
    roots.COMMAND,
    tasks.COMMAND,
    snapshot.COMMAND,
    diff.COMMAND,
    map.COMMAND,
)


def find(name: str) -> Command:
    """The command named ``name`` on the command line (``walk``).

    :raises UsageError: there is no such command.
    """
    for command in COMMANDS:
        if command.name == name:
            return command
    names = ", ".join(c.name for c in COMMANDS)
    raise UsageError(f"no command {shown(name)} (commands: {names})")


def find_debugger(name: str) -> Command | None:
    """The command named ``name`` in GDB and LLDB (``pt-walk``), if any."""
    for command in COMMANDS:
        if command.debugger_name == name:
            return command
    return None
