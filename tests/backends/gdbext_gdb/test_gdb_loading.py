"""The GDB front end in the real ``gdb -nx -batch``: loading (``source gdbext/gdbinit.py``,
twice or from another script, without an environment or a dependency, what it imports),
help and completion.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support.debuggers import (
    GDBINIT,
    IMPORTED_BY_LOADING,
    PY,
    check_missing_dependency,
    check_missing_environment,
    gdb,
    gdb_argv,
    imported_by_loading,
    marked,
    run_pty,
    sections,
)
from support.paths import ROOT

from gdbext.plugin.host import Host
from gdbext.session import Session

if TYPE_CHECKING:
    pass

pytestmark = pytest.mark.skipif(shutil.which("gdb") is None, reason="no gdb")


# --- loading -----------------------------------------------------------------------------------


def test_sourcing_twice_registers_once() -> None:
    ident = "python from gdbext_gdb import gdb_commands as g; print('ID', id(g.installed()))"
    proc = gdb(ident, f"source {GDBINIT}", ident, "help data", "pt-backend")
    assert proc.stderr == ""
    ids = re.findall(r"^ID (\d+)$", proc.stdout, re.M)
    assert len(ids) == 2 and ids[0] == ids[1]
    for name in ("pt-walk", "pt-translate", "pt-info", "pt-heap", "pt-backend"):
        assert len(re.findall(rf"^{name} -- ", proc.stdout, re.M)) == 1, name
    functions = gdb("help function")
    assert len(re.findall(r"^function pt_phys -- ", functions.stdout, re.M)) == 1
    assert len(re.findall(r"^function pt_virt -- ", functions.stdout, re.M)) == 1


def test_sourced_from_another_script(tmp_path: Path) -> None:
    """GDB keeps the outer script's ``__file__`` for a nested ``source``: the checkout is found
    all the same."""
    outer = tmp_path / "outer.py"
    outer.write_text(f"gdb.execute('source {GDBINIT}')\n")
    proc = gdb(f"source {outer}", "help pt-info", source=False)
    assert proc.stderr == ""
    assert proc.stdout.startswith("Paging mode, control registers")


def gdb_with(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return gdb(command, env={**os.environ, **env})


GDB_UNDEFINED = 'Undefined command: "{}".  Try "help".'


def test_a_missing_environment_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    check_missing_environment(gdb_with, "GDB", GDB_UNDEFINED, tmp_path)


def test_a_missing_dependency_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    check_missing_dependency(gdb_with, GDB_UNDEFINED, tmp_path)


def test_loading_imports_only_gdbext_and_pluggy() -> None:
    """``source gdbext/gdbinit.py`` in ``gdb -nx -batch``: the modules it added to GDB's Python
    (``sys.modules`` before and after) hold no third-party package but pluggy, while the
    commands are registered."""
    proc = gdb(
        "python import sys; gdbext_before = set(sys.modules)",
        f"source {GDBINIT}",
        "python print('NEW', *sorted(set(sys.modules) - gdbext_before))",
        "help pt-walk",
        source=False,
    )
    assert proc.stderr == ""
    new = re.search(r"^NEW (.*)$", proc.stdout, re.M)
    assert new, proc.stdout
    assert "gdbext_gdb.gdb_commands" in new.group(1).split()
    assert imported_by_loading(new.group(1)) == IMPORTED_BY_LOADING
    assert "usage: pt-walk" in proc.stdout


def test_pwntools_imported_in_gdb_leaves_the_terminal_alone() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PWNLIB_NOTERM"}
    probe = (
        "python import pwn, pwnlib.term, pwnlib.args; "
        "print('TERM', pwnlib.term.term_mode, pwnlib.args.term_mode); pwn.log.info('hello')"
    )
    text = run_pty(gdb_argv(probe, "echo done\\n"), env=env)
    assert text == "TERM False False\n[*] hello\ndone\n"
    # Without gdbinit.py's setting, importing pwntools on a terminal inside GDB reaches for the
    # terminal (curses on GDB's stdout), which fails: what the setting prevents.
    site = ROOT / ".venv" / "lib" / PY / "site-packages"
    bare = run_pty(
        gdb_argv(f"python import site; site.addsitedir('{site}')", probe, source=False), env=env
    )
    assert "TERM False False" not in bare and "Error" in bare


# --- help and completion ---------------------------------------------------------------------


def test_help_is_the_argparse_usage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    session = Session(Host.create())
    names = ("pt-walk", "pt-translate", "pt-info", "pt-heap", "pt-backend")
    proc = gdb(*marked(*(f"help {n}" for n in names)), env={**os.environ, "COLUMNS": "100"})
    assert proc.stderr == ""
    for name, text in zip(names, sections(proc.stdout), strict=True):
        assert text == session.help(name) + "\n"
    walk = gdb("pt-walk --help").stdout
    assert walk == session.parser("pt-walk").format_help()


def test_options_complete() -> None:
    proc = gdb(
        "complete pt-walk --fo",
        "complete pt-walk --format q",
        "complete pt-walk --labels ",
        "complete pt-translate 0x1000 --us",
        "complete pt-heap --memmap e",
        "complete pt-backend co",
        "complete pt-backend core fixtures/kernels/la57.e",
        "complete pt-backend sim --scenario fixtures/scenarios/de",
    )
    assert proc.stderr == ""
    assert proc.stdout.splitlines() == [
        "pt-walk --format",
        "pt-walk --format qemu-tlb",
        "pt-walk --labels auto",
        "pt-walk --labels linux",
        "pt-walk --labels none",
        "pt-translate 0x1000 --user-pgd",
        "pt-heap --memmap e820",
        "pt-backend core",
        "pt-backend core fixtures/kernels/la57.elf.xz",
        "pt-backend sim --scenario fixtures/scenarios/demo.json",
    ]
