"""Fresh dumps of a real kernel under the installed QEMU, read back and compared with QEMU.

For each configuration a guest boots Debian's kernel (TCG; the session's ``qemu_guest`` fixture
from ``conftest.py``, shared with other real-kernel tests), is stopped, and QEMU writes an ELF
core and a kdump-compressed (zlib, flattened) dump of it. gdbext's full walk of **both** dumps
in ``--format qemu-tlb`` must equal the monitor's ``info tlb`` line for line, and translations
of sampled addresses must equal ``gva2gpa``. With ``gdb`` installed, the kernel's own root and
(under PTI) the user PGD are compared too: QEMU prints their ``info tlb`` after CR3 is set
through the gdbstub.

Skipped without QEMU, a kernel or busybox-static, unless ``GDBEXT_REQUIRE_QEMU=1`` (CI), which
turns the skip into a failure. ``GDBEXT_QEMU_CONFIGS=4level,la57`` picks configurations.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from make_dumps import Capture, capture, kernel_root
from minimize import first_difference
from qemu_guest import QemuGuest

from gdbext import cli
from gdbext.frontend import commands
from gdbext.plugin.host import Host
from gdbext.plugin.target import Target
from gdbext.render.qemu_tlb import render_walk
from gdbext_dump.dump import open_dump

pytestmark = pytest.mark.qemu

NAMES = os.environ.get("GDBEXT_QEMU_CONFIGS", "4level,la57,kaslr-pti").split(",")
DUMPS = ("dump.elf", "dump.kdump")


@pytest.fixture(scope="module", params=NAMES)
def fresh(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    qemu_guest: Callable[[str], QemuGuest],
) -> Iterator[Capture]:
    """Boot (once a session), stop, dump (ELF and kdump) and ask QEMU."""
    name: str = request.param
    outdir = tmp_path_factory.mktemp(f"qemu-{name}")
    started = time.monotonic()
    guest = qemu_guest(name)
    cap = capture(guest, outdir, other_roots=shutil.which("gdb") is not None)
    cap.timings["boot+capture"] = time.monotonic() - started
    yield cap
    took = ", ".join(f"{k} {v:.2f} s" for k, v in cap.timings.items())
    print(f"\n[qemu {name}] {took}", file=sys.stderr)
    shutil.rmtree(outdir, ignore_errors=True)


def _open(path: Path) -> Target:
    return open_dump(str(path))


def _walk(path: Path, cr3: int | None = None) -> list[str]:
    target = _open(path)
    try:
        options = commands.WalkOptions(commands.RootOptions(cr3=cr3))
        return list(render_walk(commands.walk(target, options)))
    finally:
        if target.close is not None:
            target.close()


def _timed(cap: Capture, key: str, start: float) -> None:
    cap.timings[key] = cap.timings.get(key, 0.0) + time.monotonic() - start


@pytest.mark.parametrize("dump", DUMPS)
def test_walk_equals_live_info_tlb(fresh: Capture, dump: str) -> None:
    t = time.monotonic()
    got = _walk(fresh.outdir / dump)
    _timed(fresh, f"walk {dump}", t)
    diff = first_difference(got, fresh.tlb)
    assert diff is None, diff


@pytest.mark.parametrize("dump", DUMPS)
def test_cli_walk_equals_live_info_tlb(fresh: Capture, dump: str) -> None:
    """The same through ``gdbext walk DUMP --format qemu-tlb`` (format from the magic)."""
    host = Host.create()
    out = io.StringIO()
    assert cli.run(["walk", str(fresh.outdir / dump), "--format", "qemu-tlb"], host, out) == 0
    diff = first_difference(out.getvalue().splitlines(), fresh.tlb)
    assert diff is None, diff


@pytest.mark.parametrize("dump", DUMPS)
def test_translate_equals_live_gva2gpa(fresh: Capture, dump: str) -> None:
    assert any(pa is None for _, pa in fresh.gva2gpa)
    assert any(pa is not None for _, pa in fresh.gva2gpa)
    target = _open(fresh.outdir / dump)
    try:
        result = commands.translate(target, [va for va, _ in fresh.gva2gpa])
    finally:
        if target.close is not None:
            target.close()
    got = [(o.vaddr, None if o.translation is None else o.translation.paddr)
           for o in result.outcomes]  # fmt: skip
    assert got == fresh.gva2gpa


@pytest.mark.parametrize("dump", DUMPS)
def test_other_roots_equal_live_info_tlb(fresh: Capture, dump: str) -> None:
    """The kernel's root (VMCOREINFO) and the PTI user PGD, against QEMU with CR3 set to them."""
    if shutil.which("gdb") is None:
        pytest.skip("QEMU's info tlb for other roots needs gdb (CR3 is set through the gdbstub)")
    roots = {"kernel": kernel_root(fresh.outdir / "dump.elf")}
    if "pti=on" in (fresh.outdir / "qemu-config.txt").read_text():
        target = _open(fresh.outdir / "dump.elf")
        cr3 = target.cpu(0).root
        assert cr3 is not None
        roots["user"] = cr3 | 0x1000
    for kind, root in roots.items():
        assert root is not None
        golden = (fresh.outdir / f"info-tlb-{kind}.txt").read_text().splitlines()
        diff = first_difference(_walk(fresh.outdir / dump, root), golden)
        assert diff is None, f"{kind}: {diff}"
