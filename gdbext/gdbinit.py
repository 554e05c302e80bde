"""Load gdbext into GDB: ``source /path/to/gdbext/gdbinit.py`` (in ``~/.gdbinit`` say).

GDB runs this in its embedded Python (the system's Python 3.11, not the ``python3`` on PATH).
``gdbext/venvpath.py`` (shared with LLDB's ``lldbinit.py``) finds the project's virtual
environment, ``.venv`` beside the checkout or the one named by ``GDBEXT_VENV``, puts its
site-packages (and the checkout, whose code it runs) in front of ``sys.path`` without installing
anything into the system Python, and registers the commands ``pt-walk``, ``pt-translate``,
``pt-info``, ``pt-heap``, ``pt-backend`` and the functions ``$pt_phys``, ``$pt_virt``
(``gdbext_gdb.gdb_commands``). Sourcing it again changes nothing. A missing environment or
dependency is one line on GDB's stderr naming the command that fixes it.

This is GDB's entry script, not part of the core: it may import ``gdb``.
"""

from __future__ import annotations


def _gdbext_load() -> None:
    import importlib.util
    import os
    import sys

    import gdb

    # This file's directory (GDB leaves __file__ alone when a script is sourced from another
    # one). Nothing of gdbext is importable yet: venvpath.py is loaded by its path.
    package = os.path.dirname(os.path.realpath(sys._getframe().f_code.co_filename))
    path = os.path.join(package, "venvpath.py")
    spec = importlib.util.spec_from_file_location("_gdbext_venvpath", path)
    assert spec is not None and spec.loader is not None
    venvpath = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(venvpath)
    venvpath.load(
        package,
        "GDB",
        "gdbext_gdb.gdb_commands",
        lambda message: gdb.write(f"gdbext: {message}\n", gdb.STDERR),
        keep_first=[gdb.PYTHONDIR],
    )


_gdbext_load()
del _gdbext_load
