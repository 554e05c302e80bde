"""Running the real ``gdb`` with gdbext against a QEMU guest: a Python script after a prelude,
whose ``RESULT {json}`` lines are the values, and readings of QEMU's own monitor output to
check them against."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from support.paths import ROOT

if TYPE_CHECKING:
    from qemu_guest import QemuGuest

REPO = ROOT
GDB = shutil.which("gdb")
#: The 128 MiB pc machine's RAM as ``info mtree -f`` shows it (the VGA hole is not RAM).
RAM_128M = [[0, 0xA0000], [0xC0000, 0x8000000]]
#: Linux's direct map without KASLR, 4-level paging.
DIRECT_MAP_4L = 0xFFFF_8880_0000_0000

PRELUDE = r"""
import json, sys, time
import gdb
from gdbext.frontend.commands import RootOptions, WalkOptions, translate, walk
from gdbext.errors import GdbextError, PhysMemoryError
from gdbext.plugin.host import Host
from gdbext.x86.records import LeafRun
from gdbext.plugin.target import OpenRequest
from gdbext_gdb import gdb_link
from gdbext_gdbstub.link import TargetMemoryError

HOST = Host.create()


def open_target(**options):
    return HOST.backend("gdb").open(OpenRequest(None, options))


def state():
    return gdb_link.state_for(gdb.selected_inferior())


def packet(text):
    out = gdb.execute("maintenance packet " + text, to_string=True)
    return out.rsplit('received: "', 1)[1].rsplit('"', 1)[0]


def mode():
    return int(packet("qqemu.PhyMemMode"))


def monitor(command):
    return gdb.execute("monitor " + command, to_string=True)


def leaf_runs(target, options=WalkOptions()):
    with target.command_scope():
        return [list(r) for r in walk(target, options).runs() if type(r) is LeafRun]


def result(value):
    print("RESULT " + json.dumps(value), flush=True)
"""


def gdb_env() -> dict[str, str]:
    site = sysconfig.get_paths()["purelib"]  # the venv running the tests
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([site, str(REPO), str(REPO / "backends")])
    env.pop("PYTHONHOME", None)
    return env


def gdb_argv(port: int, script: Path) -> list[str]:
    assert GDB is not None
    return [GDB, "-nx", "-batch", "-ex", f"target remote 127.0.0.1:{port}", "-x", str(script)]


def results(stdout: str, stderr: str) -> list[Any]:
    found = [json.loads(line[7:]) for line in stdout.splitlines() if line.startswith("RESULT ")]
    assert found, f"no RESULT from gdb\nstdout:\n{stdout[-3000:]}\nstderr:\n{stderr[-3000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]
    return found


def run_gdb(port: int, body: str, tmp_path: Path, timeout: float = 180) -> list[Any]:
    """Run ``body`` (after :data:`PRELUDE`) in GDB attached to ``port``; its RESULT values."""
    script = tmp_path / "script.py"
    script.write_text(PRELUDE + body)
    proc = subprocess.run(
        gdb_argv(port, script),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=gdb_env(),
        check=False,
    )
    return results(proc.stdout, proc.stderr)


def run_gdb_interactively(
    port: int, body: str, tmp_path: Path, on_line: Callable[[str, subprocess.Popen[str]], None]
) -> list[Any]:
    """Like :func:`run_gdb`, calling ``on_line(line, process)`` for each line GDB prints."""
    script = tmp_path / "script.py"
    script.write_text(PRELUDE + body)
    proc = subprocess.Popen(
        gdb_argv(port, script),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=gdb_env(),
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            on_line(line.rstrip("\n"), proc)
        stderr = proc.stderr.read()
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return results("".join(lines), stderr)


@pytest.fixture
def guest4(qemu_guest: Callable[[str], QemuGuest]) -> Iterator[QemuGuest]:
    """The 4-level session guest, stopped, PhyMemMode 0 before and after."""
    if GDB is None:
        pytest.skip("no gdb")
    guest = qemu_guest("4level")
    guest.stop()
    yield guest
    guest.stop()


def parse_xp(text: str) -> bytes:
    """The bytes of ``xp /Ngx`` output (the test's own reading of QEMU's format)."""
    words = []
    for line in text.splitlines():
        if ":" in line:
            words += [int(w, 16) for w in re.findall(r"0x([0-9a-f]{16})", line.split(":", 1)[1])]
    return struct.pack(f"<{len(words)}Q", *words)


def registers_of(info: str) -> dict[str, int]:
    """CR0, CR3, CR4 and EFER from ``info registers``."""
    found = {}
    for name in ("CR0", "CR3", "CR4", "EFER"):
        m = re.search(rf"\b{name}=([0-9a-f]+)", info)
        assert m is not None, info
        found[name.lower()] = int(m.group(1), 16)
    return found
