"""``search``: a byte pattern in the memory a page table maps, or in physical RAM."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from gdbext.errors import EXIT_NOT_FOUND, UsageError
from gdbext.frontend import argtypes
from gdbext.frontend.command import Command, Invocation, command_name

if TYPE_CHECKING:
    from gdbext.addr import AddrRange

#: ``search``'s help: the command line's ``--help`` and the debuggers'.
TEXT = (
    "Find a pattern in every page the selected page table maps (within --range), or in "
    "physical RAM with --phys. Each physical frame range is read once however many virtual "
    "addresses map it, and every virtual address that maps a match is reported; a match that "
    "straddles two virtual pages whose frames are not contiguous is found; --filter keeps the "
    "pages whose permissions match, --has VADDR the mapping that contains VADDR. Each hit: its "
    "address, its physical address, the page's permissions, the Linux region and the bytes "
    "from there. Give one pattern: --bytes HEX, --string TEXT (--utf16: as UTF-16LE), "
    "--u64/--u32/--u16 VALUE (little-endian), or --pointer-into REGION|START-END (8-byte "
    "values pointing into kernel-text, modules, direct-map, vmalloc, vmemmap or a range); "
    "--align N[,OFFSET] keeps the hits at addresses a with a % N == OFFSET. At most --max hits "
    "are shown, and the output says when more exist."
)


def arguments(p: argparse.ArgumentParser, target_options: bool) -> None:
    from gdbext.defaults import DEFAULT_MAX_HITS, LABEL_MODES

    what = p.add_argument_group("pattern (give one)")
    one = what.add_mutually_exclusive_group()
    one.add_argument("--bytes", metavar="HEX", help="these bytes, in hex ('de ad be ef' too)")
    one.add_argument("--string", metavar="TEXT", help="this text, UTF-8 (or --utf16)")
    for bits in (64, 32, 16):
        one.add_argument(
            f"--u{bits}",
            type=argtypes.address_or_symbol if bits == 64 else argtypes.integer,
            metavar="VALUE",
            help=f"this {bits}-bit value, little-endian"
            + (" (or a symbol's address)" if bits == 64 else ""),
        )
    one.add_argument(
        "--pointer-into",
        metavar="REGION|START-END",
        help="8-byte values pointing into a region (kernel-text, modules, direct-map, "
        "vmalloc, vmemmap) or START-END (bounds may be symbols)",
    )
    what.add_argument("--utf16", action="store_true", help="--string as UTF-16LE")
    what.add_argument(
        "--align",
        type=_align,
        metavar="N[,OFFSET]",
        help="only hits at addresses a with a %% N == OFFSET (default OFFSET 0)",
    )
    p.add_argument("--phys", action="store_true", help="search physical RAM, not the mappings")
    p.add_argument(
        "--range",
        type=argtypes.addr_range,
        metavar="START-END",
        help="only this range (virtual, or physical with --phys; or START+SIZE; virtual "
        "bounds may be symbols)",
    )
    p.add_argument(
        "--has",
        type=argtypes.address_or_symbol,
        metavar="VADDR",
        help="only the mapping that contains VADDR (its virtually contiguous pages of one size "
        "and the same permissions, whatever their frames), within --range; an address not "
        "mapped is exit status 1",
    )
    p.add_argument(
        "--filter",
        type=argtypes.perm_filter,
        metavar="SPEC",
        help="only pages whose effective permissions match (as walk's: w, ro, x, nx, u, s, "
        "wx, each negated by '!', ANDed by ',')",
    )
    p.add_argument(
        "--max",
        dest="max_hits",
        type=argtypes.integer,
        default=DEFAULT_MAX_HITS,
        metavar="N",
        help=f"show at most N hits (default {DEFAULT_MAX_HITS})",
    )
    p.add_argument(
        "--labels",
        choices=LABEL_MODES,
        default="auto",
        help="region labels: Linux's layout, when it looks like Linux (auto)",
    )


def _align(text: str) -> tuple[int, int]:
    n, _, offset = text.partition(",")
    try:
        return argtypes.integer(n), argtypes.integer(offset) if offset else 0
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"give N or N,OFFSET, not {text!r}") from None


def _prepare(args: argparse.Namespace, host: object) -> None:
    name = command_name(args)
    given = [
        args.bytes is not None,
        args.string is not None,
        args.u64 is not None,
        args.u32 is not None,
        args.u16 is not None,
        args.pointer_into is not None,
    ]
    if not any(given):
        raise UsageError(
            f"{name}: give a pattern: --bytes, --string, --u64, --u32, --u16 or --pointer-into"
        )
    if args.utf16 and args.string is None:
        raise UsageError(f"{name}: --utf16 is for --string")
    if args.phys and args.pointer_into is not None and not _is_range(args.pointer_into):
        raise UsageError(f"{name}: --pointer-into REGION needs a page table: give START-END")
    if isinstance(args.pointer_into, str) and _is_range(args.pointer_into):
        try:
            args.pointer_into = argtypes.addr_range(args.pointer_into)
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"{name}: --pointer-into: {exc}") from None
    if args.phys and isinstance(args.range, argtypes.RangeText):
        raise UsageError(f"{name}: --phys takes a physical range, not symbols: {args.range}")
    from gdbext.frontend.symbolic import check_symbol_options

    check_symbol_options(args, *_addresses(args))


def _addresses(args: argparse.Namespace) -> tuple[str, ...]:
    """The options whose addresses may be symbols: ``--pointer-into`` when it is a range
    (a region's name is no symbol)."""
    ranged = isinstance(args.pointer_into, argtypes.RangeText)
    return ("range", "has", "u64", *(("pointer_into",) if ranged else ()))


def _is_range(value: object) -> bool:
    """``--pointer-into``'s operand is a range, not a region's name."""
    from gdbext.frontend.searchwhere import POINTER_REGIONS

    return value not in POINTER_REGIONS


def pattern_bytes(args: argparse.Namespace) -> tuple[bytes, str]:
    """The literal pattern the arguments give, and how to name it."""
    name = command_name(args)
    if args.bytes is not None:
        try:
            data = bytes.fromhex(args.bytes.replace("0x", "").replace(",", " "))
        except ValueError:
            raise UsageError(f"{name}: --bytes {args.bytes!r} is not hex bytes") from None
        return data, f"bytes {data.hex(' ')}"
    if args.string is not None:
        encoding = "utf-16-le" if args.utf16 else "utf-8"
        try:
            data = args.string.encode(encoding)
        except UnicodeEncodeError as exc:
            raise UsageError(f"{name}: --string cannot be encoded: {exc.reason}") from None
        return data, f"string {args.string!r}" + (" (UTF-16LE)" if args.utf16 else "")
    for bits in (64, 32, 16):
        value = getattr(args, f"u{bits}")
        if value is not None:
            if not -(1 << (bits - 1)) <= value < 1 << bits:
                raise UsageError(f"{name}: --u{bits} 0x{value:x} does not fit in {bits} bits")
            data = (value % (1 << bits)).to_bytes(bits // 8, "little")
            return data, f"u{bits} 0x{value % (1 << bits):x}"
    raise UsageError(f"{name}: give a pattern")


def run(call: Invocation) -> int:
    from gdbext.frontend.memsearch import Pattern, SearchOptions, search_memory
    from gdbext.frontend.searchwhere import pointer_range
    from gdbext.frontend.symbolic import resolve_options

    args = call.args
    root = call.root_options()
    resolve_options(call, root, *_addresses(args))
    align, offset = args.align or (1, 0)
    pointer: AddrRange | None = None
    if args.pointer_into is not None:
        if _is_range(args.pointer_into):
            pointer = args.pointer_into
            assert pointer is not None
            label = f"pointers into 0x{pointer.start:x}-0x{pointer.end:x}"
        else:
            pointer = pointer_range(call.target, root, args.pointer_into)
            label = f"pointers into {args.pointer_into} (0x{pointer.start:x}-0x{pointer.end:x})"
        pattern = Pattern(b"", label, pointer, align, offset)
    else:
        data, label = pattern_bytes(args)
        pattern = Pattern(data, label, None, align, offset)
    result = search_memory(
        call.target,
        SearchOptions(
            pattern,
            root,
            args.phys,
            args.range,
            args.max_hits,
            args.labels,
            args.filter,
            args.has,
        ),
    )
    call.emit(result)
    return result.exit_status


COMMAND = Command(
    name="search",
    summary="find bytes, text, values or pointers in mapped memory or RAM",
    debugger_summary="Search the mapped memory (or RAM) for bytes, text, values or pointers.",
    text=TEXT,
    run=run,
    arguments=arguments,
    prepare=_prepare,
    symbols=True,
    exit_statuses=((EXIT_NOT_FOUND, "no hit"),),
)
