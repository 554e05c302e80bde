"""``roots``' output: a line per address space, then the look-alikes that were not listed."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from typing import Any

from gdbext.frontend.roots import AddressSpace, RootsResult
from gdbext.units import format_size, plural

#: What the PROCESS column says of an address space that is not a process's.
_KINDS = {
    "kernel": "[kernel: init_mm]",
    "no-pages": "[lower tables, no page: text_poke's poking_mm, or a process being set up]",
    "supervisor": "[supervisor-only user half: the real-mode trampoline's, or a kernel table's]",
}


def _who(space: AddressSpace, tasks_read: bool) -> str:
    """The tasks that own ``space`` (``pid comm``), then its stack identity; with the task
    list read, a process's space no task owns is said to be one (a freed table)."""
    if space.kind in _KINDS:
        return _KINDS[space.kind]
    owners = ", ".join(f"{pid} {comm}" for pid, comm in space.owners)
    if owners:
        owners = f"[{owners}] "
    elif tasks_read:
        owners = "[no task owns it: a freed table?] "
    ident = space.identity
    if ident is None:
        return (owners or "-").rstrip()
    if ident.argv is None:
        return f"{owners}({ident.filename})"
    args = " ".join(shlex.quote(a) for a in ident.argv)
    same = ident.argv and ident.argv[0] == ident.filename
    return owners + (args if same else f"{args}  ({ident.filename})")


def render_text(result: RootsResult) -> Iterator[str]:
    """A header (the kernel's root and how it was found, the RAM scanned), a line per address
    space (``ID  ROOTS  RUNS  BYTES  W+X  CPUS  PROCESS``), then what was left out."""
    n = len(result.spaces)
    yield (
        f"kernel root 0x{result.kernel_root:x} ({result.kernel_source}), "
        f"{result.levels}-level; {format_size(result.bytes_scanned)} of RAM scanned: "
        f"{n} address space{plural(n)}"
    )
    rows = [("ID", "ROOTS", "RUNS", "BYTES", "W+X", "CPUS", "PROCESS")]
    for s in result.spaces:
        roots = "+".join(f"0x{r:x}" for r in s.roots) + (" (PTI)" if s.user_root else "")
        rows.append(
            (
                s.id,
                roots,
                str(s.usage.runs),
                format_size(s.usage.bytes),
                str(s.usage.wx_pages),
                ",".join(map(str, s.cpus)) or "-",
                _who(s, result.tasks_read),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for row in rows:
        yield "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[6]
    for s in result.spaces:
        if s.usage.problem:
            yield f"{s.id}: user half walk stopped: {s.usage.problem}"
    if result.tasks_problem:
        yield f"tasks: {result.tasks_problem}"
    for pid, comm, root in result.unlisted:
        yield f"task {pid} {comm}: its root 0x{root:x} is not listed"
    if result.unowned:
        n = len(result.unowned)
        shown = ", ".join(s.id for s in result.unowned)
        yield (
            f"not listed: {n} table{plural(n)} mapping user pages that no task owns and no CPU "
            f"is on (freed by exited processes, the task list says): {shown}"
        )
    if result.empty:
        shown = ", ".join(f"0x{t:x}" for t in result.empty[:8])
        more = f" and {len(result.empty) - 8} more" if len(result.empty) > 8 else ""
        yield (
            f"not listed: {len(result.empty)} table{plural(len(result.empty))} with the "
            f"kernel's half and an empty user half (exited processes', or the kernel's own "
            f"when the scan started from another): {shown}{more}"
        )
    if result.rejected_count:
        yield (
            f"not listed: {result.rejected_count} page{plural(result.rejected_count)} with "
            "the kernel's half whose user half is no table"
        )
        for r in result.rejected:
            yield f"  0x{r.table:x}: {r.reason}"


def _hex(value: int) -> str:
    return f"0x{value:x}"


def _space(s: AddressSpace) -> dict[str, Any]:
    ident = s.identity
    return {
        "id": s.id,
        "root": _hex(s.root),
        "user_root": None if s.user_root is None else _hex(s.user_root),
        "kernel": s.kernel,
        "kind": s.kind,
        "cpus": list(s.cpus),
        "runs": s.usage.runs,
        "bytes": s.usage.bytes,
        "user_bytes": s.usage.user_bytes,
        "wx_pages": s.usage.wx_pages,
        "walk_problem": s.usage.problem or None,
        "tasks": [{"pid": pid, "comm": comm} for pid, comm in s.owners],
        "identity": None
        if ident is None
        else {
            "filename": ident.filename,
            "argv": None if ident.argv is None else list(ident.argv),
            "envc": ident.envc,
            "stack_page": _hex(ident.page),
        },
    }


def render_json(result: RootsResult) -> Iterator[str]:
    """``{"kernel_root", "kernel_source", "levels", "bytes_scanned", "address_spaces": [{"id",
    "root", "user_root", "kernel", "kind", "cpus", "runs", "bytes", "user_bytes", "wx_pages",
    "identity", "tasks": [{"pid", "comm"}]}], "empty", "rejected", "rejected_count",
    "tasks_read", "tasks_problem", "unlisted_tasks", "unowned"}``: with the task list read, a
    process's table no task owns and no CPU is on (a freed table) is in ``unowned``, not in
    ``address_spaces``; without it, a space's ``tasks`` is empty."""
    doc = {
        "kernel_root": _hex(result.kernel_root),
        "kernel_source": result.kernel_source,
        "levels": result.levels,
        "bytes_scanned": result.bytes_scanned,
        "truncated": result.truncated,
        "address_spaces": [_space(s) for s in result.spaces],
        "empty": [_hex(t) for t in result.empty],
        "rejected": [{"table": _hex(r.table), "reason": r.reason} for r in result.rejected],
        "rejected_count": result.rejected_count,
        "tasks_read": result.tasks_read,
        "tasks_problem": result.tasks_problem,
        "unlisted_tasks": [
            {"pid": pid, "comm": comm, "root": _hex(root)} for pid, comm, root in result.unlisted
        ],
        "unowned": [_space(s) for s in result.unowned],
    }
    yield json.dumps(doc, indent=2)
