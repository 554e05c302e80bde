"""``pt-search`` in GDB on a slow backend: progress past the interval, Ctrl-C stops it with one
line, the command scope is left, and GDB goes on."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from support.debuggers import SLOW_PLUGIN, gdb_argv, interrupted_run
from support.paths import DEMO

pytestmark = pytest.mark.skipif(shutil.which("gdb") is None, reason="no gdb")

#: How GDB's front end registers the slow backend (GDB raises Ctrl-C itself).
GDB_REGISTER = """from gdbext_gdb import gdb_commands
gdb_commands.installed().session.host.pm.register(Plugin(lambda: False))"""


def test_a_long_search_shows_progress_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    log = tmp_path / "scope.log"
    plugin = tmp_path / "slow.py"
    plugin.write_text(SLOW_PLUGIN.format(log=str(log), register=GDB_REGISTER))
    argv = gdb_argv(
        f"source {plugin}",
        f"pt-backend slow --scenario {DEMO}",
        "pt-search --string never-there",
        "echo after\\n",
        "pt-info",
    )
    out, stderr = interrupted_run(argv, b"Ctrl-C interrupts")
    # Into a pipe the first report comes 5 s in (or at the first read after that).
    first = re.match(r"^pt-search: (\d+) s \(Ctrl-C interrupts\)\n", stderr)
    assert first and 5 <= int(first.group(1)) < 10, stderr
    assert stderr.splitlines()[-1] == "pt-search: interrupted"
    assert "Traceback" not in stderr
    assert out.startswith(f"backend slow: {DEMO}\nafter\nbackend:     slow ")
    assert log.read_text().splitlines() == ["enter", "exit KeyboardInterrupt", "enter", "exit"]
