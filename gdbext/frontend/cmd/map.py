"""``map``: a picture of an address space, as one self-contained HTML page or an SVG."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from gdbext.errors import EXIT_OK, UsageError
from gdbext.frontend import argtypes
from gdbext.frontend.command import Command, Invocation, command_name, root_options, write_lines

if TYPE_CHECKING:
    from gdbext.frontend.addrmap import MapOptions, MapResult

#: ``map``'s help: the command line's ``--help`` and the debuggers'.
TEXT = (
    "A picture of the selected root's virtual address space. --format html (the default): one "
    "self-contained page (nothing is fetched when it is viewed) that draws the canonical "
    "halves, Linux's regions labelled, user and kernel mappings in lanes of their own, "
    "permissions as colours (W+X red), aliases (a table linked again, as ESPFIX's) hatched; "
    "a log-scaled overview (each range and gap as wide as 1 + log2 of its pages), linear "
    "below 1 GiB down to single 4 KiB pages; the wheel zooms, a drag pans, hovering or "
    "clicking shows a mapping (VA, PA, size, permissions, region, page size, flags); "
    "#zoom=0xLO-0xHI in the URL selects a window; --audit marks the audit rules' findings. "
    "--diff B: what changed from this table (A) to the dump or snapshot B's, as diff A B (in "
    "GDB and LLDB, pt-map FILE --diff SNAPSHOT: from the snapshot to now); or, with "
    "--a-*/--b-*, from one root of the target to another: B's mappings and A's removed ones "
    "coloured by change (added, removed, changed: what differs on hover), unchanged ones grey. "
    "--format svg: the overview as a static "
    "picture. An address space of more than --max-ranges ranges is aggregated, and the "
    "picture says so."
)


def arguments(p: argparse.ArgumentParser, target_options: bool) -> None:
    from gdbext.defaults import LABEL_MODES, MAP_MAX_LEAVES, MAP_MAX_RANGES

    if not target_options:
        p.add_argument("file", nargs="?", metavar="FILE", help="write the picture to FILE")
    p.add_argument(
        "-o", "--output", metavar="FILE", help="write the picture to FILE (default: stdout)"
    )
    p.add_argument(
        "--labels",
        choices=LABEL_MODES,
        default="auto",
        help="region labels: Linux's layout, when it looks like Linux (auto)",
    )
    p.add_argument(
        "--audit",
        action="store_true",
        help="run the audit rules too and mark their findings (a strip above the regions)",
    )
    p.add_argument(
        "--diff",
        metavar="B" if target_options else "SNAPSHOT",
        help="colour what changed from this table (A) to the dump B's (diff A B)"
        if target_options
        else "colour what changed from the snapshot (or dump) SNAPSHOT to the current target",
    )
    # A command line's B is the new table (as diff A B's); a debugger's snapshot the old one.
    p.set_defaults(diff_is_old=not target_options)
    from gdbext.frontend.rootargs import add_page_table_options

    add_page_table_options(p, "a")
    add_page_table_options(p, "b")
    p.add_argument(
        "--max-ranges",
        type=argtypes.integer,
        default=MAP_MAX_RANGES,
        metavar="N",
        help=f"aggregate past N ranges (default {MAP_MAX_RANGES})",
    )
    p.add_argument(
        "--max-leaves",
        type=argtypes.integer,
        default=MAP_MAX_LEAVES,
        metavar="N",
        help=f"stop past N leaf entries, 0 for no limit (default {MAP_MAX_LEAVES})",
    )


def _path(args: argparse.Namespace) -> str | None:
    given = getattr(args, "file", None)
    if given is not None and args.output is not None:
        raise UsageError(f"{command_name(args)}: give FILE or -o FILE, not both")
    path: str | None = given if given is not None else args.output
    return None if path == "-" else path


def run(call: Invocation) -> int:
    from gdbext.frontend.addrmap import MapOptions, address_map

    args = call.args
    path = _path(args)
    diffing = args.diff is not None or _sides_given(args)
    if diffing and args.audit:
        raise UsageError(f"{call.name}: --audit and --diff draw one thing each: give one")
    findings = []
    if args.audit:
        from gdbext.audit.engine import run_audit
        from gdbext.audit.options import AuditOptions
        from gdbext.audit.registry import audit_rules

        audit = run_audit(call.target, AuditOptions(root_options(args)), audit_rules(call.host))
        findings = audit.findings
    options = MapOptions(
        root=root_options(args),
        labels=args.labels,
        max_ranges=args.max_ranges,
        max_leaves=args.max_leaves or None,
    )
    result = _diff_map(call, options) if diffing else address_map(call.target, options, findings)
    if path is None:
        call.emit(result)
        return EXIT_OK
    if call.observe is not None:
        call.observe(result)
    if call.warn is not None:
        for message in result.warnings:
            call.warn(message)
        if result.aggregated:
            call.warn(f"aggregated: {result.aggregated}")
    part = f"{path}.{os.getpid()}.part"
    try:
        with open(part, "w", encoding="utf-8") as out:
            write_lines(out, call.render(result))
        os.replace(part, path)
    except OSError as exc:
        raise UsageError(f"{call.name}: cannot write {path}: {exc.strerror}") from None
    finally:
        if os.path.exists(part):
            os.unlink(part)
    return EXIT_OK


_SIDE_OPTIONS = ("cpu", "cr3", "levels", "kernel", "user_pgd", "root", "pid", "comm", "exe")


def _sides_given(args: argparse.Namespace) -> bool:
    return any(getattr(args, f"{s}_{n}", None) is not None for s in "ab" for n in _SIDE_OPTIONS)


def _diff_map(call: Invocation, options: MapOptions) -> MapResult:
    """``--diff B`` or two roots of one target (``--a-*``, ``--b-*``): the changes from A to B
    drawn on B's map. On the command line the target is A and ``--diff``'s dump B (as in
    ``diff A B``); in a debugger the snapshot is A and the current target B (as ``pt-diff``)."""
    import dataclasses

    from gdbext.frontend.mapdiff import diff_map
    from gdbext.plugin.host import DUMP_BACKEND

    if call.args.diff is None:
        old_root = call.root_options("a", call.target)
        mapped = dataclasses.replace(options, root=call.root_options("b", call.target))
        return diff_map(call.target, call.target, old_root, mapped)
    info, request = call.host.backend_request(DUMP_BACKEND, {}, call.args.diff)
    other = info.open(request)
    try:
        old, new = (other, call.target) if call.args.diff_is_old else (call.target, other)
        old_root = call.root_options("a", old)
        return diff_map(
            old, new, old_root, dataclasses.replace(options, root=call.root_options("b", new))
        )
    finally:
        if other.close is not None:
            other.close()


COMMAND = Command(
    name="map",
    summary="a picture of an address space: a self-contained HTML page, or SVG",
    debugger_summary="Draw the address space: pt-map FILE writes an HTML page (or --format svg).",
    text=TEXT,
    run=run,
    arguments=arguments,
    default_format="html",
)
