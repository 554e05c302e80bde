"""pytest set-up for the whole tree: modules that only load inside a debugger are not collected
(``--doctest-modules`` would import them), the quick suite runs on every core, and pytest
keeps its rewritten test modules.

``pytest -m "not qemu"`` (the quick suite) runs its tests in one worker process a core and one
more (pytest-xdist) unless ``-n`` is given (``-n 0``: in this process): some of its tests wait
(for a progress report, a timeout, a stub), and the extra worker fills that time. More workers
cost more than they fill: each collects the suite and keeps its own caches and browser (on two
cores, four workers took 10-15% more CPU time and more wall time than three). Runs that
may select QEMU tests stay in one process: every QEMU test shares the guests booted once a
session (``tests/conftest.py``), which workers could not share, and pytest-xdist's
``--dist loadgroup``, which could keep them on one worker, does not group under pytest 9.2.

The modules whose tests take seconds each (real debuggers, Chromium, waits for progress
reports, hypothesis) are collected first (:data:`SLOW_FIRST`), so that they start at once, and
the tests are handed out with ``--dist worksteal``: a worker that is done takes tests queued
for another, so the run does not end with one worker going through a queue of heavy tests
while the others wait (``--dist load`` did: the last 3% of a run on one worker, 8-10 s).

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
        option.numprocesses = (os.cpu_count() or 1) + 1
        if getattr(option, "dist", None) == "no":
            option.dist = "worksteal"


#: Test modules, slowest tests first (seconds a test: they start real debuggers or Chromium,
#: wait for progress reports, or run hypothesis on real tables); collected before the others.
SLOW_FIRST = (
    "tests/backends/gdbext_lldb/test_lldb_frontend.py",
    "tests/backends/gdbext_gdb/test_gdb_commands.py",
    "tests/x86/test_paging_props.py",
    "tests/render/test_mapview_chromium.py",
    "tests/test_session.py",
    "tests/render/test_mapdiff.py",
    "tests/dump/test_dump_roundtrip.py",
    "tests/backends/gdbext_lldb/test_lldb_symbols.py",
    "tests/backends/gdbext_gdb/test_gdb_symbols.py",
    "tests/backends/gdbext_lldb/test_api_lldb.py",
    "tests/backends/gdbext_gdb/test_api_gdb.py",
    "tests/backends/gdbext_gdb/test_gdb_loading.py",
    "tests/backends/gdbext_lldb/test_lldb_relay.py",
    "tests/backends/gdbext_gdbstub/test_rsp.py",
    "tests/frontend/test_snapshot.py",
    "tests/frontend/test_search.py",
    "tests/render/test_walk_output.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a pytest-xdist worker (every worker collects, in the same order), the tests of
    :data:`SLOW_FIRST` first, in its order; the others after them, in theirs. A run in one
    process keeps the order of the files."""
    if not hasattr(config, "workerinput"):
        return
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    root = config.rootpath
    items.sort(key=lambda item: rank.get(item.path.relative_to(root).as_posix(), len(rank)))


collect_ignore = ["gdbext/gdbinit.py"]
collect_ignore_glob = ["backends/gdbext_gdb/gdb_*.py", "backends/gdbext_lldb/lldb_*.py"]
