"""pytest set-up for the whole tree: modules that only load inside a debugger are not collected
(``--doctest-modules`` would import them), the quick suite runs on every core, and pytest
keeps its rewritten test modules.

``pytest -m "not qemu"`` (the quick suite) runs its tests in two worker processes a core
(pytest-xdist) unless ``-n`` is given (``-n 0``: in this process): many of its tests wait on a
real ``gdb`` or ``lldb`` process, and a second worker a core fills that time. Runs that
may select QEMU tests stay in one process: every QEMU test shares the guests booted once a
session (``tests/conftest.py``), which workers could not share, and pytest-xdist's
``--dist loadgroup``, which could keep them on one worker, does not group under pytest 9.2.

pytest caches each test module with its asserts rewritten as bytecode in ``__pycache__``, but
writes that cache only where Python may write bytecode. Under PYTHONDONTWRITEBYTECODE (some
environments set it) every run would parse and rewrite every test module again: about 5 s of
the quick suite's time. The cache is pytest's own and checked against the source, so it is
written here whatever that variable says.
"""

import os
import sys

import pytest

sys.dont_write_bytecode = False


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    option = config.option
    if (
        hasattr(option, "numprocesses")  # pytest-xdist is installed
        and option.numprocesses is None  # and not told what to do
        and not hasattr(config, "workerinput")  # in the controller, not in a worker
        and "not qemu" in (option.markexpr or "")
    ):
        option.numprocesses = 2 * (os.cpu_count() or 1)


collect_ignore = ["gdbext/gdbinit.py"]
collect_ignore_glob = ["backends/gdbext_gdb/gdb_*.py", "backends/gdbext_lldb/lldb_*.py"]
