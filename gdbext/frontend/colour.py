"""ANSI colours for text output in a debugger whose styling is on.

Linux section markers bold, W+X permissions red, anomalies and translation errors yellow, other
``#`` lines dim. Applied to whole lines of rendered text (:class:`Styled` wraps the writer).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gdbext.frontend.command import Writer

RESET = "\x1b[m"
BOLD = "\x1b[1m"
DIM = "\x1b[2m"
RED = "\x1b[1;31m"
YELLOW = "\x1b[33m"

_MARKER = re.compile(r"^(---\[ .* \]---.*)$", re.M)
_ANOMALY = re.compile(r"^(# 0x.*)$", re.M)
_COMMENT = re.compile(r"^(# (?!0x).*)$", re.M)
_WX = re.compile(r"(?<= )(rwx)(?= (?:user|kern))")
_UNMAPPED = re.compile(r"^(0x[0-9a-f]{16}: .*)$", re.M)


def colourise(command: str, text: str) -> str:
    """Text output with ANSI colours: Linux section markers bold, W+X permissions red,
    anomalies and translation errors yellow, other ``#`` lines dim."""
    text = _WX.sub(RED + r"\1" + RESET, text)
    if command == "walk":
        text = _MARKER.sub(BOLD + r"\1" + RESET, text)
        text = _ANOMALY.sub(YELLOW + r"\1" + RESET, text)
        text = _COMMENT.sub(DIM + r"\1" + RESET, text)
    elif command == "translate":
        text = _UNMAPPED.sub(YELLOW + r"\1" + RESET, text)
    return text


class Styled:
    """A writer that colours text output (chunks hold whole lines)."""

    def __init__(self, out: Writer, command: str) -> None:
        self._out = out
        self._command = command

    def write(self, text: str) -> object:
        return self._out.write(colourise(self._command, text))
