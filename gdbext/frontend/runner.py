"""Running a parsed command on a target: the command line's and the debuggers' execution.

:func:`plan` checks a parsed command before anything is opened (its output format, what to
open, its own checks); :func:`execute` runs it on a target and renders it. What the command
does is its declaration's (:attr:`gdbext.frontend.command.Command.run`).
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable, Iterable
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from gdbext.errors import PluginError
from gdbext.frontend import cmd
from gdbext.frontend.command import Command, Invocation, Warn
from gdbext.frontend.parsing import source
from gdbext.units import shown

if TYPE_CHECKING:
    from gdbext.plugin.host import Host
    from gdbext.plugin.target import Target
    from gdbext.render.common import Style


class Plan(NamedTuple):
    """A parsed command, checked before anything is opened."""

    command: Command
    render: Callable[[Any], Iterable[str]]
    #: The dump file to open, if the command line names one.
    source: str | None
    #: What the command's :attr:`~Command.prepare` returned.
    prepared: object


def plan(args: argparse.Namespace, host: Host, style: Style | None = None) -> Plan:
    """Check ``args``: an output format some plugin renders, what to open, the command's own
    checks. ``style``: how a format that styles its output marks it up (colour)."""
    command = cmd.find(args.command)
    formats = host.output_formats(command.name)
    if args.format not in formats:
        raise PluginError(f"no plugin renders {command.name} as {shown(args.format)}")
    dump = source(command, args)
    prepared = None if command.prepare is None else command.prepare(args, host)
    fmt = formats[args.format]
    render = fmt.render
    if style is not None and fmt.styles:
        render = functools.partial(fmt.render, style=style)
    return Plan(command, render, dump, prepared)


def execute(
    args: argparse.Namespace,
    host: Host,
    out: IO[str],
    target: Target,
    observe: Callable[[object], None] | None = None,
    warn: Warn | None = None,
    style: Style | None = None,
) -> int:
    """Run a parsed command (:func:`~gdbext.frontend.parsing.parse_command`) on ``target``,
    render it to ``out``, and return the exit status. ``observe`` is given the command's result
    before it is rendered (a walk's result counts its leaves while it streams). ``warn`` is
    given one-line warnings about what the output cannot show (entries a ``qemu-tlb`` walk did
    not follow, such as tables not captured in a dump). ``style``: how a format that styles its
    output marks it up. The target stays open."""
    return execute_plan(plan(args, host, style), args, host, out, target, observe, warn)


def execute_plan(
    checked: Plan,
    args: argparse.Namespace,
    host: Host,
    out: IO[str],
    target: Target,
    observe: Callable[[object], None] | None = None,
    warn: Warn | None = None,
) -> int:
    """:func:`execute` of a command :func:`plan` checked."""
    call = Invocation(
        checked.command, args, host, out, target, checked.render, checked.prepared, observe, warn
    )
    try:
        return checked.command.run(call)
    finally:
        # What the command came upon in the target's own data (values ignored): said once.
        if warn is not None and target.notices is not None:
            for notice in target.notices():
                warn(notice)
