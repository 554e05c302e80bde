"""The host read path in the real ``lldb`` (connected with ``pt-connect``, through its relay)
against the session QEMU guest: ``pt-info`` names QEMU's process, the walk equals ``info tlb``,
reads across QEMU's RAM lines equal ``monitor xp``, and ``--read-via stub`` still reads through
the stub.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from support import lldbrun
from support.debuggers import tlb_lines
from support.gdblive import parse_xp

if TYPE_CHECKING:
    from qemu_guest import QemuGuest

pytestmark = [pytest.mark.qemu, pytest.mark.skipif(not lldbrun.available(), reason="no lldb")]

#: (address, size) across the ROM piece's end at 0xcb000 and inside plain RAM.
READS = [(0xCA000, 0x2000), (0xCAFF8, 0x10), (0x100000, 0x1000)]

READ_SCRIPT = (
    "script from gdbext_lldb import lldb_link; "
    "st, _ = lldb_link.state_for(lldb.debugger, lldb.debugger.GetSelectedTarget().GetProcess()); "
    "from gdbext_gdbstub.options import LiveOptions; t = st.open(LiveOptions()); "
    "print('READ', *[t.mapper.read(a, s).hex() for a, s in {reads!r}], t.read_path, flush=True)"
)


def test_lldb_reads_through_the_host_and_equals_qemu(
    qemu_guest: Callable[[str], QemuGuest],
) -> None:
    guest = qemu_guest("4level")
    guest.stop()
    tlb = guest.info_tlb()
    xp = [guest.hmp(f"xp /{size // 8}gx 0x{addr:x}") for addr, size in READS]
    commands = [
        "pt-info",
        "pt-walk --format qemu-tlb",
        READ_SCRIPT.format(reads=READS),
        "pt-backend lldb --read-via stub",
        "pt-info",
        "pt-walk --format qemu-tlb",
    ]
    run = lldbrun.run(commands, port=guest.gdb_port)
    assert all(r.ok for r in run.results), [r.err for r in run.results]
    info, walk, read, _, stub_info, stub_walk = run.outputs()
    assert f"read path:   host memory (/proc/{guest.pid}/mem)" in info
    assert re.search(rf"host memory: +QEMU process {guest.pid}, ", info), info
    assert tlb_lines(walk) == tlb == tlb_lines(stub_walk)
    # (``script``'s print goes to LLDB's own output)
    line = next(x for x in (read + run.proc.stdout).splitlines() if x.startswith("READ "))
    words = line.split()
    assert words[1:4] == [parse_xp(text).hex() for text in xp]
    assert words[4:6] == ["host", "memory"]
    assert "read path:   PhyMemMode" in stub_info
    assert run.report["detached"]
