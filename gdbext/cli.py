"""The ``gdbext`` command line.

``gdbext info|walk|translate|heap|backends``, each taking a dump file or ``--backend NAME`` and
that backend's options (the simulator's is ``--scenario FILE``), and ``--format`` (``--json`` is
short for ``--format json``).

What to open: ``gdbext walk DUMP`` opens ``DUMP`` with the ``core`` backend (``--dump FILE``
is the same; ``--backend core DUMP`` too). ``translate`` takes ``[DUMP] VADDR...``: its first
operand is the dump when it is not a number and no other backend was named; a dump whose name
is a number is given as ``./NAME`` or with ``--dump``.

Exit status: 0 success; 1 an address not mapped or nothing found; 2 bad input or usage, with a
one-line message on stderr. No Python traceback reaches the user for bad input.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from typing import IO, NoReturn

from gdbext import __version__, commands
from gdbext.addr import AddrRange
from gdbext.errors import (
    EXIT_BAD_INPUT,
    EXIT_NOT_FOUND,
    EXIT_OK,
    GdbextError,
    PluginError,
    UsageError,
)
from gdbext.host import Host
from gdbext.permfilter import PermFilter
from gdbext.target import OpenRequest, Target
from gdbext.units import parse_int

COMMANDS = ("info", "walk", "translate", "heap")
#: The backend a positional DUMP (or ``--dump FILE``) opens.
DUMP_BACKEND = "core"


class _Parser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` instead of exiting."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("gdbext").strip()
        raise UsageError(f"{command}: {message}" if command else message)


def _int(text: str) -> int:
    try:
        return parse_int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


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


def _is_number(text: str) -> bool:
    try:
        parse_int(text)
    except ValueError:
        return False
    return True


def build_parser(host: Host) -> argparse.ArgumentParser:
    """The argument parser, with every backend's options."""
    parser = _Parser(prog="gdbext", description="Walk, translate and audit x86-64 page tables.")
    parser.add_argument("--version", action="version", version=f"gdbext {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    backends = host.backends()

    def common(
        p: argparse.ArgumentParser, command: str, root: bool = True, dump: bool = True
    ) -> None:
        formats = sorted(host.output_formats(command))
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
            help=f"backend to open ({', '.join(backends) or 'none installed'}; "
            f"default {DUMP_BACKEND!r} with a DUMP)",
        )
        g.add_argument(
            "--dump",
            dest="dump_option",
            metavar="FILE",
            help="the dump file, as the positional DUMP (for names that look like numbers)",
        )
        seen: set[str] = {"dump"}
        for info in backends.values():
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
        if root:
            r = p.add_argument_group("page table (default: CPU 0's CR3)")
            r.add_argument("--cpu", type=_int, help="CPU whose CR3 and paging mode to use (0)")
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
        o.add_argument("--format", choices=formats, default="text", help="output format")
        o.add_argument(
            "--json", dest="format", action="store_const", const="json", help="--format json"
        )

    p = sub.add_parser("info", help="paging mode, control registers, backend")
    common(p, "info", root=False)

    p = sub.add_parser("walk", help="every mapping of a page table")
    common(p, "walk")
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
    p.add_argument("--no-merge", dest="merge", action="store_false", help="one line per leaf entry")
    p.add_argument(
        "--max-leaves",
        type=_int,
        default=commands.DEFAULT_MAX_LEAVES,
        metavar="N",
        help=f"stop past N leaf entries, 0 for no limit (default {commands.DEFAULT_MAX_LEAVES})",
    )

    p = sub.add_parser("translate", help="translate virtual addresses, every level shown")
    common(p, "translate", dump=False)
    p.add_argument(
        "operands",
        nargs="+",
        metavar="[DUMP] VADDR",
        help="a dump file (when the first operand is not a number), then addresses",
    )

    p = sub.add_parser("heap", help="the kernel heap: largest usable region, higher half")
    common(p, "heap")
    p.add_argument(
        "--memmap",
        nargs="+",
        metavar=("bootinfo|e820|json", "FILE"),
        help="memory map source: 'bootinfo' (with --at), 'e820' (Linux's boot_params, found "
        "by a scan or at --at) or 'json FILE'",
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

    p = sub.add_parser("backends", help="list the installed backends")
    return parser


def _source(args: argparse.Namespace) -> str | None:
    """The dump named on the command line (positional or ``--dump``), if any.

    For ``translate``, takes the dump off the front of ``args.operands`` when it is one (see the
    module docstring) and leaves the addresses, parsed, in ``args.vaddrs``.
    """
    option = getattr(args, "dump_option", None)
    positional = getattr(args, "dump", None)
    if args.command == "translate":
        operands = list(args.operands)
        if (
            option is None
            and args.backend in (None, DUMP_BACKEND)
            and operands
            and not _is_number(operands[0])
        ):
            positional = operands.pop(0)
        if not operands:
            raise UsageError("translate: give at least one VADDR after the DUMP")
        vaddrs = []
        for text in operands:
            try:
                vaddrs.append(parse_int(text))
            except ValueError:
                raise UsageError(f"translate: argument VADDR: not a number: {text!r}") from None
        args.vaddrs = vaddrs
    if option is not None and positional is not None:
        raise UsageError(f"two dumps given: {positional!r} and --dump {option!r}")
    return option if option is not None else positional


def open_target(host: Host, args: argparse.Namespace, source: str | None = None) -> Target:
    """Open the backend the command line names: ``--backend NAME``, or the dump backend for a
    dump file."""
    name = args.backend
    if name is None:
        if source is None:
            raise UsageError("a DUMP or --backend NAME is required (see 'gdbext backends')")
        name = DUMP_BACKEND
    elif source is not None and name != DUMP_BACKEND:
        raise UsageError(
            f"a DUMP is opened by the {DUMP_BACKEND!r} backend; backend {name!r} takes none "
            f"({source!r})"
        )
    info = host.backend(name)
    options = {opt.name: getattr(args, f"backend_{opt.name}", None) for opt in info.options}
    own = {opt.name for opt in info.options}
    for other in host.backends().values():
        for opt in other.options:
            if opt.name not in own and getattr(args, f"backend_{opt.name}", None) is not None:
                raise UsageError(
                    f"--{opt.name.replace('_', '-')} is an option of backend {other.name!r}, "
                    f"not of {name!r}"
                )
    for opt in info.options:
        if opt.required and options[opt.name] is None:
            raise UsageError(f"backend {name!r} needs --{opt.name.replace('_', '-')}")
    return info.open(OpenRequest(source, options))


def _root(args: argparse.Namespace) -> commands.RootOptions:
    return commands.RootOptions(
        cpu=0 if args.cpu is None else args.cpu,
        cr3=args.cr3,
        levels=args.levels,
        kernel=args.kernel,
        user_pgd=args.user_pgd,
    )


def run(argv: Sequence[str], host: Host, out: IO[str]) -> int:
    """Run one command line; return the exit status. :class:`GdbextError` propagates."""
    args, extra = build_parser(host).parse_known_args(list(argv))
    if extra:
        # argparse takes one block of positionals: addresses after an option land here.
        if args.command == "translate" and not any(x.startswith("-") for x in extra):
            args.operands = [*args.operands, *extra]
        else:
            raise UsageError(f"{args.command}: unrecognized arguments: {' '.join(extra)}")
    if args.command == "backends":
        for name, info in host.backends().items():
            out.write(f"{name:<10} {info.summary}\n")
        return EXIT_OK
    formats = host.output_formats(args.command)
    if args.format not in formats:
        raise PluginError(f"no plugin renders {args.command!r} as {args.format!r}")
    render = formats[args.format].render
    source = _source(args)
    heap_options = _heap_options(args) if args.command == "heap" else None
    target = open_target(host, args, source)
    try:
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
                ),
            )
        elif args.command == "translate":
            result = commands.translate(target, args.vaddrs, _root(args))
            status = result.exit_status
        else:
            assert heap_options is not None
            result = commands.heap(target, heap_options)
        _write(out, render(result))
        if isinstance(result, commands.WalkResult) and result.stats["leaves"] == 0:
            status = EXIT_NOT_FOUND
        return status
    finally:
        if target.close is not None:
            target.close()


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
        raise UsageError(f"--memmap must be bootinfo, e820 or json, not {kind!r}")
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
    write = out.write
    buf: list[str] = []
    for line in lines:
        buf.append(line)
        if len(buf) >= 4096:
            buf.append("")
            write("\n".join(buf))
            buf = []
    if buf:
        buf.append("")
        write("\n".join(buf))


def main(argv: Sequence[str] | None = None, host: Host | None = None) -> int:
    """Entry point of the ``gdbext`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if host is None:
            host = Host.create()
        return run(argv, host, sys.stdout)
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
