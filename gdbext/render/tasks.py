"""``tasks``' output: a line per task, then how the walk ended."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from gdbext.frontend.tasks import TasksResult
from gdbext.units import plural


def _hex(value: int | None) -> str | None:
    return None if value is None else f"0x{value:x}"


def render_text(result: TasksResult) -> Iterator[str]:
    """A heading (BTF or DWARF, ``init_task``, kernel root), ``PID TGID S COMM ROOT`` lines
    (``-``: a kernel thread), and a count."""
    found = result.tasks
    source = (
        f"DWARF of {result.dwarf}"
        if result.dwarf is not None
        else f"BTF at 0x{result.btf_at or 0:x} ({result.btf_types} types)"
    )
    yield f"{source}; init_task 0x{found.init_task:x}; kernel root 0x{result.kernel_root:x}"
    yield f"{'PID':>7} {'TGID':>7} S {'COMM':<16} ROOT"
    for t in found.tasks:
        root = "-" if t.kernel_thread else ("?" if t.root is None else f"0x{t.root:x}")
        if t.root is not None and result.address_space(t.root) is None:
            root += " (no address space: its kernel half is not the kernel's)"
        yield f"{t.pid:>7} {t.tgid:>7} {t.state} {t.comm:<16} {root}"
    n = len(found.tasks)
    kthreads = sum(t.kernel_thread for t in found.tasks)
    yield (
        f"{n} task{plural(n)}: {n - kthreads} with an mm, {kthreads} kernel thread"
        f"{plural(kthreads)}" + ("" if found.threads else "; threads are not listed")
    )


def render_json(result: TasksResult) -> Iterator[str]:
    """``{"btf", "dwarf", "init_task", "kernel_root", "threads", "tasks": [{"pid", "tgid", "comm",
    "state", "root", "address_space", ...}], "error"}``; ``root`` is ``null`` for a kernel
    thread; ``btf`` is ``null`` when the offsets came from ``dwarf`` (the vmlinux's path,
    else ``null``); ``address_space`` is the ``roots`` id of the root's table (``null`` when its
    kernel half is not the kernel's)."""
    found = result.tasks
    doc: dict[str, Any] = {
        "btf": None
        if result.dwarf is not None
        else {"paddr": _hex(result.btf_at), "types": result.btf_types},
        "dwarf": result.dwarf,
        "init_task": _hex(found.init_task),
        "kernel_root": _hex(result.kernel_root),
        "threads": found.threads,
        "tasks": [
            {
                "pid": t.pid,
                "tgid": t.tgid,
                "comm": t.comm,
                "state": t.state,
                "root": _hex(t.root),
                "address_space": result.address_space(t.root),
                "kernel_thread": t.kernel_thread,
                "state_value": t.state_value,
                "task": _hex(t.address),
                "mm": _hex(t.mm or None),
            }
            for t in found.tasks
        ],
        "error": None if found.error is None else str(found.error),
    }
    yield json.dumps(doc, indent=2)
