"""``read``: memory as bytes, physical or virtual, with the pages that cannot be read as gaps."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TYPE_CHECKING, BinaryIO, cast

from gdbext.errors import EXIT_NOT_FOUND, ReadGapError, UsageError
from gdbext.frontend import argtypes
from gdbext.frontend.cmd.operands import leading_source
from gdbext.frontend.command import Command, Invocation, command_name, root_options, write_lines
from gdbext.units import format_size, parse_size, plural

if TYPE_CHECKING:
    from gdbext.frontend.memread import ReadResult
    from gdbext.plugin.host import Host

#: ``read``'s help: the command line's ``--help`` and the debuggers'.
TEXT = (
    "Read SIZE bytes at ADDR: virtual, through the selected page table (each page translated "
    "as the MMU does, 4 KiB, 2 MiB and 1 GiB pages alike), or physical with --phys. ADDR is a "
    "number (0x hex, or decimal; in GDB and LLDB a $-expression too; with --system-map or "
    "--vmlinux, or in GDB and LLDB with the symbols the debugger loaded, a symbol, NAME or "
    "NAME+0x10), SIZE a number with an "
    "optional unit (4K, 2M, 1G, 64KiB; 0x1000). Pages that are not mapped, not captured in a "
    "dump or not readable are gaps, named with their reason and never shown as zeros; a read "
    "with a gap exits with status 1. A range past 2**64, or a virtual one that is not "
    "canonical or crosses the non-canonical hole, is an error. --format raw writes the bytes "
    "to -o FILE, or to standard output when that is not a terminal (-o - to insist); it "
    "refuses a read with gaps unless --fill BYTE says what to write there."
)


def arguments(p: argparse.ArgumentParser, target_options: bool) -> None:
    from gdbext.defaults import DEFAULT_MAX_SIZE

    p.add_argument(
        "operands",
        nargs="+",
        metavar="[DUMP] ADDR SIZE" if target_options else "ADDR SIZE",
        help="a dump file (when the first operand is not a number), then the address and the size"
        if target_options
        else "the address and the size",
    )
    p.add_argument("--phys", action="store_true", help="ADDR is physical (no page table is used)")
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write the output to FILE ('-': standard output, raw bytes even to a terminal)",
    )
    p.add_argument(
        "--fill",
        type=argtypes.integer,
        metavar="BYTE",
        help="--format raw: write BYTE (0-255) for each byte of a gap, instead of refusing",
    )
    p.add_argument(
        "--max-size",
        type=_size,
        default=DEFAULT_MAX_SIZE,
        metavar="SIZE",
        help=f"refuse a larger SIZE, 0 for no limit (default {format_size(DEFAULT_MAX_SIZE)})",
    )


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def operands(args: argparse.Namespace) -> str | None:
    """``[DUMP] ADDR SIZE``: the first operand is the dump when it is not a number and no other
    backend was named (as ``translate``'s). Leaves ``args.address`` and ``args.size``."""
    from gdbext.frontend.symbolic import address_operand

    name = command_name(args)
    positional, rest = leading_source(args, name, "ADDR")
    if len(rest) != 2:
        raise UsageError(f"{name}: give ADDR and SIZE{' after the DUMP' if positional else ''}")
    args.address = address_operand(args, name, "ADDR", rest[0])
    if args.phys and isinstance(args.address, str):
        raise UsageError(f"{name}: --phys takes a physical address, not a symbol")
    try:
        args.size = parse_size(rest[1])
    except ValueError as exc:
        raise UsageError(f"{name}: argument SIZE: {exc}") from None
    return positional


def _prepare(args: argparse.Namespace, host: Host) -> None:
    name = command_name(args)
    if args.fill is not None:
        if args.format != "raw":
            raise UsageError(f"{name}: --fill is for --format raw (the others show gaps)")
        if not 0 <= args.fill <= 0xFF:
            raise UsageError(f"{name}: --fill takes a byte, 0-255, not {args.fill}")


def run(call: Invocation) -> int:
    from gdbext.frontend.memread import ReadOptions, read_memory

    args = call.args
    address = args.address
    # --phys reads no table: an address space chosen by owner is not looked for.
    root = root_options(args) if args.phys else call.root_options()
    if isinstance(address, str):
        from gdbext.frontend.commands import open_page_table
        from gdbext.frontend.symbolic import resolve, target_symbols

        pt = open_page_table(call.target, root)
        (address,) = resolve([address], target_symbols(args, call.target, pt, call.warn))
    result = read_memory(
        call.target,
        ReadOptions(
            address,
            args.size,
            physical=args.phys,
            root=root,
            max_size=args.max_size or None,
        ),
    )
    fmt = call.host.output_formats(call.command.name)[args.format]
    if fmt.binary:
        return _write_raw(call, result)
    if args.output is None or args.output == "-":
        call.emit(result)
        return result.exit_status
    if call.observe is not None:
        call.observe(result)
    _warn(call, result.warnings)
    with _opened(call, "w") as out:
        write_lines(cast(IO[str], out), call.render(result))
    return result.exit_status


def _warn(call: Invocation, messages: Iterable[str]) -> None:
    if call.warn is not None:
        for message in messages:
            call.warn(message)


def _write_raw(call: Invocation, result: ReadResult) -> int:
    """The bytes to ``-o FILE`` or standard output; gaps refused before anything is written
    unless ``--fill`` was given (then filled, and said)."""
    from gdbext.frontend.memread import Gap

    fill = call.args.fill
    if call.args.output in (None, "-"):
        _stdout_bytes(call)  # checked before the gaps: a usage error comes first
    gaps = [p for p in result.plan() if isinstance(p, Gap)]
    if gaps and fill is None:
        first = gaps[0]
        raise ReadGapError(first.address, first.size, first.describe(), len(gaps))
    if call.observe is not None:
        call.observe(result)
    _warn(call, result.warnings)
    render = cast(Callable[..., Iterable[bytes]], call.render)
    with _opened(call, "wb") as sink:
        write = cast(BinaryIO, sink).write
        for block in render(result, fill=fill):
            write(block)
    if result.gap_count:
        _warn(
            call,
            [
                f"{result.gap_count} gap{plural(result.gap_count)} "
                f"({format_size(result.gap_bytes)}) written as byte 0x{fill or 0:02x}"
            ],
        )
    return EXIT_NOT_FOUND if result.gap_count else result.exit_status


def _stdout_bytes(call: Invocation) -> BinaryIO:
    """Standard output's bytes, for raw output: refused where there are none (a debugger's
    console) and on a terminal unless ``-o -`` insists."""
    name = call.name
    buffer = getattr(call.out, "buffer", None)
    if buffer is None:
        raise UsageError(f"{name}: --format raw writes bytes: give -o FILE")
    if call.args.output is None and call.out.isatty():
        raise UsageError(
            f"{name}: not writing raw bytes to a terminal: give -o FILE (or -o - to insist)"
        )
    return cast(BinaryIO, buffer)


@contextlib.contextmanager
def _opened(call: Invocation, mode: str) -> Iterator[IO[str] | BinaryIO]:
    """Where the output goes: ``-o FILE`` (removed again when the command fails half way), or
    standard output's bytes for raw output (not a terminal, unless ``-o -``)."""
    path = call.args.output
    if path is None or path == "-":
        assert mode == "wb"
        buffer = _stdout_bytes(call)
        call.out.flush()
        yield buffer
        buffer.flush()
        return
    path = os.path.expanduser(path)
    f = open(path, mode)  # noqa: SIM115 (removed on failure below)
    try:
        yield f
    except BaseException:
        f.close()
        with contextlib.suppress(OSError):
            os.remove(path)
        raise
    f.close()


COMMAND = Command(
    name="read",
    summary="memory as bytes: hexdump, values or raw, gaps named",
    debugger_summary="Read memory, virtual or physical: hexdump, 64/32-bit values, raw bytes.",
    text=TEXT,
    run=run,
    arguments=arguments,
    dump_operand=False,
    operands=operands,
    symbols=True,
    prepare=_prepare,
    default_format="hexdump",
    exit_statuses=(
        (EXIT_NOT_FOUND, "a gap: some bytes are not mapped, not captured or not readable"),
    ),
)
