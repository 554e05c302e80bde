"""What a command is: one declaration that the command line, the debuggers and the docs read.

A :class:`Command` holds everything about one command (``walk``...): its name (``gdbext walk``
on the command line, ``pt-walk`` in GDB and LLDB), its one-line summaries, its description, its
own arguments, what it checks before anything is opened, how it runs on an opened target, and
its exit statuses. The modules of :mod:`gdbext.frontend.cmd` declare one each; the command
line's parsers (:mod:`gdbext.frontend.parsing`), the execution (:mod:`gdbext.frontend.runner`),
the debugger session (:mod:`gdbext.session`) and the command reference
(:mod:`gdbext.frontend.reference`) only read these declarations.

A declaration module imports little: what a command needs to run (the engine, the renderers) is
imported when it runs, so that ``gdbext --version`` and ``gdbext backends`` start fast.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import IO, TYPE_CHECKING, Any, NamedTuple, Protocol

from gdbext.errors import EXIT_BAD_INPUT, EXIT_OK, GdbextError
from gdbext.frontend.argtypes import command_name as command_name

if TYPE_CHECKING:
    from gdbext.frontend.commands import RootOptions
    from gdbext.plugin.host import Host
    from gdbext.plugin.target import Target

#: A command's exit statuses: (status, when), for its documentation.
ExitStatuses = tuple[tuple[int, str], ...]

#: Every command's: success, and bad input or usage (a one-line message on stderr).
COMMON_EXIT_STATUSES: ExitStatuses = (
    (EXIT_OK, "success"),
    (EXIT_BAD_INPUT, "bad input or usage (a one-line message on stderr)"),
)

#: Given one-line warnings.
Warn = Callable[[str], None]


class Writer(Protocol):
    """Where a command's output goes: a text stream, or a front end's adapter."""

    def write(self, text: str, /) -> object: ...


def _no_arguments(parser: argparse.ArgumentParser, target_options: bool) -> None:
    """A command without arguments of its own."""


class Command(NamedTuple):
    """One command, declared once.

    The parsers give every command (see :func:`gdbext.frontend.parsing.add_command_arguments`)
    what to open (with the target options: a positional DUMP when :attr:`dump_operand`,
    ``--backend``, ``--dump`` and the backends' options), the page-table options when
    :attr:`page_table` (``--cpu``, ``--cr3``, ``--kernel``, ``--root``, ``--pid``, ``--comm``,
    ``--exe``, ``--user-pgd``, ``--levels``), the symbol options when :attr:`symbols`
    (``--system-map``, ``--vmlinux``), the output options (``--format``, ``--json``), then
    :attr:`arguments`.

    This module's classes are named tuples: every command line imports every declaration, and
    making a dataclass costs start-up time.
    """

    #: The command line's name (``gdbext walk``); the debuggers' is :attr:`debugger_name`.
    name: str
    #: One line, for ``gdbext --help``.
    summary: str
    #: One line, for a debugger's command list (``help user-defined``, LLDB's ``help``).
    debugger_summary: str
    #: Runs the parsed command on an opened target; returns the exit status.
    run: Callable[[Invocation], int]
    #: Adds the command's own arguments: ``(parser, target_options)``.
    arguments: Callable[[argparse.ArgumentParser, bool], None] = _no_arguments
    #: Under the usage in ``--help``; ``None``: the summary as a sentence.
    text: str | None = None
    #: Takes the page-table options.
    page_table: bool = True
    #: Takes ``--system-map FILE`` / ``--vmlinux FILE`` (:mod:`gdbext.frontend.symbolic`):
    #: symbol names where its addresses go.
    symbols: bool = False
    #: With the target options, takes a positional DUMP.
    dump_operand: bool = True
    #: For commands whose positional operands (``args.operands``) may stand after options too:
    #: parses them, and returns the dump file their first one names, if any.
    operands: Callable[[argparse.Namespace], str | None] | None = None
    #: Checks the parsed arguments before anything is opened; its value is
    #: :attr:`Invocation.prepared`.
    prepare: Callable[[argparse.Namespace, Host], object] | None = None
    #: Answers without a target when the arguments ask for that (``audit --list-rules``):
    #: writes the answer and returns the exit status, else returns ``None``.
    without_target: Callable[[argparse.Namespace, Host, IO[str]], int | None] | None = None
    #: The exit statuses besides :data:`COMMON_EXIT_STATUSES`.
    exit_statuses: ExitStatuses = ()
    #: ``--format``'s default (``read``'s is ``hexdump``).
    default_format: str = "text"

    @property
    def debugger_name(self) -> str:
        """The name in GDB and LLDB: ``pt-`` and the command line's."""
        return f"pt-{self.name}"

    @property
    def description(self) -> str:
        """The text under the usage in ``--help`` and in the debuggers' help."""
        if self.text is not None:
            return self.text
        return self.summary[0].upper() + self.summary[1:] + "."

    def all_exit_statuses(self) -> ExitStatuses:
        """Every exit status of the command, in order."""
        return tuple(sorted((*COMMON_EXIT_STATUSES, *self.exit_statuses)))


class Invocation(NamedTuple):
    """One run of a parsed command on an opened target."""

    command: Command
    args: argparse.Namespace
    host: Host
    out: IO[str]
    target: Target
    #: The renderer of ``args.format``.
    render: Callable[[Any], Iterable[str]]
    #: What :attr:`Command.prepare` returned.
    prepared: object = None
    #: Given the command's result before it is rendered (a walk counts while it streams).
    observe: Callable[[object], None] | None = None
    #: Given one-line warnings.
    warn: Warn | None = None

    @property
    def name(self) -> str:
        """The command's name for messages: ``walk``, or the debugger's ``pt-walk``."""
        return command_name(self.args)

    def root_options(self, side: str = "", target: Target | None = None) -> RootOptions:
        """The page table the page-table options select, an address space chosen by owner
        (``--root``, ``--pid``, ``--comm``, ``--exe``) resolved on ``target`` (default
        :attr:`target`; see :func:`gdbext.frontend.selection.resolve`; its warnings go to
        :attr:`warn`). With ``side`` (``"a"``), that side's options (``--a-pid``...) where
        given, else the shared ones."""
        args = self.args

        def chosen(name: str) -> Any:
            value = getattr(args, f"{side}_{name}", None) if side else None
            return getattr(args, name, None) if value is None else value

        owner = {name: chosen(name) for name in _OWNER_OPTIONS}
        base = root_options(args, side)
        if side and _side_gives(args, side, ("cr3", "kernel")):
            return base  # the side's own root replaces a shared owner
        if all(value is None for value in owner.values()):
            return base  # nothing to resolve (nor to import)
        if side and _side_gives(args, side, _OWNER_OPTIONS):
            base = dataclasses.replace(base, cr3=None, kernel=False)  # and a shared root
        from gdbext.frontend.selection import RootSelector, resolve

        on = target or self.target
        selector = RootSelector(**owner)
        if getattr(args, "vmlinux", None) and (owner["pid"], owner["comm"]) != (None, None):
            from gdbext.frontend.symbolic import init_task_address

            # The task list with the vmlinux's DWARF offsets, from its init_task.
            init_task = init_task_address(args, on, base)
            selector = dataclasses.replace(selector, vmlinux=args.vmlinux, init_task=init_task)
        options, warnings = resolve(on, selector, base)
        if self.warn is not None:
            for message in warnings:
                self.warn(message)
        return options

    def emit(self, result: object, output: object = None) -> None:
        """Hand ``result`` to the observer, pass on the warnings it carries (``--user-pgd`` on
        a table with no PTI pair), and write it rendered (or ``output``, the part of it that
        is output rather than errors, when given)."""
        if self.observe is not None:
            self.observe(result)
        if self.warn is not None:
            for message in getattr(result, "warnings", ()):
                self.warn(message)
        write_lines(self.out, self.render(result if output is None else output))


#: The options that choose an address space by its owner (:mod:`gdbext.frontend.selection`).
_OWNER_OPTIONS = ("root", "pid", "comm", "exe")


def _side_gives(args: argparse.Namespace, side: str, names: Sequence[str]) -> bool:
    """Whether one of the options ``names`` is given for ``side`` (``--a-cr3``...)."""
    return any(getattr(args, f"{side}_{name}", None) is not None for name in names)


def root_options(args: argparse.Namespace, side: str = "") -> RootOptions:
    """The page table the page-table options select; with ``side`` (``"a"``), that side's
    (``--a-cr3``...: each given one overrides the shared option's value)."""
    from gdbext.frontend.commands import RootOptions

    fields = ("cpu", "cr3", "levels", "kernel", "user_pgd")
    values = {name: getattr(args, name) for name in fields}
    if side:
        for name in fields:
            value = getattr(args, f"{side}_{name}", None)
            if value is not None:
                values[name] = value
        if getattr(args, f"{side}_cr3", None) is not None:
            values["kernel"] = False  # the side's root replaces the shared --kernel
        elif getattr(args, f"{side}_kernel", None):
            values["cr3"] = None
    return RootOptions(**values)


def write_lines(out: IO[str], lines: Iterable[str]) -> None:
    """Write ``lines`` in blocks; the lines made before an error of the input (a walk that
    stopped at its bound) are written too, then the error propagates."""
    write = out.write
    buf: list[str] = []
    try:
        for line in lines:
            buf.append(line)
            if len(buf) >= 4096:
                buf.append("")
                write("\n".join(buf))
                buf = []
    except GdbextError:
        if buf:
            buf.append("")
            write("\n".join(buf))
        raise
    if buf:
        buf.append("")
        write("\n".join(buf))
