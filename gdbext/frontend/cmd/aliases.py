"""``aliases``: physical ranges mapped more than once with different permissions."""

from __future__ import annotations

from gdbext.frontend.command import Command, Invocation

#: ``aliases``'s help.
TEXT = (
    "The physical ranges the selected page table maps at more than one virtual address with "
    "different permissions or privilege, ranked: writable at one address and executable at "
    "another first, then user and kernel, then the rest. The Linux direct map's copy of "
    "everything is one line at the end (how many ranges it maps again with other "
    "permissions), not a finding per range. One collapsed walk, as who-maps's."
)


def run(call: Invocation) -> int:
    from gdbext.frontend.whomaps import aliases

    result = aliases(call.target, call.root_options())
    call.emit(result)
    return result.exit_status


COMMAND = Command(
    name="aliases",
    summary="physical ranges mapped with different permissions at several addresses",
    debugger_summary="Physical ranges mapped at several addresses with different permissions.",
    text=TEXT,
    run=run,
)
