"""The Python API inside the real ``gdb``: ``gdbext.open(DUMP)`` on a committed dump, and
``gdbext.open(backend="gdb")`` on a live guest under QEMU.

GDB loads gdbext the documented way (``source gdbext/gdbinit.py``) and runs a Python script
that prints ``RESULT {json}`` lines. Expected values are QEMU's: the dump's goldens, or for the
live guest ``info tlb``, ``gva2gpa`` and ``info registers`` from QEMU's monitor at the same stop.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from support.debuggers import TRANSLATIONS, probes_of
from support.goldens import gva2gpa, info_tlb
from support.paths import ROOT

if TYPE_CHECKING:
    from qemu_guest import QemuGuest

GDBINIT = ROOT / "gdbext" / "gdbinit.py"
GDB = shutil.which("gdb")

pytestmark = pytest.mark.skipif(GDB is None, reason="no gdb")

PRELUDE = (
    """
import json
import gdb
import gdbext

def result(value):
    print("RESULT " + json.dumps(value), flush=True)
"""
    + TRANSLATIONS
)


def run_gdb(
    body: str,
    tmp_path: Path,
    *,
    port: int | None = None,
    on_line: Callable[[str], None] | None = None,
    timeout: float = 300,
) -> list[Any]:
    """``gdb -nx -batch``, gdbext sourced, attached to ``port`` if given, running ``body``;
    the values of its RESULT lines (``on_line`` sees each line as it comes)."""
    assert GDB is not None
    script = tmp_path / "api_script.py"
    script.write_text(PRELUDE + body)
    argv = [GDB, "-nx", "-batch", "-ex", f"source {GDBINIT}"]
    if port is not None:
        argv += ["-ex", f"target remote 127.0.0.1:{port}"]
    argv += ["-x", str(script)]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines = []
    deadline = time.monotonic() + timeout
    try:
        for line in proc.stdout:
            lines.append(line)
            if on_line is not None:
                on_line(line.rstrip("\n"))
            assert time.monotonic() < deadline, "gdb took too long"
        stderr = proc.stderr.read()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stdout = "".join(lines)
    found = [json.loads(line[7:]) for line in lines if line.startswith("RESULT ")]
    assert found, f"no RESULT from gdb\nstdout:\n{stdout[-3000:]}\nstderr:\n{stderr[-3000:]}"
    assert "Traceback" not in stderr + stdout, stderr[-3000:] + stdout[-3000:]
    return found


def test_the_api_in_gdb_on_a_dump(kernel_dump: Callable[[str], Path], tmp_path: Path) -> None:
    dump = kernel_dump("kaslr-pti")
    samples = gva2gpa("kaslr-pti")
    body = f"""
with gdbext.open({str(dump)!r}) as t:
    pt = t.page_table()
    result({{
        "translations": translations(pt, {sorted(samples)!r}),
        "leaves": [[m.vaddr, m.paddr] for m in pt.walk()],
        "user_leaves": len(t.page_table(user_pgd=True).walk()),
        "repr": repr(pt.walk(has=0xffffffffa7a00000)[0]),
    }})
result(repr(t))
"""
    out, closed = run_gdb(body, tmp_path)
    assert out["translations"] == {str(v): p for v, p in samples.items()}
    tlb = info_tlb("kaslr-pti.info-tlb")
    assert out["leaves"] == [[v, p] for v, (p, _) in sorted(tlb.items())]
    assert out["user_leaves"] == len(info_tlb("kaslr-pti.info-tlb-user"))
    assert out["repr"].startswith("Mapping(vaddr=0xffffffffa7a00000, paddr=0x1000000, ")
    assert closed == "<gdbext target core: closed>"


@pytest.mark.qemu
def test_the_api_in_gdb_on_a_live_guest(
    qemu_guest: Callable[[str], QemuGuest], tmp_path: Path
) -> None:
    """``gdbext.open(backend="gdb")`` reads the guest GDB is attached to: its walk is QEMU's
    ``info tlb``, its translations QEMU's ``gva2gpa``, at the same stop; after ``continue`` and
    a stop, the same page table follows the CPU's CR3 of the new stop, and QEMU's PhyMemMode is
    as it was."""
    from conftest import require_qemu

    require_qemu()
    guest = qemu_guest("4level")
    guest.stop()
    tlb = guest.info_tlb()
    probes = probes_of(tlb)
    expected = {str(p): guest.gva2gpa(p) for p in probes}
    kernel_probe = next(p for p in probes if p >> 63)
    cr3 = guest.cr3()
    body = f"""
def mode():
    out = gdb.execute("maintenance packet qqemu.PhyMemMode", to_string=True)
    return int(out.rsplit('received: "', 1)[1].rsplit('"', 1)[0])

t = gdbext.open(backend="gdb")
pt = t.page_table()
result({{
    "root": pt.root,
    "repr": repr(pt),
    "leaves": ["%016x: %016x" % (m.vaddr, m.paddr) for m in pt.walk()],
    "translations": translations(pt, {probes!r}),
    "mode": mode(),
}})
print("CONTINUING", flush=True)
gdb.execute("continue")
info = gdb.execute("monitor info registers", to_string=True)
kernel = pt.translate({kernel_probe})  # the table is resolved again: a new stop
result({{
    "kernel": kernel.paddr,
    "root": pt.root,
    "first_table": kernel.steps[0].table,
    "info": info,
    "mode": mode(),
}})
"""

    def stop_after_continue(line: str) -> None:
        if line == "CONTINUING":
            time.sleep(1.0)
            guest.stop()  # QEMU reports the stop to GDB, whose `continue` returns

    try:
        first, second = run_gdb(body, tmp_path, port=guest.gdb_port, on_line=stop_after_continue)
    finally:
        guest.stop()
    assert first["root"] == cr3 & ~0xFFF
    assert first["repr"] == f"PageTable(root=0x{cr3 & ~0xFFF:x}, levels=4, cpu 0)"
    assert first["leaves"] == [line[:34] for line in tlb]
    assert first["translations"] == expected
    assert first["mode"] == 0
    m = re.search(r"\bCR3=([0-9a-f]+)", second["info"])
    assert m is not None
    assert second["root"] == second["first_table"] == int(m.group(1), 16) & ~0xFFF
    assert second["kernel"] == expected[str(kernel_probe)]
    assert second["mode"] == 0
