"""The live LLDB backend plugin (``lldb``): usable only inside LLDB.

It is listed everywhere (``gdbext backends``) and opens only in LLDB's embedded Python, where it
reads the target of an LLDB ``gdb-remote`` connection (QEMU's gdbstub; other stubs through the
kernel's direct map) with the logic it shares with GDB's (:mod:`gdbext_gdbstub`). The LLDB-only
code is in :mod:`gdbext_lldb.lldb_link`, imported on open.

Which LLDB session to read is passed in, as the option ``debugger`` (an ``SBDebugger`` ID): the
``pt-*`` commands in LLDB give it, as they know the debugger that runs them.
"""

from __future__ import annotations

from collections.abc import Sequence

from gdbext.errors import UsageError
from gdbext.plugin.hookspecs import hookimpl
from gdbext.plugin.target import BackendInfo, BackendOption, OpenRequest, Target
from gdbext_gdbstub.options import LIVE_OPTIONS, LIVE_SUMMARY
from gdbext_lldb.naming import NAMING

NAME = NAMING.backend


def open_lldb(request: OpenRequest) -> Target:
    """The target LLDB is connected to; :class:`UsageError` outside LLDB."""
    try:
        import lldb  # (only to know whether this is LLDB's Python)
    except ImportError:
        lldb = None
    # Debian's python3-lldb leaves a broken link in the system's dist-packages, which GDB's
    # Python imports as an empty namespace package.
    if not hasattr(lldb, "SBDebugger"):
        raise UsageError("the lldb backend works only inside LLDB")
    from gdbext_lldb.lldb_link import open_target

    return open_target(request)


@hookimpl
def gdbext_backends() -> Sequence[BackendInfo]:
    debugger = BackendOption(
        "debugger",
        "ID",
        "the LLDB debugger (SBDebugger ID) whose selected target to read; the pt-* commands in "
        "LLDB give their own",
    )
    return [
        BackendInfo(
            NAME, f"live target in LLDB: {LIVE_SUMMARY}", open_lldb, [*LIVE_OPTIONS, debugger]
        )
    ]
