"""The ``gdbext`` command line.

``gdbext info|walk|translate|heap|backends``, each taking ``--backend NAME`` and that backend's
options (the simulator's is ``--scenario FILE``), and ``--format`` (``--json`` is short for
``--format json``).

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
from gdbext.target import OpenRequest, Target
from gdbext.units import parse_int

COMMANDS = ("info", "walk", "translate", "heap")


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


def build_parser(host: Host) -> argparse.ArgumentParser:
    """The argument parser, with every backend's options."""
    parser = _Parser(prog="gdbext", description="Walk, translate and audit x86-64 page tables.")
    parser.add_argument("--version", action="version", version=f"gdbext {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    backends = host.backends()

    def common(p: argparse.ArgumentParser, command: str, root: bool = True) -> None:
        formats = sorted(host.output_formats(command))
        g = p.add_argument_group("target")
        g.add_argument(
            "--backend",
            metavar="NAME",
            help=f"backend to open ({', '.join(backends) or 'none installed'})",
        )
        seen: set[str] = set()
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
            g.add_argument("--cpu", type=_int, default=0, help="CPU whose CR3 to use (0)")
            g.add_argument("--cr3", type=_int, help="use this page-table root instead")
            g.add_argument("--levels", type=int, choices=(4, 5), help="override CR4.LA57")
        o = p.add_argument_group("output")
        o.add_argument("--format", choices=formats, default="text", help="output format")
        o.add_argument(
            "--json", dest="format", action="store_const", const="json", help="--format json"
        )

    p = sub.add_parser("info", help="paging mode, control registers, backend")
    common(p, "info", root=False)

    p = sub.add_parser("walk", help="every mapping of a page table")
    common(p, "walk")
    p.add_argument("--range", type=_range, metavar="START-END", help="only this VA range")
    p.add_argument("--no-merge", dest="merge", action="store_false", help="one line per leaf entry")
    p.add_argument(
        "--max-leaves",
        type=_int,
        default=commands.DEFAULT_MAX_LEAVES,
        metavar="N",
        help=f"stop past N leaf entries, 0 for no limit (default {commands.DEFAULT_MAX_LEAVES})",
    )

    p = sub.add_parser("translate", help="translate virtual addresses, every level shown")
    common(p, "translate")
    p.add_argument("vaddrs", nargs="+", type=_int, metavar="VADDR")

    p = sub.add_parser("heap", help="the kernel heap: largest usable region, higher half")
    common(p, "heap")
    p.add_argument(
        "--memmap",
        nargs="+",
        metavar=("bootinfo|json", "FILE"),
        help="memory map source: 'bootinfo' (with --at) or 'json FILE'",
    )
    p.add_argument("--at", type=_int, metavar="ADDR", help="physical address of the BootInfo")
    p.add_argument("--bootinfo-version", choices=("0.11", "0.9"), help="BootInfo layout")
    p.add_argument(
        "--bootinfo-features",
        metavar="LIST",
        help="v0.9 cargo features, comma-separated (default map_physical_memory)",
    )
    p.add_argument("--phys-offset", type=_int, metavar="ADDR", help="physical_memory_offset")

    p = sub.add_parser("backends", help="list the installed backends")
    return parser


def open_target(host: Host, args: argparse.Namespace) -> Target:
    name = args.backend
    if name is None:
        raise UsageError("--backend NAME is required (see 'gdbext backends')")
    info = host.backend(name)
    options = {opt.name: getattr(args, f"backend_{opt.name}", None) for opt in info.options}
    for opt in info.options:
        if opt.required and options[opt.name] is None:
            raise UsageError(f"backend {name!r} needs --{opt.name.replace('_', '-')}")
    return info.open(OpenRequest(None, options))


def _root(args: argparse.Namespace) -> commands.RootOptions:
    return commands.RootOptions(cpu=args.cpu, cr3=args.cr3, levels=args.levels)


def run(argv: Sequence[str], host: Host, out: IO[str]) -> int:
    """Run one command line; return the exit status. :class:`GdbextError` propagates."""
    args = build_parser(host).parse_args(list(argv))
    if args.command == "backends":
        for name, info in host.backends().items():
            out.write(f"{name:<10} {info.summary}\n")
        return EXIT_OK
    formats = host.output_formats(args.command)
    if args.format not in formats:
        raise PluginError(f"no plugin renders {args.command!r} as {args.format!r}")
    render = formats[args.format].render
    target = open_target(host, args)
    try:
        status = EXIT_OK
        result: object
        if args.command == "info":
            result = commands.info(target)
        elif args.command == "walk":
            result = commands.walk(
                target,
                commands.WalkOptions(_root(args), args.range, args.merge, args.max_leaves or None),
            )
        elif args.command == "translate":
            result = commands.translate(target, args.vaddrs, _root(args))
            status = result.exit_status
        else:
            result = commands.heap(target, _heap_options(args))
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
            raise UsageError("--memmap json takes exactly one FILE")
        path = memmap[1]
    elif kind == "bootinfo" and len(memmap) != 1:
        raise UsageError("--memmap bootinfo takes no FILE (give --at ADDR)")
    elif kind not in (None, "bootinfo", "json"):
        raise UsageError(f"--memmap must be bootinfo or json, not {kind!r}")
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
