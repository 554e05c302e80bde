"""``snapshot``'s output: what was written."""

from __future__ import annotations

import json
from collections.abc import Iterator

from gdbext.frontend.snapshot import SnapshotResult
from gdbext.units import plural


def render_text(result: SnapshotResult) -> Iterator[str]:
    """One line: the file, the root, the mode, the frames and the size."""
    info = ", VMCOREINFO" if result.vmcoreinfo else ""
    yield (
        f"{result.path}: root 0x{result.root:x} ({result.levels}-level), {result.tables} "
        f"table frame{plural(result.tables)}{info}, {result.size} bytes "
        f"({result.size / 1024:.0f} KiB)"
    )


def render_json(result: SnapshotResult) -> Iterator[str]:
    """``{"path", "root", "levels", "tables", "unreadable", "size", "vmcoreinfo"}``."""
    yield json.dumps(
        {
            "path": result.path,
            "root": f"0x{result.root:x}",
            "levels": result.levels,
            "tables": result.tables,
            "unreadable": result.unreadable,
            "size": result.size,
            "vmcoreinfo": result.vmcoreinfo,
        }
    )
