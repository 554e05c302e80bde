"""The dump backend plugin: ``gdbext walk DUMP`` / ``--backend core``."""

from __future__ import annotations

from collections.abc import Sequence

from gdbext.hookspecs import hookimpl
from gdbext.target import BackendInfo


@hookimpl
def gdbext_backends() -> Sequence[BackendInfo]:
    return []
