"""The ``gdbext`` command line.

``gdbext info|walk|translate|heap|audit|backends``, each taking a dump file or ``--backend
NAME`` and that backend's options (the simulator's is ``--scenario FILE``), and ``--format``
(``--json`` is short for ``--format json``).

What to open: ``gdbext walk DUMP`` opens ``DUMP`` with the ``core`` backend (``--dump FILE``
is the same; ``--backend core DUMP`` too). ``translate`` takes ``[DUMP] VADDR...``: its first
operand is the dump when it is not a number and no other backend was named; a dump whose name
is a number is given as ``./NAME`` or with ``--dump``.

Exit status: 0 success; 1 an address not mapped or nothing found; 2 bad input or usage, with a
one-line message on stderr; 3 ``audit --fail-on SEVERITY`` found something at least that
severe (the findings are printed as ever). No Python traceback reaches the user for bad input.

Debugger front ends reuse the same parsers and execution on a target they opened themselves:
:func:`build_command_parser` builds one command's parser without the target options (e.g. prog
``pt-walk``), :func:`parse_command` parses its arguments, :func:`execute` runs it on a target;
:func:`run` does both given a ``target``. :func:`build_backend_parser` and
:func:`backend_request` parse a backend selection (``pt-backend NAME [SOURCE] [OPTIONS]``).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, NoReturn

from gdbext import __version__
from gdbext.addr import AddrRange
from gdbext.audit.model import AuditRule, Severity
from gdbext.audit.registry import audit_rules
from gdbext.errors import (
    EXIT_BAD_INPUT,
    EXIT_NOT_FOUND,
    EXIT_OK,
    GdbextError,
    PluginError,
    UntranslatedError,
    UsageError,
)
from gdbext.frontend import commands
from gdbext.permfilter import PermFilter
from gdbext.plugin.host import DUMP_BACKEND as DUMP_BACKEND  # re-exported (session)
from gdbext.plugin.host import Host
from gdbext.plugin.target import BackendInfo, OpenRequest, Target
from gdbext.render.audit import render_rules
from gdbext.units import not_a_number, parse_int, shown

COMMANDS = ("info", "walk", "translate", "heap", "audit")


class _Parser(argparse.ArgumentParser):
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


def _int(text: str) -> int:
    try:
        return parse_int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _range(text: str) -> AddrRange:
    try:
        return AddrRange.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _offset(text: str) -> int | str:
    """``--phys-offset``: an address or ``auto``."""
    if text.strip().lower() == commands.AUTO:
        return commands.AUTO
    return _int(text)


def _filter(text: str) -> PermFilter:
    try:
        return PermFilter.parse(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--filter: ")) from None


def _severity(text: str) -> Severity:
    try:
        return Severity.parse(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _ids(text: str) -> tuple[str, ...]:
    """``a,b``: rule ids."""
    return tuple(word.strip() for word in text.split(",") if word.strip())


def _is_number(text: str) -> bool:
    try:
        parse_int(text)
    except ValueError:
        return False
    return True


#: One line per command, for ``--help`` listings and debugger help.
SUMMARIES = {
    "info": "paging mode, control registers, backend",
    "walk": "every mapping of a page table",
    "translate": "translate virtual addresses, every level shown",
    "heap": "the kernel heap: largest usable region, higher half",
    "audit": "audit a page table: rules as plugins, findings by severity",
}


#: A command's description under its usage in ``--help`` and debugger help (the summary when
#: it has none here).
DESCRIPTIONS = {"heap": commands.HEAP_HELP}


def _description(command: str) -> str:
    summary = SUMMARIES[command]
    return DESCRIPTIONS.get(command, summary[0].upper() + summary[1:] + ".")


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
    if dump:
        p.add_argument(
            "dump",
            nargs="?",
            metavar="DUMP",
            help=f"dump file to open (backend {DUMP_BACKEND!r}; format from its magic)",
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


def _add_command_arguments(
    p: argparse.ArgumentParser, host: Host, command: str, target_options: bool
) -> None:
    """The arguments of ``command`` (one of :data:`COMMANDS`); with ``target_options`` also
    what to open (see :func:`_add_target_options`)."""
    if target_options:
        _add_target_options(p, host, dump=command != "translate")
    if command != "info":
        r = p.add_argument_group("page table (default: the selected CPU's CR3)")
        r.add_argument(
            "--cpu",
            type=_int,
            help="CPU whose CR3 and paging mode to use (default: the selected one, else 0)",
        )
        which = r.add_mutually_exclusive_group()
        which.add_argument(
            "--cr3", type=_int, metavar="ADDR", help="this root instead (PCID bits masked)"
        )
        which.add_argument(
            "--kernel",
            action="store_true",
            help="the kernel's own root (VMCOREINFO init_top_pgt + phys_base) and levels",
        )
        r.add_argument(
            "--user-pgd",
            action="store_true",
            help="the PTI user half of the selected root (root | 0x1000)",
        )
        r.add_argument("--levels", type=int, choices=(4, 5), help="override CR4.LA57")
    o = p.add_argument_group("output")
    formats = sorted(host.output_formats(command))
    o.add_argument("--format", choices=formats, default="text", help="output format")
    o.add_argument(
        "--json", dest="format", action="store_const", const="json", help="--format json"
    )
    if command == "walk":
        _add_walk_arguments(p)
    elif command == "translate":
        p.add_argument(
            "operands",
            nargs="+",
            metavar="[DUMP] VADDR" if target_options else "VADDR",
            help="a dump file (when the first operand is not a number), then addresses"
            if target_options
            else "virtual addresses",
        )
    elif command == "heap":
        _add_heap_arguments(p)
    elif command == "audit":
        _add_audit_arguments(p)


def _add_audit_arguments(p: argparse.ArgumentParser) -> None:
    a = p.add_argument_group("rules")
    a.add_argument("--rules", type=_ids, metavar="ID,...", help="only these rules")
    a.add_argument("--skip", type=_ids, default=(), metavar="ID,...", help="not these rules")
    a.add_argument(
        "--list-rules", action="store_true", help="list the rules (id, severity, summary) and exit"
    )
    a.add_argument(
        "--fail-on",
        type=_severity,
        metavar="SEVERITY",
        help="exit status 3 when a finding is at least this severe "
        "(info, low, medium, high, critical)",
    )
    h = p.add_argument_group("heap (for the heap-contract rule; options as 'heap')")
    _add_heap_arguments(h)


def _add_walk_arguments(p: argparse.ArgumentParser) -> None:
    f = p.add_argument_group("filters (they prune the walk)")
    where = f.add_mutually_exclusive_group()
    where.add_argument(
        "--range", type=_range, metavar="START-END", help="only this VA range (or START+SIZE)"
    )
    where.add_argument(
        "--has", type=_int, metavar="VADDR", help="only the merged mapping that contains VADDR"
    )
    f.add_argument(
        "--filter",
        type=_filter,
        metavar="SPEC",
        help="only leaves whose effective permissions match: terms w, ro, x, nx, u, s, wx, "
        "each negated by '!', ANDed by ',' (e.g. 'wx', 'u,x', 's,!w')",
    )
    p.add_argument(
        "--labels",
        choices=commands.LABEL_MODES,
        default="auto",
        help="region labels in text output: Linux's layout, when it looks like Linux (auto)",
    )
    m = p.add_mutually_exclusive_group()
    m.add_argument(
        "--merge",
        dest="merge_by",
        choices=commands.MERGE_MODES,
        default="pa",
        help="merge leaves contiguous in virtual and physical address (pa, the default), or "
        "in virtual address only, whatever their frames (va: the physical address shows as "
        "'scattered', null in JSON, when they are not contiguous)",
    )
    m.add_argument("--no-merge", dest="merge", action="store_false", help="one line per leaf entry")
    p.add_argument(
        "--max-leaves",
        type=_int,
        default=commands.DEFAULT_MAX_LEAVES,
        metavar="N",
        help=f"stop past N leaf entries, 0 for no limit (default {commands.DEFAULT_MAX_LEAVES})",
    )
    p.add_argument(
        "--max-lines",
        type=_int,
        metavar="N",
        help="stop outputs that expand shared tables (qemu-tlb, ptdump, json, --no-merge) past "
        f"N lines, 0 for no limit (default {commands.DEFAULT_MAX_LINES}, ptdump "
        f"{commands.DEFAULT_MAX_LINES_PTDUMP})",
    )


def _add_heap_arguments(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument(
        "--memmap",
        nargs="+",
        metavar=("bootinfo|e820|json", "FILE"),
        help="memory map source: 'bootinfo' (with --at), 'e820' (Linux's boot_params, found "
        "by a scan or at --at; the default for Linux) or 'json FILE'",
    )
    p.add_argument(
        "--at",
        type=_int,
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
        type=_offset,
        metavar="ADDR|auto",
        help="physical_memory_offset; 'auto' (the default when the memory map has none) "
        "finds the direct map's base from the page tables",
    )


def build_parser(host: Host, *, target_options: bool = True) -> argparse.ArgumentParser:
    """The argument parser, with every backend's options.

    :param target_options: with ``False`` the commands take no DUMP, ``--backend`` or backend
        options: for running on a target opened elsewhere (:func:`run` with a ``target``).
    """
    parser = _Parser(prog="gdbext", description="Walk, translate and audit x86-64 page tables.")
    parser.add_argument("--version", action="version", version=f"gdbext {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for command in COMMANDS:
        p = sub.add_parser(command, help=SUMMARIES[command], description=_description(command))
        _add_command_arguments(p, host, command, target_options)
    sub.add_parser("backends", help="list the installed backends")
    return parser


def build_command_parser(
    host: Host, command: str, prog: str, *, target_options: bool = False
) -> argparse.ArgumentParser:
    """One command's parser on its own, named ``prog`` (e.g. ``pt-walk``), by default without
    the target options; its namespaces carry ``command``. Parse with :func:`parse_command`."""
    if command not in COMMANDS:
        raise UsageError(f"no command {shown(command)} (commands: {', '.join(COMMANDS)})")
    p = _Parser(prog=prog, description=_description(command))
    p.set_defaults(command=command, prog=prog)
    _add_command_arguments(p, host, command, target_options)
    return p


def build_backend_parser(host: Host, prog: str) -> argparse.ArgumentParser:
    """The parser of a backend selection: ``NAME [SOURCE] [the backend's options]``."""
    backends = host.backends()
    p = _Parser(prog=prog, description="Select the backend the commands run on.")
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
    """Parse ``argv`` with ``parser`` (the whole command line's, or one command's); addresses
    of ``translate`` may stand before and after options."""
    args, extra = parser.parse_known_args(list(argv))
    if extra:
        # argparse takes one block of positionals: addresses after an option land here.
        if args.command == "translate" and not any(x.startswith("-") for x in extra):
            args.operands = [*args.operands, *extra]
        else:
            unknown = next((x for x in extra if x.startswith("-")), None)
            hint = ""
            if unknown is not None:
                hint = did_you_mean(unknown.split("=", 1)[0], _option_strings(parser, args))
            raise UsageError(
                f"{_name(args)}: unrecognized arguments: {' '.join(extra)}{hint}"
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


def _name(args: argparse.Namespace) -> str:
    """The command's name for messages: ``walk``, or the prog of a one-command parser."""
    return str(getattr(args, "prog", None) or args.command)


def _source(args: argparse.Namespace) -> str | None:
    """The dump named on the command line (positional or ``--dump``), if any.

    For ``translate``, takes the dump off the front of ``args.operands`` when it is one (see the
    module docstring; only with the target options) and leaves the addresses, parsed, in
    ``args.vaddrs``.
    """
    option = getattr(args, "dump_option", None)
    positional = getattr(args, "dump", None)
    if args.command == "translate":
        name = _name(args)
        operands = list(args.operands)
        if (
            hasattr(args, "backend")
            and option is None
            and args.backend in (None, DUMP_BACKEND)
            and operands
            and not _is_number(operands[0])
        ):
            positional = operands.pop(0)
            if not os.path.exists(positional) and "did you mean" in not_a_number(positional):
                # A hex address without 0x, not a dump that was meant.
                raise UsageError(f"{name}: argument VADDR: {not_a_number(positional)}")
        if not operands:
            raise UsageError(f"{name}: give at least one VADDR after the DUMP")
        vaddrs = []
        for text in operands:
            try:
                vaddrs.append(parse_int(text))
            except ValueError as exc:
                raise UsageError(f"{name}: argument VADDR: {exc}") from None
        args.vaddrs = vaddrs
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


def open_target(host: Host, args: argparse.Namespace, source: str | None = None) -> Target:
    """Open the backend the command line names: ``--backend NAME``, or the dump backend for a
    dump file."""
    name = args.backend
    if name is None:
        if source is None:
            raise UsageError("a DUMP or --backend NAME is required (see 'gdbext backends')")
        name = DUMP_BACKEND
    info, request = backend_request(host, name, args, source)
    return info.open(request)


def _root(args: argparse.Namespace) -> commands.RootOptions:
    return commands.RootOptions(
        cpu=args.cpu,
        cr3=args.cr3,
        levels=args.levels,
        kernel=args.kernel,
        user_pgd=args.user_pgd,
    )


@dataclass(frozen=True)
class _Plan:
    """A parsed command, checked before anything is opened."""

    render: Callable[[Any], Iterable[str]]
    source: str | None
    heap: commands.HeapOptions | None
    #: ``audit``: every rule the plugins provide, by id.
    rules: Mapping[str, AuditRule] | None = None


def _plan(args: argparse.Namespace, host: Host) -> _Plan:
    formats = host.output_formats(args.command)
    if args.format not in formats:
        raise PluginError(f"no plugin renders {args.command} as {shown(args.format)}")
    source = _source(args)
    heap = None
    rules = None
    if args.command == "heap":
        heap = _heap_options(args)
    elif args.command == "audit":
        heap = _heap_options(args) if args.memmap or args.at is not None else None
        rules = audit_rules(host)
    return _Plan(formats[args.format].render, source, heap, rules)


def list_rules(args: argparse.Namespace, host: Host, out: IO[str]) -> int:
    """``audit --list-rules``: the rules, as text or JSON (no target needed)."""
    _write(out, render_rules(audit_rules(host), args.format))
    return EXIT_OK


def _list_backends(host: Host, out: IO[str]) -> int:
    for name, info in host.backends().items():
        out.write(f"{name:<10} {info.summary}\n")
    return EXIT_OK


Warn = Callable[[str], None]


def run(
    argv: Sequence[str],
    host: Host,
    out: IO[str],
    target: Target | None = None,
    warn: Warn | None = None,
) -> int:
    """Run one command line; return the exit status. :class:`GdbextError` propagates.

    With ``target``, the command runs on it (the command line then takes no DUMP, ``--backend``
    or backend options) and the target stays open; else the command line names what to open,
    and it is closed afterwards. ``warn`` is given one-line warnings (see :func:`execute`).
    """
    args = parse_command(build_parser(host, target_options=target is None), argv)
    if args.command == "backends":
        return _list_backends(host, out)
    if args.command == "audit" and args.list_rules:
        return list_rules(args, host, out)
    plan = _plan(args, host)
    if target is not None:
        return _execute(plan, args, out, target, warn=warn)
    target = open_target(host, args, plan.source)
    try:
        return _execute(plan, args, out, target, warn=warn)
    finally:
        if target.close is not None:
            target.close()


def execute(
    args: argparse.Namespace,
    host: Host,
    out: IO[str],
    target: Target,
    observe: Callable[[object], None] | None = None,
    warn: Warn | None = None,
) -> int:
    """Run a parsed command (:func:`parse_command`) on ``target``, render it to ``out``, and
    return the exit status. ``observe`` is given the command's result before it is rendered
    (a walk's result counts its leaves while it streams). ``warn`` is given one-line warnings
    about what the output cannot show (entries a ``qemu-tlb`` walk did not follow, such as
    tables not captured in a dump). The target stays open."""
    return _execute(_plan(args, host), args, out, target, observe, warn)


def _execute(
    plan: _Plan,
    args: argparse.Namespace,
    out: IO[str],
    target: Target,
    observe: Callable[[object], None] | None = None,
    warn: Warn | None = None,
) -> int:
    try:
        return _execute_command(plan, args, out, target, observe, warn)
    finally:
        # What the command came upon in the target's own data (values ignored): said once.
        if warn is not None and target.notices is not None:
            for notice in target.notices():
                warn(notice)


def _execute_command(
    plan: _Plan,
    args: argparse.Namespace,
    out: IO[str],
    target: Target,
    observe: Callable[[object], None] | None,
    warn: Warn | None,
) -> int:
    status = EXIT_OK
    result: object
    if args.command == "info":
        result = commands.info(target)
    elif args.command == "walk":
        result = commands.walk(
            target,
            commands.WalkOptions(
                _root(args),
                args.range,
                args.merge,
                args.max_leaves or None,
                perm=args.filter,
                has=args.has,
                labels=args.labels,
                merge_by=args.merge_by,
                max_lines=args.max_lines,
            ),
        )
    elif args.command == "translate":
        translated = commands.translate(target, args.vaddrs, _root(args))
        if observe is not None:
            observe(translated)
        _warn_result(translated, warn)
        # Addresses that could not be translated (exit status 2) are errors: stderr's.
        _write(out, plan.render(translated.results()))
        if translated.failures:
            raise UntranslatedError(_name(args), translated.failures)
        return translated.exit_status
    elif args.command == "audit":
        if args.list_rules:
            assert plan.rules is not None
            _write(out, render_rules(plan.rules, args.format))
            return EXIT_OK
        assert plan.rules is not None
        # Imported here: the engine (walks, spans, frame index) is not needed to start up.
        from gdbext.audit.engine import AuditOptions, run_audit

        options = AuditOptions(_root(args), args.rules, tuple(args.skip), plan.heap, args.fail_on)
        result = run_audit(target, options, plan.rules)
        status = result.exit_status
    else:
        assert plan.heap is not None
        result = commands.heap(target, plan.heap)
    if observe is not None:
        observe(result)
    _warn_result(result, warn)
    _write(out, plan.render(result))
    if isinstance(result, commands.WalkResult):
        if result.stats["leaves"] == 0:
            status = EXIT_NOT_FOUND
        if warn is not None and args.format == "qemu-tlb":
            _warn_unshown(result, warn)
    return status


def _warn_result(result: object, warn: Warn | None) -> None:
    """The warnings a command's result carries (``--user-pgd`` on a table with no PTI pair)."""
    if warn is not None:
        for message in getattr(result, "warnings", ()):
            warn(message)


def _warn_unshown(result: commands.WalkResult, warn: Warn) -> None:
    """QEMU's ``info tlb`` format has no place for entries the walk did not follow: say what
    was left out, so that "not captured" never passes for "not mapped"."""
    kinds = {
        k.removeprefix("anomalies:"): n
        for k, n in result.stats.items()
        if k.startswith("anomalies:") and n
    }
    if kinds:
        listed = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
        warn(
            f"{sum(kinds.values())} entries were not followed ({listed}); "
            "qemu-tlb cannot show them: see the text or JSON output"
        )


def _heap_options(args: argparse.Namespace) -> commands.HeapOptions:
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
    return commands.HeapOptions(
        memmap=kind,
        at=args.at,
        bootinfo_version=args.bootinfo_version,
        bootinfo_features=features,
        json_path=path,
        phys_offset=args.phys_offset,
        root=_root(args),
    )


def _write(out: IO[str], lines: Iterable[str]) -> None:
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


def _warn_stderr(message: str) -> None:
    sys.stdout.flush()
    print(f"gdbext: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None, host: Host | None = None) -> int:
    """Entry point of the ``gdbext`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if host is None:
            host = Host.create()
        return run(argv, host, sys.stdout, warn=_warn_stderr)
    except GdbextError as exc:
        sys.stdout.flush()
        print(f"gdbext: {exc}", file=sys.stderr)
        return exc.exit_status
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error of ours. Point stdout at /dev/null
        # so that the interpreter's final flush does not complain.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        print("gdbext: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"gdbext: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
