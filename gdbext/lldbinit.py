"""Load gdbext into LLDB: ``command script import /path/to/gdbext/lldbinit.py``.

LLDB runs this in its embedded Python (Debian's LLDB 14: the system's Python 3.11, the one GDB
embeds, so the same ``.venv`` serves both). As ``gdbinit.py`` does for GDB (the logic is shared:
``gdbext/venvpath.py``), it finds the project's virtual environment, ``.venv`` beside the
checkout or the one ``GDBEXT_VENV`` names, puts its site-packages and the checkout on
``sys.path`` without installing anything into the system Python, and registers the commands
(``gdbext_lldb.lldb_commands``): ``pt-walk``, ``pt-translate``, ``pt-info``, ``pt-heap``,
``pt-audit``, ``pt-backend`` and ``pt-connect``. Importing it again changes nothing. A missing
environment or dependency is one line on LLDB's error stream naming the command that fixes it.

Debian's ``lldb`` needs ``PYTHONPATH=/usr/lib/llvm-14/lib/python3.11/dist-packages`` before its
Python can run anything, this file included; ``scripts/lldb`` sets it (and imports this file).

This is LLDB's entry script, not part of the core: it may import ``lldb``. Importing it has no
effect by itself; LLDB then calls :func:`__lldb_init_module`.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any


def _fail(debugger: Any, message: str) -> None:
    line = f"gdbext: {message}\n"
    stream = debugger.GetErrorFile()
    if stream.IsValid():
        stream.Write(line.encode())
        stream.Flush()
    else:
        sys.stderr.write(line)


def __lldb_init_module(debugger: Any, internal_dict: dict[str, Any]) -> None:
    """LLDB's entry point: set up the path, then register the commands in ``debugger``."""
    import lldb

    here = os.path.abspath(__file__)
    package = os.path.dirname(os.path.realpath(here))
    # LLDB put this file's directory (the gdbext package) on sys.path to import it: its modules
    # must not be importable as top-level names.
    for entry in {package, os.path.dirname(here)}:
        while entry in sys.path:
            sys.path.remove(entry)

    spec = importlib.util.spec_from_file_location(
        "_gdbext_venvpath", os.path.join(package, "venvpath.py")
    )
    assert spec is not None and spec.loader is not None
    venvpath = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(venvpath)
    # LLDB's own package directory stays first.
    lldb_dir = os.path.dirname(os.path.dirname(lldb.__file__))
    venvpath.load(
        package,
        "LLDB",
        "gdbext_lldb.lldb_commands",
        lambda message: _fail(debugger, message),
        keep_first=[lldb_dir, os.path.realpath(lldb_dir)],
        args=(debugger, internal_dict),
    )
