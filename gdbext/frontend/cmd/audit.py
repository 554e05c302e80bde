"""``audit``: the page tables checked by the audit rules (plugins), findings by severity."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, NamedTuple

from gdbext.errors import EXIT_FINDINGS, EXIT_OK
from gdbext.frontend import argtypes
from gdbext.frontend.cmd.heap import add_heap_arguments, heap_options
from gdbext.frontend.command import Command, Invocation, write_lines

if TYPE_CHECKING:
    from gdbext.audit.rule import AuditRule
    from gdbext.frontend.heap import HeapOptions
    from gdbext.plugin.host import Host


def arguments(p: argparse.ArgumentParser, target_options: bool) -> None:
    a = p.add_argument_group("rules")
    a.add_argument("--rules", type=argtypes.ids, metavar="ID,...", help="only these rules")
    a.add_argument(
        "--skip", type=argtypes.ids, default=(), metavar="ID,...", help="not these rules"
    )
    a.add_argument(
        "--all-roots",
        action="store_true",
        help="also audit every address space in RAM (as roots finds them): user W+X per "
        "process, and kernel-half entries of a process's table that differ from the kernel's "
        "(a hook), the process named (rule address-spaces)",
    )
    a.add_argument(
        "--list-rules", action="store_true", help="list the rules (id, severity, summary) and exit"
    )
    a.add_argument(
        "--fail-on",
        type=argtypes.severity,
        metavar="SEVERITY",
        help="exit status 3 when a finding is at least this severe "
        "(info, low, medium, high, critical)",
    )
    h = p.add_argument_group("heap (for the heap-contract rule; options as 'heap')")
    add_heap_arguments(h)


class _Plan(NamedTuple):
    """An audit, checked before anything is opened."""

    #: For the heap-contract rule: the heap options given, if any.
    heap: HeapOptions | None
    #: Every rule the plugins provide, by id.
    rules: Mapping[str, AuditRule]


def _prepare(args: argparse.Namespace, host: Host) -> _Plan:
    heap = heap_options(args) if args.memmap or args.at is not None else None
    from gdbext.audit.registry import audit_rules

    return _Plan(heap, audit_rules(host))


def list_rules(args: argparse.Namespace, host: Host, out: IO[str]) -> int | None:
    """``audit --list-rules``: the rules, as text or JSON (no target needed)."""
    if not args.list_rules:
        return None
    from gdbext.audit.registry import audit_rules
    from gdbext.render.audit import render_rules

    write_lines(out, render_rules(audit_rules(host), args.format))
    return EXIT_OK


def run(call: Invocation) -> int:
    from gdbext.render.audit import render_rules

    plan, args = call.prepared, call.args
    assert isinstance(plan, _Plan)
    if args.list_rules:
        write_lines(call.out, render_rules(plan.rules, args.format))
        return EXIT_OK
    # Imported here: the engine (walks, spans, frame index) is not needed to start up.
    from gdbext.audit.engine import run_audit
    from gdbext.audit.options import AuditOptions

    options = AuditOptions(
        call.root_options(),
        args.rules,
        tuple(args.skip),
        plan.heap,
        args.fail_on,
        all_roots=args.all_roots,
    )
    result = run_audit(call.target, options, plan.rules)
    call.emit(result)
    return result.exit_status


COMMAND = Command(
    name="audit",
    summary="audit a page table: rules as plugins, findings by severity",
    debugger_summary="Audit the page tables: findings of every rule plugin, by severity (as "
    "`gdbext audit`).",
    run=run,
    arguments=arguments,
    prepare=_prepare,
    without_target=list_rules,
    exit_statuses=(
        (
            EXIT_FINDINGS,
            "--fail-on SEVERITY: a finding at least that severe (the findings are printed as ever)",
        ),
    ),
)
