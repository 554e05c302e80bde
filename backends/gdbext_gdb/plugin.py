"""The live GDB backend plugin (``gdb``): usable only inside GDB.

It is listed everywhere (``gdbext backends``), and opens only in GDB's embedded Python, where
it reads the target GDB is connected to (QEMU's gdbstub; KGDB and other stubs through the
kernel's direct map). The GDB-only code is in :mod:`gdbext_gdb.gdb_link`, imported on open.
"""

from __future__ import annotations

from collections.abc import Sequence

from gdbext.errors import UsageError
from gdbext.plugin.hookspecs import hookimpl
from gdbext.plugin.target import BackendInfo, OpenRequest, Target
from gdbext_gdb.naming import NAMING
from gdbext_gdbstub.options import LIVE_OPTIONS, LIVE_SUMMARY

NAME = NAMING.backend


def open_gdb(request: OpenRequest) -> Target:
    """The target GDB is connected to; :class:`UsageError` outside GDB."""
    try:
        import gdb  # noqa: F401  (only to know whether this is GDB's Python)
    except ImportError:
        raise UsageError("the gdb backend works only inside GDB") from None
    from gdbext_gdb.gdb_link import open_target

    return open_target(request)


@hookimpl
def gdbext_backends() -> Sequence[BackendInfo]:
    return [BackendInfo(NAME, f"live target in GDB: {LIVE_SUMMARY}", open_gdb, list(LIVE_OPTIONS))]
