"""The core must import without GDB's or LLDB's Python modules."""

from __future__ import annotations

import subprocess
import sys

PROBE = r"""
import importlib, pkgutil, sys
sys.modules["gdb"] = None      # any "import gdb" now raises ImportError
sys.modules["lldb"] = None
import gdbext, gdbext_sim
ENTRY_SCRIPTS = {"gdbext.gdbinit", "gdbext.lldbinit"}
names = []
for pkg in (gdbext, gdbext_sim):
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        # Debugger front ends and backends are the only modules allowed to need gdb/lldb; the
        # entry scripts (gdbinit: GDB sources it) are not part of the core.
        if any(part in ("gdb", "lldb") for part in info.name.split(".")[1:]):
            continue
        if info.name in ENTRY_SCRIPTS:
            continue
        importlib.import_module(info.name)
        names.append(info.name)
assert "gdbext.x86.paging" in names and "gdbext.cli" in names and "gdbext_sim.scenario" in names
assert "gdbext.session" in names  # the front ends' shared logic needs no debugger
print(len(names))
"""


def test_core_imports_without_gdb_and_lldb() -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) >= 20
