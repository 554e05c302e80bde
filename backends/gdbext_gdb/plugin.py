"""The live GDB backend plugin (``gdb``): usable only inside GDB."""

from __future__ import annotations

from collections.abc import Sequence

from gdbext.hookspecs import hookimpl
from gdbext.target import BackendInfo


@hookimpl
def gdbext_backends() -> Sequence[BackendInfo]:
    return []
