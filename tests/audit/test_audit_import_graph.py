"""The modules of :mod:`gdbext.audit` import each other without a cycle.

Every import counts, the ones under ``if TYPE_CHECKING:`` and inside functions too: a cycle
among them is a cycle in the design (two modules that each need the other), however Python
happens to load them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import gdbext.audit

PACKAGE = "gdbext.audit"
ROOT = Path(gdbext.audit.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that the module at ``path`` imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None and not node.level:
            # ``from pkg import mod`` imports the submodule when there is one.
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found.update(name for name in names if name in modules)
    return found


def audit_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(paths)
    return {name: imports_of(path, modules) - {name} for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (its modules in order, the first repeated), or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == 1:
                return [*path[path.index(child) :], child]
            if child not in state:
                cycle = visit(child)
                if cycle is not None:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle is not None:
                return cycle
    return None


def test_the_graph_is_read() -> None:
    graph = audit_graph()
    assert "gdbext.audit.context" in graph["gdbext.audit.engine"]
    assert "gdbext.audit.model" in graph["gdbext.audit.context"]
    assert "gdbext.audit.context" in graph["gdbext.audit.rule"]  # under TYPE_CHECKING


def test_find_cycle_finds_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_audit() -> None:
    assert find_cycle(audit_graph()) is None
