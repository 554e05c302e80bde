"""``info``: what the target is, its CPUs' paging state and, for Linux, its layout."""

from __future__ import annotations

from gdbext.errors import EXIT_OK
from gdbext.frontend.command import Command, Invocation


def run(call: Invocation) -> int:
    from gdbext.frontend.commands import info

    call.emit(info(call.target))
    return EXIT_OK


COMMAND = Command(
    name="info",
    summary="paging mode, control registers, backend",
    debugger_summary="Paging mode, control registers and paging features, backend and read path.",
    run=run,
    page_table=False,
)
