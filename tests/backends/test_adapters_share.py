"""The GDB and LLDB adapters copy no helper and do not import each other: what both need lives
once, debugger-free, in :mod:`gdbext.frontend.common` (the commands) and :mod:`gdbext_gdbstub`
(the live backend over QEMU's gdbstub), which imports neither debugger. Read from the source
with ``ast``, so no debugger is needed."""

from __future__ import annotations

import ast
from pathlib import Path

from support.paths import ROOT

GDB = ROOT / "backends" / "gdbext_gdb"
LLDB = ROOT / "backends" / "gdbext_lldb"
GDBSTUB = ROOT / "backends" / "gdbext_gdbstub"

#: Names both adapters must define, each its own debugger's way (nothing to share but the name):
#: LLDB's relay runs as ``python3 -I -S relay.py`` (standard library only): its packet helpers
#: (``checksum``, ``frame``) are its own copy of what ``gdbext_gdbstub.rsp`` defines.
STANDALONE = ["relay.py"]

ENTRY_POINTS = {
    # what gdbinit.py / lldbinit.py call, and tests reach the session through
    "install",
    "installed",
    # the command classes each debugger's command API wants (a gdb.Command subclass; an LLDB
    # class with __call__ that LLDB finds by dotted name); both only hand words to the session
    "PtCommand",
    "PtBackendCommand",
    # the backend's open, registered by each plugin.py
    "open_target",
    # the live state of one connection: GDB keys it by connection and drops it on GDB's events,
    # LLDB by (debugger, process) and drops its cache when the stop ID moves (LLDB 14 has no
    # resume event); bench/ and the live tests call it by this name
    "state_for",
    # the pluggy hook implementation: its name is the hookspec's
    "gdbext_backends",
}


def defined(package: Path) -> dict[str, list[str]]:
    """Top-level function and class names of each module of ``package``, and the names of
    functions and classes defined in those classes (``Class.name``), with where."""
    names: dict[str, list[str]] = {}
    for path in sorted(package.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            names.setdefault(node.name, []).append(path.name)
            if isinstance(node, ast.ClassDef) and node.name not in ENTRY_POINTS:
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        names.setdefault(f"{node.name}.{item.name}", []).append(path.name)
    return names


def test_no_helper_is_defined_in_both_adapters() -> None:
    gdb, lldb = defined(GDB), defined(LLDB)
    both = {name: (gdb[name], lldb[name]) for name in set(gdb) & set(lldb)}
    copied = {name: where for name, where in both.items() if name not in ENTRY_POINTS}
    assert copied == {}, "move these to gdbext/frontend/common.py (or name the difference)"


def test_no_adapter_redefines_a_shared_gdbstub_helper() -> None:
    shared = defined(GDBSTUB)
    for package in (GDB, LLDB):
        again = {
            name: where
            for name, where in defined(package).items()
            if name in shared
            and name not in ENTRY_POINTS  # the gdbstub backend's own hook
            and where != STANDALONE
        }
        assert again == {}, f"{package.name}: import these from gdbext_gdbstub"


def test_the_allow_list_names_only_what_both_still_define() -> None:
    gdb, lldb = defined(GDB), defined(LLDB)
    stale = ENTRY_POINTS - (set(gdb) & set(lldb))
    assert stale == set(), "no longer defined in both: drop from ENTRY_POINTS"


def imported(package: Path) -> dict[str, set[str]]:
    """The top-level modules each module of ``package`` imports (at any depth of its code,
    ``TYPE_CHECKING`` blocks and imports inside functions included), by file name."""
    found: dict[str, set[str]] = {}
    for path in sorted(package.glob("*.py")):
        names = found.setdefault(path.name, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.partition(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.partition(".")[0])
    return found


def importers(package: Path, *modules: str) -> dict[str, set[str]]:
    """The modules of ``package`` that import one of ``modules``, and which."""
    return {
        name: uses & set(modules) for name, uses in imported(package).items() if uses & set(modules)
    }


def test_the_adapters_do_not_import_each_other() -> None:
    assert importers(LLDB, "gdbext_gdb", "gdb") == {}
    assert importers(GDB, "gdbext_lldb", "lldb") == {}


def test_the_shared_gdbstub_logic_imports_no_debugger_nor_adapter() -> None:
    assert importers(GDBSTUB, "gdb", "lldb", "gdbext_gdb", "gdbext_lldb") == {}


def test_both_adapters_run_on_the_shared_gdbstub_logic() -> None:
    # the check above would pass on a package that imports nothing at all
    for package in (GDB, LLDB):
        assert importers(package, "gdbext_gdbstub"), package.name
    assert imported(GDB)["gdb_link.py"] >= {"gdb", "gdbext_gdbstub"}
    assert imported(LLDB)["lldb_link.py"] >= {"lldb", "gdbext_gdbstub"}


def test_no_copy_of_one_line_is_left() -> None:
    copies = [
        f"{path.relative_to(ROOT)}:{node.name}"
        for top in (ROOT / "gdbext", ROOT / "backends")
        for path in sorted(top.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef) and node.name.lstrip("_") in ("one_line", "first_line")
    ]
    assert copies == ["gdbext/frontend/common.py:one_line", "gdbext/frontend/common.py:first_line"]


def test_failure_lines_are_worded_once() -> None:
    from gdbext.errors import GdbextError
    from gdbext.frontend.common import failure_line, first_line, hex_word

    class StubGone(Exception):
        pass

    assert failure_line("pt-walk", GdbextError("bad\n  cr3\n\n")) == "bad; cr3"
    assert failure_line("pt-walk", KeyboardInterrupt()) == "pt-walk: interrupted"
    assert failure_line("pt-walk", OSError("a\nb")) == "pt-walk: a; b"
    assert failure_line("pt-walk", StubGone("x"), (StubGone,)) == "pt-walk: x"
    assert failure_line("pt-walk", StubGone("x")) is None
    assert first_line("\n error: no route \nmore", "failed", "error:") == "no route"
    assert first_line(None, "failed", "error:") == "failed"
    assert hex_word(-1) == "0xffffffffffffffff"
