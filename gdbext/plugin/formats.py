"""Output formats: a name, the command it renders, and a function from result to lines.

Renderers never print: they return an iterator of lines (without newlines), so that a front
end can stream them to a terminal, a file, GDB or LLDB.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple


class OutputFormat(NamedTuple):
    #: The ``--format`` value, e.g. ``"text"``, ``"json"``, ``"qemu-tlb"``.
    name: str
    #: The command it renders: ``"info"``, ``"walk"``, ``"translate"``, ``"heap"``.
    command: str
    render: Callable[..., Iterator[str]]
    summary: str = ""
    #: ``render`` takes a ``style`` keyword (:class:`~gdbext.render.common.Style`): the front
    #: end may ask it to mark up what it formats (colour on a terminal).
    styles: bool = False
    #: ``render`` yields ``bytes``, not lines (``read --format raw``): the command writes them
    #: to a binary file or pipe itself.
    binary: bool = False
