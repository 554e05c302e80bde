"""The audit's W+X verdict equals the kernel's own ``CONFIG_DEBUG_WX`` line, at its check.

Debian's kernel checks its page tables once, at the end of boot (``mark_rodata_ro`` calls
``ptdump_walk_pgd_level_checkwx``; under PTI ``pti_finalize`` then calls
``ptdump_walk_user_pgd_level_checkwx``), and prints ``x86/mm: Checked W+X mappings: ...``.
A dump taken after boot has other tables (vmalloc'd stacks and so on come later), so each guest
here is **frozen at the check itself**:

1. a discovery boot reads the two functions' addresses from the guest's ``/proc/kallsyms``
   (there is no System.map here; with ``nokaslr`` they are the same every boot), cached for the
   session and, keyed by the kernel file, in pytest's cache;
2. each configuration boots with QEMU paused (``GuestConfig(paused=True)``), a hardware
   breakpoint goes on the check through the gdbstub (``fixtures/gdbstub.py``), and on the hit
   QEMU dumps the guest (``dump-guest-memory``; no VMCOREINFO yet, ``/init`` has not run);
3. the guest runs on to ``/init``, and the kernel's verdict line(s) are read from the serial log.

The audit of each dump (``gdbext audit DUMP --rules wx``, text and ``--json`` summary ``"wx"``)
must print the kernel's line(s) exactly, for 4-level, LA57 (``-cpu max``), ``pti=on`` (two
checks: kernel PGD, then the user PGD), ``-cpu qemu64,-nx`` (``FAILED`` with the exact count)
and ``-cpu qemu64,-nx`` with ``pti=on`` (``FAILED``, 36164 pages with Debian's 6.1 kernel, of
which 1493 not present: ptdump counts leaf entries by their flags; one line, the kernel skipping
the user PGD without NX, which the audit infers from the tables: the dumps have no EFER). An
independent count, a walk of the raw tables written here in a few lines, must give the kernel's
number too.

The committed fixtures' serial logs (``fixtures/kernels/NAME.serial.log``) carry the kernel's
verdict of those boots: the audit of each committed dump must give it (these need no QEMU).

The guests run two at a time (the machine has two cores; TCG uses one per guest).
``GDBEXT_REQUIRE_QEMU=1`` (CI) turns the skip without QEMU into a failure.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from gdbstub import GdbStub
from qemu_guest import READY_MARKER, GuestConfig, QemuGuest, find_kernel
from support.paths import ROOT

from conftest import KERNELS, require_qemu
from gdbext import cli
from gdbext.plugin.host import Host
from gdbext_dump.dump import open_dump

CHECKWX = "ptdump_walk_pgd_level_checkwx"
CHECKWX_USER = "ptdump_walk_user_pgd_level_checkwx"
SYMBOLS = (CHECKWX, CHECKWX_USER)

#: The kernel's W+X lines on the console, timestamp dropped.
KERNEL_LINE = re.compile(
    r"^(?:\[\s*[0-9.]+\]\s*)?"
    r"(x86/mm: (?:Checked W\+X mappings: .*|Checking user space page tables))\s*$",
    re.M,
)
PASSED = "x86/mm: Checked W+X mappings: passed, no W+X pages found."
FAILED = re.compile(r"x86/mm: Checked W\+X mappings: FAILED, ([0-9]+) W\+X pages found\.")

SYMBOL_LINE = "GDBEXT-SYM"
DISCOVERY_INIT = f"""#!/bin/sh
mount -t proc proc /proc
/bin/busybox grep -E ' ({"|".join(SYMBOLS)})$' /proc/kallsyms | while read addr kind name; do
  echo "{SYMBOL_LINE} $name $addr"
done
echo "{READY_MARKER}"
while :; do /bin/busybox sleep 3600; done
"""

#: The frozen configurations: ``nokaslr`` (the default) keeps the discovered addresses right.
CASES: dict[str, GuestConfig] = {
    "4level": GuestConfig(cpu="qemu64", quiet=False),
    "la57": GuestConfig(cpu="max", quiet=False),
    "pti": GuestConfig(cpu="qemu64", pti=True, quiet=False),
    "nx-off": GuestConfig(cpu="qemu64,-nx", quiet=False),
    #: ptdump counts not-present leaf entries (see :func:`test_ptdump_counts_not_present_leaves`).
    "pti-nx-off": GuestConfig(cpu="qemu64,-nx", pti=True, quiet=False),
}

#: Seconds for a paused guest to reach the check.
HIT_TIMEOUT = 120.0

GDB = shutil.which("gdb")
GDBINIT = ROOT / "gdbext" / "gdbinit.py"
#: The cases whose last check also runs ``pt-audit`` live in GDB.
LIVE = ("4level", "la57", "pti", "nx-off", "pti-nx-off")
LIVE_MARK = "@@gdbext-live@@"


def kernel_lines(serial: str) -> list[str]:
    """The kernel's W+X lines in ``serial``, in order, without timestamps.

    >>> kernel_lines("[    1.9] x86/mm: Checked W+X mappings: passed, no W+X pages found.\\n")
    ['x86/mm: Checked W+X mappings: passed, no W+X pages found.']
    """
    return KERNEL_LINE.findall(serial)


# --- an independent W+X count: the raw tables, walked here ---------------------------------------

PRESENT, RW, PSE = 1 << 0, 1 << 1, 1 << 7
NX = 1 << 63
ENTRY_ADDR = ((1 << 52) - 1) & ~0xFFF
#: Top-level indices of the guard hole the kernel does not check (16 entries from the kernel
#: half's start, 4- and 5-level alike).
GUARD_HOLE = range(256, 272)


def raw_wx_pages(
    read: Callable[[int, int], bytes], root: int, levels: int, nxe: bool, *, present_only: bool
) -> int:
    """4 KiB pages whose leaf entry is writable and not no-execute along its whole path.

    ``present_only=False`` counts as Linux 6.1's ptdump does: any non-zero leaf entry, present
    or not (``note_page`` sees the flags of a not-present PTE too); ``True`` counts present
    leaves only. Subtrees are memoised by (table, level, permissions so far), so tables linked
    many times (ESPFIX) cost one walk.
    """
    memo: dict[tuple[int, int, bool, bool], int] = {}

    def walk(table: int, level: int, rw: bool, nx: bool, skip: range = range(0)) -> int:
        key = (table, level, rw, nx)
        if not skip and key in memo:
            return memo[key]
        total = 0
        for index, entry in enumerate(struct.unpack("<512Q", read(table, 4096))):
            if entry == 0 or index in skip or (present_only and not entry & PRESENT):
                continue
            eff_rw = rw and bool(entry & RW)
            eff_nx = nx or (nxe and bool(entry & NX))
            if level == 1 or (level in (2, 3) and entry & PSE):
                if eff_rw and not eff_nx:
                    total += 1 << (9 * (level - 1))
            elif entry & PRESENT:
                total += walk(entry & ENTRY_ADDR, level - 1, eff_rw, eff_nx)
        if not skip:
            memo[key] = total
        return total

    return walk(root, levels, True, False, GUARD_HOLE)


# --- freezing a guest at the check ---------------------------------------------------------------


@dataclass
class Frozen:
    """A guest's dumps at its checks (by function name), its serial log to ``/init`` and, with
    ``gdb`` installed, the output of ``pt-audit --rules wx`` (text, then ``--json``) in the
    real GDB at its last check."""

    name: str
    dumps: dict[str, Path]
    serial: str
    seconds: float
    live: tuple[str, str] | None = None

    @property
    def lines(self) -> list[str]:
        return kernel_lines(self.serial)


def discover_symbols() -> dict[str, int]:
    """Boot once and read :data:`SYMBOLS` from the guest's ``/proc/kallsyms`` (as root)."""
    config = GuestConfig(init=DISCOVERY_INIT)
    with QemuGuest(config) as guest:
        found = re.findall(rf"^{SYMBOL_LINE} (\S+) ([0-9a-f]+)\s*$", guest.serial_log(), re.M)
    symbols = {name: int(addr, 16) for name, addr in found}
    missing = [s for s in SYMBOLS if not symbols.get(s)]
    if missing:
        pytest.fail(f"kallsyms of the guest has no (or zero) address for {', '.join(missing)}")
    return symbols


def freeze(name: str, config: GuestConfig, symbols: dict[str, int], outdir: Path) -> Frozen:
    """Boot ``config`` paused, dump at each W+X check, run to ``/init``; the dumps and log."""
    started = time.monotonic()
    checks = [CHECKWX, CHECKWX_USER] if config.pti else [CHECKWX]
    dumps: dict[str, Path] = {}
    with QemuGuest(replace(config, paused=True)) as guest:
        with GdbStub.connect(guest.gdb_port) as stub:
            for function in checks:
                addr = symbols[function]
                stub.hbreak(addr)
                stub.cont()
                pc = stub.wait_stop(HIT_TIMEOUT)
                assert pc == addr, f"{name}: stopped at 0x{pc:x}, not at {function}"
                dumps[function] = outdir / f"{name}-{function}.elf"
                guest.dump_elf(dumps[function], vmcoreinfo=False)
                stub.delete(addr)
            if GDB is None or name not in LIVE:
                stub.detach()
        # Closed without detaching, the stub leaves the VM stopped for GDB (which detaches).
        live = live_pt_audit(guest.gdb_port) if GDB is not None and name in LIVE else None
        if "running" not in guest.hmp("info status"):
            guest.cont()  # GDB failed before its detach: the live check fails, not the boot
        guest.wait_ready()
        serial = guest.serial_log()
    return Frozen(name, dumps, serial, time.monotonic() - started, live)


def live_pt_audit(port: int) -> tuple[str, str]:
    """``pt-audit --rules wx`` and ``pt-audit --rules wx --json`` in the real GDB attached to
    the stopped guest (backend ``gdb``: memory and registers through the gdbstub); GDB
    detaches at the end, and the VM runs on."""
    assert GDB is not None
    argv = [GDB, "-nx", "-batch", "-ex", f"source {GDBINIT}",
            "-ex", f"target remote 127.0.0.1:{port}"]  # fmt: skip
    for command in ("pt-audit --rules wx", "pt-audit --rules wx --json"):
        argv += ["-ex", f"echo {LIVE_MARK}\\n", "-ex", command]
    argv += ["-ex", f"echo {LIVE_MARK}\\n", "-ex", "detach"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    parts = proc.stdout.split(LIVE_MARK + "\n")
    if len(parts) != 4:
        return proc.stdout + proc.stderr, ""
    return parts[1], parts[2]


@pytest.fixture(scope="session")
def checkwx_symbols(request: pytest.FixtureRequest) -> dict[str, int]:
    """The check functions' addresses: pytest's cache (same kernel file) or a discovery boot."""
    require_qemu()
    kernel = find_kernel()
    stat = kernel.stat()
    key = f"gdbext/checkwx-symbols/{kernel.name}"
    stamp = [str(kernel.resolve()), stat.st_size, stat.st_mtime_ns]
    cache = getattr(request.config, "cache", None)  # None with -p no:cacheprovider
    cached = cache.get(key, None) if cache is not None else None
    if isinstance(cached, dict) and cached.get("kernel") == stamp:
        return {k: int(v) for k, v in cached["symbols"].items()}
    symbols = discover_symbols()
    if cache is not None:
        cache.set(key, {"kernel": stamp, "symbols": symbols})
    return symbols


@pytest.fixture(scope="module")
def frozen(
    checkwx_symbols: dict[str, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Frozen]]:
    """Every case of :data:`CASES` frozen at its checks, two guests at a time."""
    outdir = tmp_path_factory.mktemp("checkwx")
    with ThreadPoolExecutor(max_workers=2) as pool:
        # The PTI guests take longest (two checks, two dumps): first, for a shorter wall time.
        order = sorted(CASES.items(), key=lambda item: not item[1].pti)
        futures = {
            name: pool.submit(freeze, name, config, checkwx_symbols, outdir)
            for name, config in order
        }
        result = {name: future.result() for name, future in futures.items()}
    took = ", ".join(f"{f.name} {f.seconds:.1f} s" for f in result.values())
    print(f"\n[checkwx] {took}", file=sys.stderr)
    yield result
    for f in result.values():
        for path in f.dumps.values():
            path.unlink(missing_ok=True)


# --- the audit ----------------------------------------------------------------------------------


def audit_lines(dump: Path, *extra: str) -> tuple[list[str], list[str]]:
    """The W+X lines of ``gdbext audit DUMP --rules wx``: from the text output, and the JSON
    summary's ``"wx"``."""
    argv = ["audit", str(dump), "--rules", "wx", *extra]
    text, js = io.StringIO(), io.StringIO()
    assert cli.run(argv, Host.create(), text) == 0
    assert cli.run([*argv, "--json"], Host.create(), js) == 0
    text_lines = [line for line in text.getvalue().splitlines() if line.startswith("x86/mm: ")]
    return text_lines, list(json.loads(js.getvalue())["summary"]["wx"])


def audit_json(dump: Path) -> dict[str, Any]:
    """``gdbext audit DUMP --rules wx --json``, parsed."""
    out = io.StringIO()
    assert cli.run(["audit", str(dump), "--rules", "wx", "--json"], Host.create(), out) == 0
    doc: dict[str, Any] = json.loads(out.getvalue())
    return doc


def raw_count(dump: Path, *, user: bool, present_only: bool) -> int:
    target = open_dump(str(dump))
    try:
        cpu = target.cpu(0)
        assert cpu.cr3 is not None
        root = (cpu.cr3 & ENTRY_ADDR) | (0x1000 if user else 0)
        read = target.mapper.read
        return raw_wx_pages(read, root, cpu.levels, cpu.nxe, present_only=present_only)
    finally:
        if target.close is not None:
            target.close()


def counts(lines: list[str]) -> list[int]:
    """The page counts of the verdict lines (0 for passed)."""
    out = []
    for line in lines:
        m = FAILED.fullmatch(line)
        if m is not None:
            out.append(int(m.group(1)))
        elif line == PASSED:
            out.append(0)
    return out


@pytest.mark.qemu
def test_kernel_printed_its_verdicts(frozen: dict[str, Frozen]) -> None:
    """The guests checked what each configuration should: PTI twice, no NX a failure."""
    lines = {name: f.lines for name, f in frozen.items()}
    assert lines["4level"] == [PASSED]
    assert lines["la57"] == [PASSED]
    assert lines["pti"] == [PASSED, "x86/mm: Checking user space page tables", PASSED]
    assert len(lines["nx-off"]) == 1 and counts(lines["nx-off"])[0] > 0


@pytest.mark.qemu
@pytest.mark.parametrize("name", ["4level", "la57", "nx-off"])
def test_audit_verdict_equals_kernel(frozen: dict[str, Frozen], name: str) -> None:
    case = frozen[name]
    text, js = audit_lines(case.dumps[CHECKWX])
    assert text == case.lines
    assert js == case.lines
    # The dumps have no EFER: NXE is inferred from the tables.
    nxe = audit_json(case.dumps[CHECKWX])["summary"]["nxe"]
    assert nxe == ("inferred off: no entry uses NX" if name == "nx-off" else
                   "inferred on: NX bits in use")  # fmt: skip


@pytest.mark.qemu
def test_audit_verdicts_equal_kernel_under_pti(frozen: dict[str, Frozen]) -> None:
    """At the kernel PGD's check the audit's first line is the kernel's first; at the user
    PGD's check (the kernel PGD unchanged since) all three lines are the kernel's."""
    case = frozen["pti"]
    kernel = case.lines
    text, js = audit_lines(case.dumps[CHECKWX])
    assert text[:1] == js[:1] == kernel[:1]
    text, js = audit_lines(case.dumps[CHECKWX_USER])
    assert text == js == kernel


@pytest.mark.qemu
@pytest.mark.parametrize("name", ["4level", "la57", "pti", "nx-off"])
def test_raw_count_equals_kernel(frozen: dict[str, Frozen], name: str) -> None:
    """The independent walk counts the kernel's pages, present-only and ptdump's way alike."""
    case = frozen[name]
    expected = counts(case.lines)
    got = [raw_count(case.dumps[CHECKWX], user=False, present_only=True)]
    if CHECKWX_USER in case.dumps:
        got.append(raw_count(case.dumps[CHECKWX_USER], user=True, present_only=True))
    assert got == expected
    loose = [raw_count(case.dumps[CHECKWX], user=False, present_only=False)]
    assert loose == expected[:1]


@pytest.mark.qemu
def test_ptdump_counts_not_present_leaves(frozen: dict[str, Frozen]) -> None:
    """Linux 6.1's check counts not-present leaf entries by their flags, and so does the audit.

    Under PTI, ``free_kernel_image_pages`` unmaps the freed gaps of the kernel image with
    ``set_memory_np_noalias``: PRESENT cleared, RW kept. Without NX nothing marks them NX, so
    ptdump (which never tests PRESENT in ``note_page``) counts them as W+X, and, NX missing, it
    skips the user PGD's check. The present leaves alone give fewer pages; the audit's verdict
    is the kernel's, and its low findings list the not-present pages.
    """
    case = frozen["pti-nx-off"]
    (kernel,) = counts(case.lines)
    assert "x86/mm: Checking user space page tables" not in case.lines
    dump = case.dumps[CHECKWX]
    assert raw_count(dump, user=False, present_only=False) == kernel
    present = raw_count(dump, user=False, present_only=True)
    assert 0 < present < kernel
    # QEMU's ELF note has no EFER: no entry uses NX, so NXE is inferred off and, like the
    # kernel, the audit skips the user PGD's check: exactly the kernel's line.
    text, js = audit_lines(dump)
    assert text == js == case.lines
    doc = audit_json(dump)
    assert doc["summary"]["nxe"] == "inferred off: no entry uses NX"
    assert doc["summary"]["wx_pages"][0] == {
        "present": present,
        "not_present": kernel - present,
        "not_noted": 0,
    }
    absent = [f for f in doc["findings"] if f["severity"] == "low" and f["root"] == "kernel"]
    assert sum(f["pages"] for f in absent) == kernel - present
    assert all("not present" in f["message"] for f in absent)
    if GDB is not None:
        assert case.live is not None
        live_text, live_js = case.live
        assert [x for x in live_text.splitlines() if x.startswith("x86/mm: ")] == case.lines
        assert json.loads(live_js)["summary"]["wx"] == case.lines


@pytest.mark.qemu
@pytest.mark.parametrize("name", ["nx-off", "pti-nx-off"])
def test_ptdump_walk_series_add_up_to_the_kernels_count(
    frozen: dict[str, Frozen], name: str
) -> None:
    """The pages of the W+X series of the ptdump walk (:mod:`gdbext.linux.ptdump`, every
    section uncapped) are the kernel's count at its check: the walk ``--format ptdump`` prints
    applies the rules the kernel (and the audit's count) applies."""
    from gdbext.linux.layout import linux_layout
    from gdbext.linux.ptdump import PtdumpWalk, Series
    from gdbext.x86.paging import X86PageTable

    case = frozen[name]
    kernel = counts(case.lines)[0]
    target = open_dump(str(case.dumps[CHECKWX]))
    try:
        cpu = target.cpu(0)
        assert cpu.cr3 is not None
        pt = X86PageTable(target.mapper, cpu.cr3 & ENTRY_ADDR, cpu.levels, nxe=cpu.nxe)
        walk = PtdumpWalk(pt, linux_layout(cpu.levels), capped=False)
        pages = sum(
            r.size // 4096 for batch in walk.batches() for r in batch if type(r) is Series and r.wx
        )
    finally:
        if target.close is not None:
            target.close()
    assert pages == kernel > 0


@pytest.mark.qemu
@pytest.mark.parametrize("name", LIVE[:4])
def test_live_pt_audit_in_gdb_equals_kernel(frozen: dict[str, Frozen], name: str) -> None:
    """``pt-audit`` in GDB at the last check (under PTI the user PGD's: the kernel PGD is as
    at the first) prints the kernel's line(s)."""
    if GDB is None:
        pytest.skip("no gdb (GDBEXT_REQUIRE_QEMU=1 requires it)")
    case = frozen[name]
    assert case.live is not None
    text, js = case.live
    assert [line for line in text.splitlines() if line.startswith("x86/mm: ")] == case.lines, text
    assert json.loads(js)["summary"]["wx"] == case.lines


# --- the committed fixtures ---------------------------------------------------------------------

FIXTURES = ("4level", "kaslr-pti", "la57")


@pytest.mark.parametrize("name", FIXTURES)
def test_committed_dump_gives_the_kernels_verdict(
    kernel_dump: Callable[[str], Path], name: str
) -> None:
    kernel = kernel_lines((KERNELS / f"{name}.serial.log").read_text())
    assert kernel and all(line == PASSED or "Checking user" in line for line in kernel)
    text, js = audit_lines(kernel_dump(name))
    assert text == kernel
    assert js == kernel


def test_kernel_lines_parse() -> None:
    serial = (
        "[    1.745540] x86/mm: Checked W+X mappings: passed, no W+X pages found.\n"
        "[    1.746027] x86/mm: Checking user space page tables\n"
        "[    1.9] x86/mm: Checked W+X mappings: FAILED, 36164 W+X pages found.\n"
        "[    0.7] x86/mm: Memory block size: 128MB\n"
    )
    lines = kernel_lines(serial)
    assert lines == [PASSED, "x86/mm: Checking user space page tables",
                     "x86/mm: Checked W+X mappings: FAILED, 36164 W+X pages found."]  # fmt: skip
    assert counts(lines) == [0, 36164]
