"""What every debugger front end shares: the ``pt-*`` commands over one :class:`Session`.

A front end (GDB's ``gdbext/gdbinit.py``, LLDB's ``gdbext/lldbinit.py``) creates one
:class:`Session` with the plugin host and a few debugger-specific callables, then routes its
commands here with the argument words already split:

- :meth:`Session.run` runs a command of :mod:`gdbext.frontend.cmd` by its debugger name
  (``pt-walk``, ``pt-translate``, ``pt-info``, ``pt-heap``, ``pt-audit``: :meth:`Session.commands`):
  the command line's parsers (prog ``pt-walk``...), execution and renderers, so the output is the
  command line's, byte for byte, on the same target;
- :meth:`Session.backend` is ``pt-backend``: list the backends, or select one (``pt-backend core
  FILE``); the session holds the selection and the target it opened (closed on a switch);
- :meth:`Session.phys` and :meth:`Session.virt` back the convenience functions ``$pt_phys``
  and ``$pt_virt``;
- :meth:`Session.summary`, :meth:`Session.help` and :meth:`Session.complete` give the command
  list's line, the help text and completions (:mod:`gdbext.frontend.completion`).

Around each command the session opens the target when needed (live backends, e.g. ``gdb``,
are opened again for every command: their CPU state is per stop), enters the target's
:attr:`~gdbext.plugin.target.Target.command_scope`, and reports progress once a command has run
for ``progress_after`` seconds (:mod:`gdbext.frontend.progress`). Errors propagate:
:class:`~gdbext.errors.GdbextError` (one-line message), ``OSError``, and ``KeyboardInterrupt``
after the command scope was left; the front end turns them into its debugger's one-line error.
Nothing here imports a debugger.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, cast

from gdbext.errors import (
    EXIT_FINDINGS,
    EXIT_NOT_FOUND,
    EXIT_OK,
    FindingsError,
    GdbextError,
    NotFoundError,
    UsageError,
)
from gdbext.frontend import cmd
from gdbext.frontend.command import Command, Writer
from gdbext.frontend.completion import Completion, complete
from gdbext.frontend.parsing import (
    backend_request,
    build_backend_parser,
    build_command_parser,
    parse_command,
)
from gdbext.frontend.progress import PROGRESS_AFTER, Ticker, TickingMapper, TickingWriter
from gdbext.frontend.runner import execute
from gdbext.plugin.host import DUMP_BACKEND, Host
from gdbext.plugin.target import OpenRequest, Target
from gdbext.render.common import ANSI
from gdbext.units import plural, shown

if TYPE_CHECKING:
    from gdbext.linux.symbols import SymbolSource

BACKEND_COMMAND = "pt-backend"
#: ``pt-backend``'s line in a debugger's command list.
BACKEND_SUMMARY = "List the backends, or select the one the pt-* commands run on."


@dataclass(frozen=True)
class Selection:
    """A backend to open and what to ask it: ``pt-backend NAME [SOURCE] [OPTIONS]``."""

    backend: str
    request: OpenRequest = field(default_factory=OpenRequest)
    #: Why this backend: ``"selected"`` with ``pt-backend``, or the front end's default reason.
    reason: str = "selected"

    def describe(self) -> str:
        """``NAME SOURCE --option VALUE...``, as it would be typed."""
        words = [self.backend]
        if self.request.source is not None:
            words.append(self.request.source)
        for name, value in self.request.options.items():
            if value is not None:
                words.append(f"--{name.replace('_', '-')} {value}")
        return " ".join(words)


class Session:
    """The pt-* commands of one debugger session.

    :param host: the plugin host (backends and output formats).
    :param default: the selection to use while none was made with ``pt-backend`` (GDB: backend
        ``gdb`` when a remote target is connected), or ``None``; asked before each command.
    :param no_backend_hint: how to get a backend, when there is neither a selection nor a
        default (the error says ``no backend selected; HINT``).
    :param live_backends: backends opened again for every command (their state is per stop).
    :param progress: called with a one-line progress report of a long command (e.g. written to
        the debugger's stderr); ``None`` for no reports.
    :param progress_after: seconds before the first report, and between reports.
    :param clock: monotonic seconds (tests pass their own).
    :param symbols: the symbols the debugger has loaded, asked before each command that takes
        symbol names when it was given no symbol file (``None``: the debugger has none).
    """

    def __init__(
        self,
        host: Host,
        *,
        default: Callable[[], Selection | None] | None = None,
        no_backend_hint: str = "select one: pt-backend NAME [ARGS], e.g. pt-backend core FILE",
        live_backends: Collection[str] = (),
        progress: Callable[[str], None] | None = None,
        progress_after: float = PROGRESS_AFTER,
        clock: Callable[[], float] = time.monotonic,
        symbols: Callable[[], SymbolSource | None] | None = None,
    ) -> None:
        self.host = host
        self._default = default
        self._no_backend_hint = no_backend_hint
        self._live = frozenset(live_backends)
        self._progress = progress
        self._progress_after = progress_after
        self._clock = clock
        self._symbols = symbols
        self._parsers: dict[str, argparse.ArgumentParser] = {}
        #: What ``pt-backend`` selected (None: the default applies).
        self.selection: Selection | None = None
        #: The target opened last, and for which selection.
        self._target: Target | None = None
        self._opened_for: Selection | None = None

    # --- parsers, help, completion ---------------------------------------------------------

    def commands(self) -> list[str]:
        """The debugger names of the commands :meth:`run` runs (``pt-walk``...), in order."""
        return [c.debugger_name for c in cmd.COMMANDS]

    def parser(self, name: str) -> argparse.ArgumentParser:
        """The argument parser of front-end command ``name`` (``pt-walk``..., ``pt-backend``)."""
        parser = self._parsers.get(name)
        if parser is None:
            if name == BACKEND_COMMAND:
                parser = build_backend_parser(self.host, prog=name)
                parser.usage = f"{name} [-h] [NAME [SOURCE] [backend options]]"
                parser.description = (
                    "Without arguments: list the backends and show the selected one. With NAME: "
                    "open that backend (a dump file for 'core') for the pt-* commands."
                )
            else:
                parser = build_command_parser(self.host, _command(name).name, prog=name)
            self._parsers[name] = parser
        return parser

    def summary(self, name: str) -> str:
        """The command's line in a debugger's command list."""
        return BACKEND_SUMMARY if name == BACKEND_COMMAND else _command(name).debugger_summary

    def help(self, name: str) -> str:
        """The command's help: its summary line, then the argparse help (usage, options)."""
        return f"{self.summary(name)}\n\n{self.parser(name).format_help().rstrip()}"

    def complete(self, name: str, text: str) -> Completion:
        """Completions of the last word of ``text`` (the arguments typed so far): option names,
        option values with choices, backend names, and file names where a file goes."""
        parser = self.parser(name)
        if name == BACKEND_COMMAND:
            return complete(parser, text, self._complete_backend)
        if _command(name).operands is not None:
            # Operands (addresses): nothing to offer.
            return complete(parser, text, lambda positionals, word: Completion(word))
        return complete(parser, text)

    def _complete_backend(self, positionals: Sequence[str], word: str) -> Completion:
        """``pt-backend NAME [SOURCE]``: a backend's name, then the dump backend's file."""
        if not positionals:
            names = sorted(self.host.backends())
            return Completion(word, tuple(n for n in names if n.startswith(word)))
        if len(positionals) == 1 and positionals[0] == DUMP_BACKEND:
            return Completion.path(word)
        return Completion(word)

    # --- commands --------------------------------------------------------------------------

    def run(self, name: str, argv: Sequence[str], out: Writer, *, colour: bool = False) -> int:
        """Run ``pt-walk``, ``pt-translate``, ``pt-info``, ``pt-heap`` or ``pt-audit``.

        :param colour: mark up text output with ANSI colours (the front end decides: its
            styling is on and the output is a terminal).
        :returns: 0, or 1 when an address is not mapped or nothing was found (the output says
            which, also for errors of exit status 1, e.g. ``--has`` of an unmapped address);
            exit status 2 raises instead (:class:`~gdbext.errors.GdbextError`), and so does
            ``pt-audit --fail-on`` with findings that severe (after they were printed:
            :class:`~gdbext.errors.FindingsError`, so that a GDB script stops there).
        """
        command = _command(name)
        args = self._parse(name, argv, out)
        if args is None:
            return EXIT_OK
        if command.without_target is not None:
            status = command.without_target(args, self.host, cast(IO[str], out))
            if status is not None:
                return status
        if command.symbols and self._symbols is not None:
            from gdbext.frontend.symbolic import LOADED, has_file

            if not has_file(args):
                setattr(args, LOADED, self._symbols())
        try:
            with self._command(name) as (target, ticker):
                progress = self._progress
                status = execute(
                    args,
                    self.host,
                    cast(IO[str], TickingWriter(out, ticker)),
                    target,
                    ticker.observe,
                    None if progress is None else lambda m: progress(f"{name}: warning: {m}"),
                    ANSI if colour else None,
                )
        except GdbextError as exc:
            if exc.exit_status != EXIT_NOT_FOUND:
                raise
            # Nothing there (--has of an unmapped address...): a result, not a failure.
            out.write(f"{exc}\n")
            return EXIT_NOT_FOUND
        if status == EXIT_FINDINGS:
            found = getattr(ticker.result, "findings", ())
            count = sum(1 for f in found if f.severity >= args.fail_on)
            raise FindingsError(
                f"{name}: {count} finding{plural(count)} at or above --fail-on {args.fail_on}",
                str(args.fail_on),
                count,
            )
        return status

    def backend(self, argv: Sequence[str], out: Writer) -> int:
        """``pt-backend``: without arguments list the backends and the selection; with ``NAME
        [SOURCE] [OPTIONS]`` open that backend and select it (the previous target is closed).
        A backend that does not open leaves the selection as it was."""
        if not argv:
            self._list(out)
            return EXIT_OK
        args = self._parse(BACKEND_COMMAND, argv, out)
        if args is None:
            return EXIT_OK
        source = None if args.source is None else os.path.expanduser(args.source)
        info, request = backend_request(self.host, args.name, args, source)
        target = info.open(request)
        self.close()
        self.selection = Selection(args.name, request)
        self._target, self._opened_for = target, self.selection
        out.write(f"backend {args.name}: {target.description}\n")
        return EXIT_OK

    def phys(self, vaddr: int) -> int:
        """The physical address ``vaddr`` translates to (the selected CPU's page table)."""
        from gdbext.frontend.commands import open_page_table

        with self._command("$pt_phys") as (target, _):
            return open_page_table(target).translate(vaddr).paddr

    def virt(self, paddr: int) -> int:
        """The first virtual address (the lowest, as a walk meets them) that maps ``paddr``:
        ``who-maps``'s first answer, from the reverse index kept for the stop."""
        from gdbext.addr import AddrRange
        from gdbext.frontend.whomaps import who_maps

        with self._command("$pt_virt") as (target, _):
            result = who_maps(target, AddrRange(paddr, paddr + 1))
            first = result.first_vaddr
            if first is None:
                raise NotFoundError(
                    f"physical 0x{paddr:x} is not mapped by the page table at 0x{result.root:x}"
                )
            return first

    def close(self) -> None:
        """Close the target opened last (the selection stays)."""
        target, self._target, self._opened_for = self._target, None, None
        if target is not None and target.close is not None:
            target.close()

    # --- internals -------------------------------------------------------------------------

    def _parse(self, name: str, argv: Sequence[str], out: Writer) -> argparse.Namespace | None:
        """The parsed arguments, or None when the parser printed its help (``--help``)."""
        parser = self.parser(name)
        with contextlib.redirect_stdout(cast(IO[str], out)):
            try:
                return parse_command(parser, argv)
            except SystemExit:  # --help: argparse printed it and "exits"
                return None

    def _list(self, out: Writer) -> None:
        active = self._active_selection()
        lines = []
        for name, info in self.host.backends().items():
            mark = "*" if active is not None and active.backend == name else " "
            lines.append(f"{mark} {name:<10} {info.summary}")
        if active is None:
            lines.append(f"selected: none; {self._no_backend_hint}")
        elif active.reason == "selected":
            lines.append(f"selected: {active.describe()}")
        else:
            lines.append(f"selected: {active.describe()} (default: {active.reason})")
        out.write("\n".join(lines) + "\n")

    def _active_selection(self) -> Selection | None:
        if self.selection is not None:
            return self.selection
        return None if self._default is None else self._default()

    def _open(self) -> Target:
        """The target of the active selection: the one opened before when it is for the same
        selection and not live, else a newly opened one (the old one closed)."""
        selection = self._active_selection()
        if selection is None:
            raise UsageError(f"no backend selected; {self._no_backend_hint}")
        target = self._target
        if (
            target is not None
            and self._opened_for == selection
            and selection.backend not in self._live
        ):
            return target
        self.close()
        target = self.host.backend(selection.backend).open(selection.request)
        self._target, self._opened_for = target, selection
        return target

    @contextlib.contextmanager
    def _command(self, name: str) -> Iterator[tuple[Target, Ticker]]:
        """The target for one command, inside its command scope, with its reads reporting
        progress."""
        ticker = Ticker(name, self._clock, self._progress_after, self._progress)
        target = self._open()
        if self._progress is not None:
            target = dataclasses.replace(target, mapper=TickingMapper(target.mapper, ticker.tick))
        scope = target.command_scope
        with scope() if scope is not None else contextlib.nullcontext():
            yield target, ticker


def _command(name: str) -> Command:
    """The command named ``name`` in the debuggers (``pt-walk``)."""
    command = cmd.find_debugger(name)
    if command is None:
        raise UsageError(f"no command {shown(name)}")
    return command
