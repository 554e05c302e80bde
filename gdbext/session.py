"""What every debugger front end shares: the ``pt-*`` commands over one :class:`Session`.

A front end (GDB's ``gdbext/gdbinit.py``, LLDB's later) creates one :class:`Session` with the
plugin host and a few debugger-specific callables, then routes its commands here with the
argument words already split:

- :meth:`Session.run` runs ``pt-walk``, ``pt-translate``, ``pt-info``, ``pt-heap`` or
  ``pt-audit``: the
  command line's parsers (:func:`gdbext.cli.build_command_parser`, prog ``pt-walk``...) and its
  execution and renderers (:func:`gdbext.cli.execute`), so the output is the command line's,
  byte for byte, on the same target;
- :meth:`Session.backend` is ``pt-backend``: list the backends, or select one (``pt-backend core
  FILE``); the session holds the selection and the target it opened (closed on a switch);
- :meth:`Session.phys` and :meth:`Session.virt` back the convenience functions ``$pt_phys``
  and ``$pt_virt``;
- :meth:`Session.help` and :meth:`Session.complete` give the help text and completions.

Around each command the session opens the target when needed (live backends, e.g. ``gdb``,
are opened again for every command: their CPU state is per stop), enters the target's
:attr:`~gdbext.plugin.target.Target.command_scope`, and reports progress once a command has run for
``progress_after`` seconds. Errors propagate: :class:`~gdbext.errors.GdbextError` (one-line
message), ``OSError``, and ``KeyboardInterrupt`` after the command scope was left; the front
end turns them into its debugger's one-line error. Nothing here imports a debugger.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Protocol, cast

from gdbext import cli
from gdbext.errors import (
    EXIT_FINDINGS,
    EXIT_NOT_FOUND,
    EXIT_OK,
    FindingsError,
    GdbextError,
    NotFoundError,
    UsageError,
)
from gdbext.frontend import commands
from gdbext.mapper import PhysMapper
from gdbext.plugin.host import Host
from gdbext.plugin.target import OpenRequest, Target
from gdbext.render.common import ANSI, plural
from gdbext.units import shown
from gdbext.x86.records import LeafRun

#: Front-end command name -> command-line command.
COMMANDS: dict[str, str] = {
    "pt-walk": "walk",
    "pt-translate": "translate",
    "pt-info": "info",
    "pt-heap": "heap",
    "pt-audit": "audit",
}
BACKEND_COMMAND = "pt-backend"

#: One line per front-end command (a debugger's command list shows it).
SUMMARIES: dict[str, str] = {
    "pt-walk": "Walk a page table: every mapping, merged into ranges (as `gdbext walk`).",
    "pt-translate": "Translate virtual addresses: every level, raw entries and decoded flags.",
    "pt-info": "Paging mode, control registers and paging features, backend and read path.",
    "pt-heap": "Locate the kernel heap: the largest usable region, in the higher half.",
    "pt-audit": "Audit the page tables: findings of every rule plugin, by severity (as `gdbext "
    "audit`).",
    BACKEND_COMMAND: "List the backends, or select the one the pt-* commands run on.",
}

#: Seconds a command runs before progress is reported, and between two reports.
PROGRESS_AFTER = 1.0
#: The same when the reports go to a file or a pipe (a batch log), not to a terminal.
PROGRESS_AFTER_NOT_A_TERMINAL = 5.0
#: A progress report, as :func:`progress_line` writes it: the command, the leaves found so far
#: (when the command counts them), the whole seconds since it started. A report is not part of
#: the command's result; this is how a reader of a log (or a test) tells it from an error.
PROGRESS_LINE = re.compile(
    r"(?P<command>[$\w-]+): (?:(?P<leaves>\d+) leaves so far, )?(?P<seconds>\d+) s "
    r"\(Ctrl-C interrupts\)"
)


def progress_line(command: str, seconds: float, leaves: int | None = None) -> str:
    """One progress report (``pt-walk: 12345 leaves so far, 3 s (Ctrl-C interrupts)``), the
    format :data:`PROGRESS_LINE` matches."""
    done = "" if leaves is None else f"{leaves} leaves so far, "
    return f"{command}: {done}{seconds:.0f} s (Ctrl-C interrupts)"


def progress_after(fd: int = 2) -> float:
    """:data:`PROGRESS_AFTER` if ``fd`` (where the front end reports progress) is a terminal,
    else :data:`PROGRESS_AFTER_NOT_A_TERMINAL`: a log gets at most one line per 5 s."""
    try:
        return PROGRESS_AFTER if os.isatty(fd) else PROGRESS_AFTER_NOT_A_TERMINAL
    except OSError:
        return PROGRESS_AFTER_NOT_A_TERMINAL


class Writer(Protocol):
    """Where a command's output goes: a text stream, or a front end's adapter."""

    def write(self, text: str, /) -> object: ...


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


@dataclass(frozen=True)
class Completion:
    """What the word being typed can become: whole ``candidates``, each starting with
    ``word``; ``filename`` says that the word is a file name (the candidates are then the
    files and directories, ``/`` after a directory, that :func:`complete_path` finds)."""

    word: str
    candidates: tuple[str, ...] = ()
    filename: bool = False

    @classmethod
    def path(cls, word: str) -> Completion:
        return cls(word, complete_path(word), filename=True)


def complete_path(word: str) -> tuple[str, ...]:
    """The files and directories whose path starts with ``word`` (``~`` expanded for the
    lookup only), directories ending in ``/``; hidden ones only when ``word`` names them."""
    head, sep, tail = word.rpartition("/")
    directory = os.path.expanduser(head + sep) if sep else "."
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return ()
    found = []
    for name in names:
        if name.startswith(tail) and (tail.startswith(".") or not name.startswith(".")):
            is_dir = os.path.isdir(os.path.join(directory, name))
            found.append(head + sep + name + ("/" if is_dir else ""))
    return tuple(found)


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
    ) -> None:
        self.host = host
        self._default = default
        self._no_backend_hint = no_backend_hint
        self._live = frozenset(live_backends)
        self._progress = progress
        self._progress_after = progress_after
        self._clock = clock
        self._parsers: dict[str, argparse.ArgumentParser] = {}
        #: What ``pt-backend`` selected (None: the default applies).
        self.selection: Selection | None = None
        #: The target opened last, and for which selection.
        self._target: Target | None = None
        self._opened_for: Selection | None = None

    # --- parsers, help, completion ---------------------------------------------------------

    def parser(self, name: str) -> argparse.ArgumentParser:
        """The argument parser of front-end command ``name`` (``pt-walk``..., ``pt-backend``)."""
        parser = self._parsers.get(name)
        if parser is None:
            if name == BACKEND_COMMAND:
                parser = cli.build_backend_parser(self.host, prog=name)
                parser.usage = f"{name} [-h] [NAME [SOURCE] [backend options]]"
                parser.description = (
                    "Without arguments: list the backends and show the selected one. With NAME: "
                    "open that backend (a dump file for 'core') for the pt-* commands."
                )
            elif name in COMMANDS:
                parser = cli.build_command_parser(self.host, COMMANDS[name], prog=name)
            else:
                raise UsageError(f"no command {shown(name)}")
            self._parsers[name] = parser
        return parser

    def help(self, name: str) -> str:
        """The command's help: its summary line, then the argparse help (usage, options)."""
        return f"{SUMMARIES[name]}\n\n{self.parser(name).format_help().rstrip()}"

    def complete(self, name: str, text: str) -> Completion:
        """Completions of the last word of ``text`` (the arguments typed so far): option names,
        option values with choices, backend names, and file names where a file goes."""
        words = text.split()
        word = words.pop() if words and not text[-1:].isspace() else ""
        parser = self.parser(name)
        actions: dict[str, argparse.Action] = {}
        for act in parser._actions:
            for option in act.option_strings:
                actions[option] = act
        # The option whose values are being typed, if any, and its values so far.
        pending: argparse.Action | None = None
        values: list[str] = []
        positionals: list[str] = []
        for w in words:
            found = actions.get(w)
            if found is not None:
                pending, values = (found, []) if found.nargs != 0 else (None, [])
            elif pending is not None:
                values.append(w)
                if _has_all_values(pending, values):
                    pending = None
            elif not w.startswith("-"):
                positionals.append(w)
        if pending is not None and not word.startswith("-"):
            return self._complete_value(pending, values, word)
        if word.startswith("-"):
            options = sorted(o for o in actions if o.startswith("--"))
            return Completion(word, tuple(o for o in options if o.startswith(word)))
        if name == BACKEND_COMMAND:
            if not positionals:
                names = sorted(self.host.backends())
                return Completion(word, tuple(n for n in names if n.startswith(word)))
            if len(positionals) == 1 and positionals[0] == cli.DUMP_BACKEND:
                return Completion.path(word)
            return Completion(word)
        if word or name == "pt-translate":
            return Completion(word)  # an address: nothing to offer
        options = sorted(o for o in actions if o.startswith("--"))
        return Completion(word, tuple(options))

    @staticmethod
    def _complete_value(action: argparse.Action, values: Sequence[str], word: str) -> Completion:
        if action.dest == "memmap":  # KIND, and a FILE after json
            if not values:
                kinds = ("bootinfo", "e820", "json")
                return Completion(word, tuple(k for k in kinds if k.startswith(word)))
            return Completion.path(word) if values[0] == "json" else Completion(word)
        if action.choices is not None:
            choices = [str(c) for c in action.choices]
            return Completion(word, tuple(c for c in choices if c.startswith(word)))
        metavar = action.metavar
        names = metavar if isinstance(metavar, tuple) else (metavar,)
        return Completion.path(word) if "FILE" in names else Completion(word)

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
        if name not in COMMANDS:
            raise UsageError(f"no command {shown(name)}")
        args = self._parse(name, argv, out)
        if args is None:
            return EXIT_OK
        if args.command == "audit" and args.list_rules:
            return cli.list_rules(args, self.host, cast(IO[str], out))
        try:
            with self._command(name) as (target, ticker):
                progress = self._progress
                status = cli.execute(
                    args,
                    self.host,
                    cast(IO[str], _Ticking(out, ticker)),
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
        info, request = cli.backend_request(self.host, args.name, args, source)
        target = info.open(request)
        self.close()
        self.selection = Selection(args.name, request)
        self._target, self._opened_for = target, self.selection
        out.write(f"backend {args.name}: {target.description}\n")
        return EXIT_OK

    def phys(self, vaddr: int) -> int:
        """The physical address ``vaddr`` translates to (the selected CPU's page table)."""
        with self._command("$pt_phys") as (target, _):
            return commands.open_page_table(target).translate(vaddr).paddr

    def virt(self, paddr: int) -> int:
        """The first virtual address (in walk order) that maps ``paddr``: a walk of the selected
        CPU's page table that stops at the first leaf holding it."""
        with self._command("$pt_virt") as (target, _):
            pt = commands.open_page_table(target)
            for rec in pt.iter_runs(aliases="expand"):
                if type(rec) is LeafRun and rec.paddr <= paddr < rec.paddr + rec.size:
                    return rec.vaddr + (paddr - rec.paddr)
            raise NotFoundError(
                f"physical 0x{paddr:x} is not mapped by the page table at 0x{pt.root:x}"
            )

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
                return cli.parse_command(parser, argv)
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
    def _command(self, name: str) -> Iterator[tuple[Target, _Ticker]]:
        """The target for one command, inside its command scope, with its reads reporting
        progress."""
        ticker = _Ticker(name, self._clock, self._progress_after, self._progress)
        target = self._open()
        if self._progress is not None:
            target = dataclasses.replace(target, mapper=_TickingMapper(target.mapper, ticker.tick))
        scope = target.command_scope
        with scope() if scope is not None else contextlib.nullcontext():
            yield target, ticker


def _has_all_values(action: argparse.Action, values: Sequence[str]) -> bool:
    """Whether an option has taken all its values (``--memmap``: KIND, or ``json FILE``)."""
    if action.dest == "memmap":
        return len(values) >= 2 or values[0] != "json"
    if isinstance(action.nargs, int):
        return len(values) >= action.nargs
    return action.nargs in (None, "?")


class _Ticker:
    """Progress of one command: :meth:`tick` (often) reports at most once per interval."""

    def __init__(
        self,
        name: str,
        clock: Callable[[], float],
        after: float,
        report: Callable[[str], None] | None,
    ) -> None:
        self.name = name
        self.result: object = None
        self._clock = clock
        self._after = after
        self._report = report
        self._start = clock()
        self._next = self._start + after

    def observe(self, result: object) -> None:
        self.result = result

    def tick(self) -> None:
        if self._report is None:
            return
        now = self._clock()
        if now < self._next:
            return
        self._next = now + self._after
        stats = getattr(self.result, "stats", None)
        leaves = stats["leaves"] if isinstance(stats, dict) else None
        self._report(progress_line(self.name, now - self._start, leaves))


class _TickingMapper:
    """A mapper that ticks the command's progress on every read (reads are where live walks
    spend their time); everything else is the wrapped mapper's."""

    def __init__(self, inner: PhysMapper, tick: Callable[[], None]) -> None:
        self._inner = inner
        self._tick = tick

    def read(self, paddr: int, size: int) -> bytes:
        self._tick()
        return self._inner.read(paddr, size)

    def write(self, paddr: int, data: bytes) -> None:
        self._inner.write(paddr, data)

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


class _Ticking:
    """A writer that ticks progress on every chunk (rendering many lines takes time too)."""

    def __init__(self, out: Writer, ticker: _Ticker) -> None:
        self._out = out
        self._ticker = ticker

    def write(self, text: str) -> object:
        self._ticker.tick()
        return self._out.write(text)
