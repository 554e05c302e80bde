"""The command line run in-process: its exit status and what it wrote to standard output."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from gdbext import cli
from gdbext.errors import GdbextError
from gdbext.plugin.host import Host


def cli_text(argv: Sequence[str], host: Host | None = None) -> tuple[int, str]:
    """``gdbext ARGV``: its exit status and its output (``host``: the built-in plugins')."""
    out = io.StringIO()
    status = cli.run(list(argv), host or Host.create(), out)
    return status, out.getvalue()


def cli_lines(argv: Sequence[str]) -> tuple[int, list[str]]:
    """``gdbext ARGV``: its exit status and its output's lines."""
    status, text = cli_text(argv)
    return status, text.split("\n")[:-1]


def cli_outcome(*argv: str | Path) -> tuple[int, str, str]:
    """``gdbext ARGV``: its exit status, output and error line (as the command line's: a
    :class:`~gdbext.errors.GdbextError` is its status and message)."""
    out = io.StringIO()
    try:
        status = cli.run([str(a) for a in argv], Host.create(), out)
    except GdbextError as exc:
        return exc.exit_status, out.getvalue(), str(exc)
    return status, out.getvalue(), ""
