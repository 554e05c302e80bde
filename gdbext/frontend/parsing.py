"""The commands' argument parsers, built from their declarations (:mod:`gdbext.frontend.cmd`).

:func:`build_parser` is the command line's (``gdbext COMMAND ...``); :func:`build_command_parser`
builds one command's parser on its own (prog ``pt-walk``: the debuggers'), by default without
the target options; :func:`parse_command` parses with either. :func:`build_backend_parser` and
:func:`backend_request` parse a backend selection (``pt-backend NAME [SOURCE] [OPTIONS]``).

What to open: ``gdbext walk DUMP`` opens ``DUMP`` with the ``core`` backend (``--dump FILE``
is the same; ``--backend core DUMP`` too). A command with operands (``translate [DUMP]
VADDR...``) takes a dump from them (:attr:`~gdbext.frontend.command.Command.operands`).

Errors are :class:`~gdbext.errors.UsageError` with one line (argparse's messages without Python
reprs, and "did you mean" for a mistyped choice or option), never an exit.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from gdbext import __version__
from gdbext.errors import UsageError
from gdbext.frontend import cmd
from gdbext.frontend.command import Command, command_name
from gdbext.frontend.rootargs import add_page_table_options
from gdbext.units import shown

if TYPE_CHECKING:
    from gdbext.plugin.host import Host
    from gdbext.plugin.target import BackendInfo, OpenRequest


class Parser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` instead of exiting, with "did you mean" for
    a mistyped choice and no Python reprs in its messages (as Python 3.12's
    ``suggest_on_error``, on 3.11 too)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("gdbext").strip()
        message = _plain_choice_error(message)
        raise UsageError(f"{command}: {message}" if command else message)


_INVALID_CHOICE = re.compile(r"(argument .*?: )?invalid choice: (.*?) \(choose from (.*)\)")


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" else text


def _plain_choice_error(message: str) -> str:
    """argparse's ``invalid choice: 'wlak' (choose from 'info', 'walk')`` without the reprs,
    and with the closest choice suggested."""
    match = _INVALID_CHOICE.fullmatch(message)
    if match is None:
        return message
    value = _unquote(match[2])
    choices = [_unquote(c.strip()) for c in match[3].split(",")]
    return (
        f"{match[1] or ''}invalid choice: {shown(value)} (choose from {', '.join(choices)})"
        + did_you_mean(value, choices)
    )


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean --range?)`` when one of ``candidates`` is close to ``word``, else
    ``""`` (difflib's ratio, as argparse's ``suggest_on_error``)."""
    import difflib  # only on an error: not needed to start up

    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def host_getter(ref: Host | Callable[[], Host]) -> Callable[[], Host]:
    """``ref`` (the plugin host, or a function that makes it) as a function that returns the
    host, made once."""
    if not callable(ref):
        host = ref
        return lambda: host
    made: list[Host] = []

    def get() -> Host:
        if not made:
            made.append(ref())
        return made[0]

    return get


def _add_backend_options(g: argparse._ArgumentGroup, host: Host) -> None:
    """Every backend's options (``--scenario FILE``...) as ``backend_NAME`` destinations."""
    seen: set[str] = {"dump"}
    for info in host.backends().values():
        for opt in info.options:
            if opt.name in seen:
                continue
            seen.add(opt.name)
            g.add_argument(
                f"--{opt.name.replace('_', '-')}",
                dest=f"backend_{opt.name}",
                metavar=opt.metavar,
                help=f"[{info.name}] {opt.help}",
            )


def _add_target_options(p: argparse.ArgumentParser, host: Host, dump: bool) -> None:
    """What to open: a positional DUMP, ``--backend``, ``--dump`` and the backends' options."""
    from gdbext.plugin.host import DUMP_BACKEND

    if dump:
        p.add_argument(
            "dump",
            nargs="?",
            metavar="DUMP",
            help=f"dump file to open (backend {DUMP_BACKEND!r}; format from its magic), or the "
            "source of the backend named (gdbstub: HOST:PORT)",
        )
    g = p.add_argument_group("target")
    g.add_argument(
        "--backend",
        metavar="NAME",
        help=f"backend to open ({', '.join(host.backends()) or 'none installed'}; "
        f"default {DUMP_BACKEND!r} with a DUMP)",
    )
    g.add_argument(
        "--dump",
        dest="dump_option",
        metavar="FILE",
        help="the dump file, as the positional DUMP (for names that look like numbers)",
    )
    _add_backend_options(g, host)


def add_command_arguments(
    p: argparse.ArgumentParser, host: Host, command: Command, target_options: bool
) -> None:
    """The arguments of ``command``; with ``target_options`` also what to open."""
    if target_options:
        _add_target_options(p, host, dump=command.dump_operand)
    if command.page_table:
        add_page_table_options(p)
    if command.symbols:
        from gdbext.frontend.symbolic import add_symbol_options

        add_symbol_options(p)
    o = p.add_argument_group("output")
    formats = sorted(host.output_formats(command.name))
    o.add_argument(
        "--format",
        choices=formats,
        default=command.default_format,
        help="output format"
        + ("" if command.default_format == "text" else f" (default {command.default_format})"),
    )
    o.add_argument(
        "--json", dest="format", action="store_const", const="json", help="--format json"
    )
    command.arguments(p, target_options)


#: A subcommand's parser, or what makes it when the command is chosen.
_ParserOrMaker = argparse.ArgumentParser | Callable[[], argparse.ArgumentParser]


class _Parsers(MutableMapping[str, argparse.ArgumentParser]):
    """The subcommands' parsers by name, each made on first use: ``gdbext --help`` lists the
    commands from their summaries, and a command line builds the parser of its command only
    (``gdbext backends`` needs none of the others, nor the plugins that some of them ask)."""

    def __init__(self) -> None:
        self._entries: dict[str, _ParserOrMaker] = {}

    def add(self, name: str, make: Callable[[], argparse.ArgumentParser]) -> None:
        self._entries[name] = make

    def __getitem__(self, name: str) -> argparse.ArgumentParser:
        entry = self._entries[name]
        if not isinstance(entry, argparse.ArgumentParser):
            entry = self._entries[name] = entry()
        return entry

    def __setitem__(self, name: str, parser: argparse.ArgumentParser) -> None:
        self._entries[name] = parser

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


class _Commands(argparse._SubParsersAction):  # type: ignore[type-arg]
    """The subcommands, whose parsers are made when one is chosen (:class:`_Parsers`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parsers = _Parsers()
        self._name_parser_map = self.choices = self.parsers  # type: ignore[assignment]

    def add_command(
        self, command: Command, fill: Callable[[argparse.ArgumentParser], None]
    ) -> None:
        """``command`` in the list, its parser (as :meth:`add_parser` makes it, then given
        its arguments by ``fill``) made when it is chosen."""
        self._choices_actions.append(self._ChoicesPseudoAction(command.name, (), command.summary))

        def make() -> argparse.ArgumentParser:
            p: argparse.ArgumentParser = self._parser_class(
                prog=f"{self._prog_prefix} {command.name}", description=command.description
            )
            fill(p)
            return p

        self.parsers.add(command.name, make)


def build_parser(
    host: Host | Callable[[], Host], *, target_options: bool = True
) -> argparse.ArgumentParser:
    """The argument parser, with every backend's options.

    :param host: the plugin host, or a function that makes it (called once a command that
        needs it is chosen).
    :param target_options: with ``False`` the commands take no DUMP, ``--backend`` or backend
        options: for running on a target opened elsewhere.
    """
    get_host = host_getter(host)
    parser = Parser(prog="gdbext", description="Walk, translate and audit x86-64 page tables.")
    parser.add_argument("--version", action="version", version=f"gdbext {__version__}")
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=Parser, action=_Commands
    )
    assert isinstance(sub, _Commands)
    sub.required = True
    for command in cmd.COMMANDS:

        def fill(p: argparse.ArgumentParser, command: Command = command) -> None:
            add_command_arguments(p, get_host(), command, target_options)

        sub.add_command(command, fill)
    sub.add_parser("backends", help="list the installed backends")
    return parser


def build_command_parser(
    host: Host, command: str, prog: str, *, target_options: bool = False
) -> argparse.ArgumentParser:
    """One command's parser on its own, named ``prog`` (e.g. ``pt-walk``), by default without
    the target options; its namespaces carry ``command``. Parse with :func:`parse_command`."""
    declared = cmd.find(command)
    p = Parser(prog=prog, description=declared.description)
    p.set_defaults(command=command, prog=prog)
    add_command_arguments(p, host, declared, target_options)
    return p


def build_backend_parser(host: Host, prog: str) -> argparse.ArgumentParser:
    """The parser of a backend selection: ``NAME [SOURCE] [the backend's options]``."""
    from gdbext.plugin.host import DUMP_BACKEND

    backends = host.backends()
    p = Parser(prog=prog, description="Select the backend the commands run on.")
    p.add_argument("name", metavar="NAME", help=f"backend ({', '.join(backends) or 'none'})")
    p.add_argument(
        "source",
        nargs="?",
        metavar="SOURCE",
        help=f"what to open, e.g. the dump file of backend {DUMP_BACKEND!r}",
    )
    _add_backend_options(p.add_argument_group("backend options"), host)
    return p


def parse_command(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv`` with ``parser`` (the whole command line's, or one command's); operands
    (``translate``'s addresses) may stand before and after options."""
    args, extra = parser.parse_known_args(list(argv))
    if extra:
        # argparse takes one block of positionals: operands after an option land here.
        command = None if args.command == "backends" else cmd.find(args.command)
        if (
            command is not None
            and command.operands is not None
            and not any(x.startswith("-") for x in extra)
        ):
            args.operands = [*args.operands, *extra]
        else:
            unknown = next((x for x in extra if x.startswith("-")), None)
            hint = ""
            if unknown is not None:
                hint = did_you_mean(unknown.split("=", 1)[0], _option_strings(parser, args))
            raise UsageError(
                f"{command_name(args)}: unrecognized arguments: {' '.join(extra)}{hint}"
            )
    return args


def _option_strings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The long options of the parser that parsed ``args``: the command's own parser when
    ``parser`` is the whole command line's."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sub = action.choices.get(args.command)
            if isinstance(sub, argparse.ArgumentParser):
                parser = sub
    return [o for o in parser._option_string_actions if o.startswith("--")]


def source(command: Command, args: argparse.Namespace) -> str | None:
    """The dump named on the command line (positional, from the operands, or ``--dump``), if
    any. Parses the command's operands (:attr:`Command.operands`)."""
    option = getattr(args, "dump_option", None)
    if command.operands is not None:
        positional = command.operands(args)
    else:
        positional = getattr(args, "dump", None)
    if option is not None and positional is not None:
        raise UsageError(f"two dumps given: {shown(positional)} and --dump {shown(option)}")
    return option if option is not None else positional


def backend_request(
    host: Host, name: str, args: argparse.Namespace, source: str | None = None
) -> tuple[BackendInfo, OpenRequest]:
    """:meth:`Host.backend_request` with the backend options ``args`` holds
    (``backend_NAME`` attributes)."""
    given = {
        opt.name: getattr(args, f"backend_{opt.name}", None)
        for info in host.backends().values()
        for opt in info.options
    }
    return host.backend_request(name, given, source)
