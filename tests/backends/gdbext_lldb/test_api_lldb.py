"""The Python API inside the real ``lldb`` (``scripts/lldb``, gdbext loaded as ``docs/lldb.md``
says): ``gdbext.open(DUMP)`` on a committed dump, and ``gdbext.open(backend="lldb")`` on a live
guest that ``pt-connect`` connected LLDB to.

LLDB runs a Python file through its ``script`` command (``tests/support/lldbrun.py`` drives it); the
file writes its results as JSON. Expected values are QEMU's: the dump's goldens, or for the live
guest ``info tlb`` and ``gva2gpa`` from QEMU's monitor at the same stop.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from support import lldbrun
from support.debuggers import TRANSLATIONS, probes_of
from support.goldens import gva2gpa, info_tlb

if TYPE_CHECKING:
    from qemu_guest import QemuGuest

pytestmark = pytest.mark.skipif(not lldbrun.available(), reason="no lldb")

PRELUDE = (
    """
import json
import gdbext
"""
    + TRANSLATIONS
)


def run_script(body: str, tmp_path: Path, port: int | None = None) -> Any:
    """Run ``body`` (after :data:`PRELUDE`) in LLDB with ``script``; it sets ``OUT``, which
    comes back through JSON."""
    script = tmp_path / "api_script.py"
    out = tmp_path / "api_out.json"
    script.write_text(
        PRELUDE + body + f"\nwith open({str(out)!r}, 'w') as f:\n    json.dump(OUT, f)\n"
    )
    run = lldbrun.run([f"script exec(open({str(script)!r}).read())"], port=port)
    (result,) = run.results
    assert result.ok and "Traceback" not in result.err + result.out, result
    assert out.is_file(), result
    return json.loads(out.read_text())


def test_the_api_in_lldb_on_a_dump(kernel_dump: Callable[[str], Path], tmp_path: Path) -> None:
    dump = kernel_dump("kaslr-pti")
    samples = gva2gpa("kaslr-pti")
    body = f"""
with gdbext.open({str(dump)!r}) as t:
    pt = t.page_table(kernel=True)
    OUT = {{
        "leaves": [[m.vaddr, m.paddr] for m in pt.walk()],
        "translations": translations(t.page_table(), {sorted(samples)!r}),
    }}
try:
    gdbext.open(backend="lldb")
except gdbext.GdbextError as exc:
    OUT["no_target"] = str(exc)
"""
    out = run_script(body, tmp_path)
    tlb = info_tlb("kaslr-pti.info-tlb-kernel")
    assert out["leaves"] == [[v, p] for v, (p, _) in sorted(tlb.items())]
    assert out["translations"] == {str(v): p for v, p in samples.items()}
    # Without a connection: one error, and no need for a debugger ID (the script's is used).
    assert "debugger" not in out["no_target"]


@pytest.mark.qemu
def test_the_api_in_lldb_on_a_live_guest(
    qemu_guest: Callable[[str], QemuGuest], tmp_path: Path
) -> None:
    from conftest import require_qemu

    require_qemu()
    guest = qemu_guest("4level")
    guest.stop()
    tlb = guest.info_tlb()
    probes = probes_of(tlb)
    expected = {str(p): guest.gva2gpa(p) for p in probes}
    cr3 = guest.cr3()
    body = f"""
with gdbext.open(backend="lldb") as t:
    pt = t.page_table()
    OUT = {{
        "repr": repr(pt),
        "leaves": ["%016x: %016x" % (m.vaddr, m.paddr) for m in pt.walk()],
        "translations": translations(pt, {probes!r}),
    }}
"""
    try:
        out = run_script(body, tmp_path, port=guest.gdb_port)
    finally:
        guest.stop()
    assert out["repr"] == f"PageTable(root=0x{cr3 & ~0xFFF:x}, levels=4, cpu 0)"
    assert out["leaves"] == [line[:34] for line in tlb]
    assert out["translations"] == expected
