"""The plugins of an entry-point group, found without :mod:`importlib.metadata`.

What ``pluggy.PluginManager.load_setuptools_entrypoints`` finds through
``importlib.metadata.distributions()``: each ``*.dist-info`` and ``*.egg-info`` directory on
``sys.path``, in path order and directory-listing order, and the ``[GROUP]`` section of its
``entry_points.txt``. Read here directly because importing :mod:`importlib.metadata` (``email``,
``zipfile``, ``csv``, ``socket`` come with it) costs a quarter of the command line's start-up
budget, and every ``gdbext`` process, ``gdbext --help`` and ``gdbext backends`` included, loads
the plugins. Distributions inside zip files are not searched (``importlib.metadata`` would).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Iterator
from typing import NamedTuple

#: ``name = module[:attr] [extras]``, as :class:`importlib.metadata.EntryPoint` reads a value.
_VALUE = re.compile(r"(?P<module>[\w.]+)\s*(?::\s*(?P<attr>[\w.]+)\s*)?(?:\[.*\]\s*)?$")
_METADATA_DIRS = (".dist-info", ".egg-info")


class EntryPoint(NamedTuple):
    """One entry point: its name and what it names (``module`` or ``module:attr``). (A named
    tuple: every command line reads the entry points, and making a dataclass costs start-up
    time.)"""

    name: str
    value: str

    def load(self) -> object:
        """The object the entry point names (its module, or an attribute of it)."""
        import importlib

        match = _VALUE.match(self.value)
        if match is None:
            raise ValueError(f"entry point {self.name}: {self.value!r} names no module")
        found: object = importlib.import_module(match["module"])
        for part in (match["attr"] or "").split("."):
            if part:
                found = getattr(found, part)
        return found


def parse(text: str, group: str) -> list[EntryPoint]:
    """The entry points of ``group`` in the text of an ``entry_points.txt``."""
    found = []
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        if section == group and "=" in line:
            name, _, value = line.partition("=")
            found.append(EntryPoint(name.strip(), value.strip()))
    return found


def _metadata_dirs(paths: Iterable[str]) -> Iterator[str]:
    for entry in paths:
        directory = entry or "."
        try:
            names = os.listdir(directory)
        except OSError:  # not a directory (a zip file), or gone
            continue
        for name in names:
            if name.endswith(_METADATA_DIRS):
                yield os.path.join(directory, name)


def entry_points(group: str, paths: Iterable[str] | None = None) -> list[EntryPoint]:
    """The entry points of ``group`` of every distribution on ``paths`` (``sys.path``), in the
    order :func:`importlib.metadata.distributions` finds them (a name may come more than once:
    the first is the one to load)."""
    found = []
    for directory in _metadata_dirs(sys.path if paths is None else paths):
        try:
            with open(os.path.join(directory, "entry_points.txt"), encoding="utf-8") as f:
                text = f.read()
        except OSError:
            continue
        found.extend(parse(text, group))
    return found
