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
    """Test modules live in the directory of what they test; ``tests/`` itself keeps the shared
    set-up and the tests of the top-level modules of ``gdbext``."""
    expected = {"api", "audit", "dump", "fixtures", "formats", "frontend", "plugin", "render",
                "sim", "support"}  # fmt: skip
    present = {p.name for p in TESTS.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert expected <= present
    assert {p.name for p in (TESTS / "audit" / "rules").glob("test_*.py")} == {
        f"test_{p.stem}.py"
        for p in (TESTS.parent / "gdbext" / "audit" / "rules").glob("*.py")
        if p.name != "__init__.py"
    }
