"""The host read path in the real ``gdb`` against the session QEMU guest: QEMU's memory read
from ``/proc/PID/mem``, checked against what QEMU itself says at the same stop (``monitor xp``,
``info tlb``, its process ID), never against gdbext's other paths.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support.debuggers import tlb_lines
from support.gdblive import RAM_128M, parse_xp, run_gdb
from support.gdblive import guest4 as guest4  # the fixture

if TYPE_CHECKING:
    from qemu_guest import QemuGuest

pytestmark = [pytest.mark.qemu, pytest.mark.skipif(shutil.which("gdb") is None, reason="no gdb")]

#: Reads (address, size) across the guest's RAM lines (``info mtree -f``: 0-0xa0000 pc.ram,
#: 0xc0000-0xcb000 a ROM piece of pc.ram, then pc.ram), pages, a large run and the last page.
READS = [
    (0x0, 0x1000),
    (0x9F000, 0x1000),
    (0xC0000, 0x1000),
    (0xCA000, 0x2000),  # across the ROM piece's end
    (0xCAFF8, 0x10),  # 8 bytes each side of it
    (0x100000, 0x40000),
    (0x1000FFC, 8),
    (0x7FFF000, 0x1000),
]


def test_host_reads_equal_monitor_xp_and_change_nothing(guest4: QemuGuest, tmp_path: Path) -> None:
    body = f"""
target = open_target()
st = state()
out = {{"read_path": target.read_path, "detail": target.details["host memory"],
       "ram": [[r.start, r.end] for r in target.ram], "mode_before": mode()}}
reads = {READS!r}
out["xp"] = [monitor("xp /%dgx 0x%x" % ((((a + s + 7) & ~7) - (a & ~7)) // 8, a & ~7))
            for a, s in reads]
before = st.bracket.stats.__dict__.copy()
with target.command_scope():
    out["host"] = [target.mapper.read(a, s).hex() for a, s in reads]
out["packets"] = [st.bracket.stats.__dict__[k] - before[k] for k in before]
out["mode_after"] = mode()
beyond = {{}}
for paddr, size in [(0x8000000, 8), (0xa0000, 8), (0x9fff8, 16)]:
    try:
        target.mapper.read(paddr, size)
        beyond[hex(paddr)] = "read"
    except PhysMemoryError as exc:
        beyond[hex(paddr)] = str(exc)
out["beyond"] = beyond
stub = open_target(read_via="stub")
out["stub_path"] = stub.read_path
out["host_path"] = open_target(read_via="host").read_path
result(out)
"""
    (out,) = run_gdb(guest4.gdb_port, body, tmp_path)
    assert out["read_path"] == f"host memory (/proc/{guest4.pid}/mem)"
    assert out["host_path"] == out["read_path"]
    assert out["stub_path"] == "PhyMemMode"
    assert f"QEMU process {guest4.pid}," in out["detail"]
    assert out["ram"] == RAM_128M
    for (addr, size), text, got in zip(READS, out["xp"], out["host"], strict=True):
        start = addr & ~7
        assert got == parse_xp(text)[addr - start : addr - start + size].hex(), hex(addr)
    assert out["packets"] == [0, 0, 0]  # no PhyMemMode query, switch or restore
    assert out["mode_before"] == out["mode_after"] == 0
    for paddr, message in out["beyond"].items():
        assert message.startswith("physical read of ") and "outside RAM" in message, paddr


def test_walk_via_host_equals_info_tlb(guest4: QemuGuest, tmp_path: Path) -> None:
    tlb = guest4.info_tlb()
    body = """
from gdbext.render.qemu_tlb import render_walk
target = open_target(read_via="host")
with target.command_scope():
    lines = list(render_walk(walk(target, WalkOptions())))
result({"path": target.read_path, "lines": lines, "reads": state().stats.reads})
"""
    (out,) = run_gdb(guest4.gdb_port, body, tmp_path)
    assert out["path"].startswith("host memory")
    assert tlb_lines("\n".join(out["lines"])) == tlb


def test_host_path_refused_falls_back_to_the_stub_and_says_why(
    guest4: QemuGuest, tmp_path: Path
) -> None:
    body = """
from gdbext_gdbstub.hostpid import HostPathUnavailable
st = state()
def no_pid(address):
    raise HostPathUnavailable("no process found (test)")
st._host_probed = False
st._find_pid = no_pid
st.mapper.reader = None
target = open_target()
out = {"path": target.read_path, "why": target.details["host memory"]}
try:
    open_target(read_via="host")
except GdbextError as exc:
    out["host"] = str(exc)
result(out)
"""
    (out,) = run_gdb(guest4.gdb_port, body, tmp_path)
    assert out["path"] == "PhyMemMode"
    assert out["why"] == "not used: no process found (test)"
    assert out["host"] == "--read-via host: no process found (test)"
