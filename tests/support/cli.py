"""The command line run in-process: its exit status and what it wrote to standard output."""

from __future__ import annotations

import io
from collections.abc import Sequence

from gdbext import cli
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
