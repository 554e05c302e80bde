"""The tests' own layout: every file short enough to read, and every test module importable under
a name of its own.

pytest imports test modules in its default ``prepend`` mode: a file in a directory without
``__init__.py`` is imported under its bare file name, with its directory put first on
``sys.path``, so two such files of one name would shadow each other (the second fails to
collect). Shared helpers live in the ``support`` package (``tests/support/``), importable from
every directory because ``tests/`` itself is on ``sys.path`` (it holds the top ``conftest.py``).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parent
#: The most lines a file under ``tests/`` may have.
MAX_LINES = 600


def python_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    """The name ``prepend`` mode imports ``path`` under: its file name, prefixed by the
    packages (directories with ``__init__.py``) that contain it."""
    parts = [path.stem]
    parent = path.parent
    while (parent / "__init__.py").exists():
        parts.insert(0, parent.name)
        parent = parent.parent
    return ".".join(parts)


def test_no_file_under_tests_is_over_600_lines() -> None:
    long = {
        str(p.relative_to(TESTS)): n
        for p in python_files()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_test_modules_have_names_of_their_own() -> None:
    by_name: dict[str, list[str]] = defaultdict(list)
    for path in python_files():
        if path.name != "__init__.py":
            by_name[module_name(path)].append(str(path.relative_to(TESTS)))
    assert {name: paths for name, paths in by_name.items() if len(paths) > 1} == {}


def test_the_tests_mirror_the_packages() -> None:
    """Test modules live in the directory of what they test: ``tests/x86/`` for ``gdbext/x86/``
    and so on for each package of ``gdbext``; ``tests/dump/`` and ``tests/sim/`` for their
    backends; ``tests/backends/gdbext_gdb/``, ``gdbext_lldb/`` and ``gdbext_gdbstub/`` for the
    debuggers' adapters and the live backend, named after their packages (a directory called
    ``gdb`` or ``lldb`` on ``sys.path`` would pass for the debugger's own module). ``tests/``
    itself keeps the shared set-up and the tests of the top-level modules of ``gdbext``, each
    file named after its module (``test_addr.py``, ``test_cli_dump.py``)."""
    gdbext = TESTS.parent / "gdbext"
    packages = {p.name for p in gdbext.iterdir() if (p / "__init__.py").exists()}
    present = {p.name for p in TESTS.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert packages | {"api", "backends", "dump", "fixtures", "sim", "support"} <= present
    backends = TESTS / "backends"
    assert {p.name for p in backends.iterdir() if p.is_dir() and p.name != "__pycache__"} == {
        "gdbext_gdb", "gdbext_gdbstub", "gdbext_lldb"
    }  # fmt: skip
    assert list(backends.rglob("__init__.py")) == []
    modules = {p.stem for p in gdbext.glob("*.py")}
    # The package as a whole, and these tests themselves.
    whole = {"test_architecture.py", "test_core_imports.py", "test_layout_of_tests.py"}
    top = {p.name for p in TESTS.glob("test_*.py")} - whole
    assert {n for n in top if n.removeprefix("test_").removesuffix(".py").split("_")[0]
            not in modules} == set()  # fmt: skip
    assert {p.name for p in (TESTS / "audit" / "rules").glob("test_*.py")} == {
        f"test_{p.stem}.py"
        for p in (gdbext / "audit" / "rules").glob("*.py")
        if p.name != "__init__.py"
    }
