"""The package layout is the architecture: imports go down the floors, never round in a cycle,
and no module grows past what one reader holds in mind. Read from the source with ``ast``."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Where the importable packages live: the core at the root, backends under backends/.
SOURCES = (ROOT, ROOT / "backends")
PACKAGES = ("gdbext", "gdbext_gdbstub", "gdbext_gdb", "gdbext_lldb", "gdbext_dump", "gdbext_sim")
MAX_LINES = 600

#: The ground floor: modules everything may use, which use nothing above them.
GROUND = (
    "gdbext.addr",
    "gdbext.units",
    "gdbext.cpu",
    "gdbext.flags",
    "gdbext.geometry",
    "gdbext.errors",
    "gdbext.mapper",
)
#: What a package (or module) must not import: nothing above it. x86 is the engine and knows
#: only the ground floor; linux knows x86 and the plugin's facts, not what uses it.
MAY_NOT_IMPORT = {
    "gdbext.x86": ("gdbext.linux", "gdbext.plugin", "gdbext.audit", "gdbext.render",
                   "gdbext.frontend", "gdbext.cli", "gdbext.session", "gdbext.api"),
    "gdbext.linux": ("gdbext.audit", "gdbext.render", "gdbext.frontend", "gdbext.cli",
                     "gdbext.session", "gdbext.api", "gdbext.plugin.host"),
    # The plugin host and what it hands out know no audit, renderer or Linux; only the hook
    # specifications name the types plugins return (rules), for the type checker.
    **{
        f"gdbext.plugin.{name}": ("gdbext.audit", "gdbext.render", "gdbext.frontend",
                                  "gdbext.cli", "gdbext.session", "gdbext.api", "gdbext.linux")
        for name in ("host", "target", "facts", "formats", "entrypoints")
    },
    "gdbext.render": ("gdbext.cli", "gdbext.session", "gdbext.api", "gdbext.plugin.host"),
    "gdbext.audit": ("gdbext.cli", "gdbext.session", "gdbext.api", "gdbext.render"),
}  # fmt: skip


def modules() -> dict[str, Path]:
    """Every module of the packages, by dotted name."""
    found: dict[str, Path] = {}
    for base in SOURCES:
        for package in PACKAGES:
            for path in sorted((base / package).rglob("*.py")):
                name = ".".join(path.relative_to(base).with_suffix("").parts)
                found[name.removesuffix(".__init__")] = path
    return found


MODULES = modules()


def imports(path: Path) -> set[str]:
    """The modules of :data:`MODULES` that ``path`` imports: anywhere in it (in functions too,
    and for the type checker only: a lazy or typing-only import is a dependency all the same)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif node.module is not None and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            names = []
        out.update(n for n in names if n in MODULES)
    return out


@functools.cache
def graph() -> dict[str, set[str]]:
    """What each module imports (:func:`imports`), read once a process, by the first test that
    asks: not at collection, which every test process of a run would pay for."""
    return {name: imports(path) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle() -> None:
    assert _cycles(graph()) == []


@pytest.mark.parametrize("package", sorted(MAY_NOT_IMPORT))
def test_imports_go_down_the_floors(package: str) -> None:
    wrong = {
        f"{name} imports {target}"
        for name, targets in graph().items()
        if name == package or name.startswith(package + ".")
        for target in targets
        for banned in MAY_NOT_IMPORT[package]
        if target == banned or target.startswith(banned + ".")
    }
    assert wrong == set()


def test_the_rules_name_modules_that_exist() -> None:
    named = set(MAY_NOT_IMPORT) | set(GROUND)
    assert {n for n in named if not any(m == n or m.startswith(n + ".") for m in MODULES)} == set()


def test_the_ground_floor_imports_only_itself() -> None:
    wrong = {f"{m} imports {t}" for m in GROUND for t in graph()[m] if t not in GROUND}
    assert wrong == set()


def test_the_core_imports_no_backend() -> None:
    allowed = {"gdbext.gdbinit", "gdbext.lldbinit"}  # what users source: they install adapters
    wrong = {
        f"{name} imports {target}"
        for name, targets in graph().items()
        if name.split(".")[0] == "gdbext" and name not in allowed
        for target in targets
        if target.split(".")[0] != "gdbext"
    }
    assert wrong == set()


def test_no_module_is_over_the_size_limit() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in MODULES.values()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
