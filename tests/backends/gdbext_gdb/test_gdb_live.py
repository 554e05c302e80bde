"""The live GDB backend in the real ``gdb`` against real kernels under QEMU.

Each test writes a GDB Python script, runs ``gdb -nx -batch -ex 'target remote :PORT' -x
script.py`` (with this venv's site-packages and the repository on ``PYTHONPATH``) and reads the
``RESULT {json}`` lines the script prints. Values are checked against what QEMU says at the same
stop (``monitor xp``, ``monitor info registers``, ``monitor info tlb``, ``maintenance packet
qqemu.PhyMemMode``), never against gdbext itself.

The session guests are shared: each test stops its guest first (GDB's detach resumes it) and
leaves it stopped with PhyMemMode 0.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support.gdblive import (
    DIRECT_MAP_4L,
    GDB,
    RAM_128M,
    parse_xp,
    registers_of,
    run_gdb,
    run_gdb_interactively,
)
from support.gdblive import guest4 as guest4  # the fixture

if TYPE_CHECKING:
    from qemu_guest import QemuGuest

pytestmark = pytest.mark.qemu

# --- PhyMemMode ---------------------------------------------------------------------------------


@pytest.mark.parametrize("start", [0, 1])
def test_phymem_mode_is_back_after_every_operation(
    guest4: QemuGuest, tmp_path: Path, start: int
) -> None:
    body = f"""
START = {start}
packet("Qqemu.PhyMemMode:%d" % START)
target = open_target(read_via="stub")
link = state().link
outcomes = {{}}

def op(name, fn):
    state().invalidate()
    before = state().bracket.stats.__dict__.copy()
    try:
        fn()
        outcome = "ok"
    except GdbextError as exc:
        outcome = type(exc).__name__
    except KeyboardInterrupt:
        outcome = "KeyboardInterrupt"
    after = state().bracket.stats.__dict__
    outcomes[name] = [mode(), outcome, {{k: after[k] - before[k] for k in after}}]

def whole_walk():
    leaf_runs(target)

def walk_and_translate():
    with target.command_scope():
        leaf_runs(target)  # a nested scope
        translate(target, [0xffffffff81000000])

def beyond_ram():
    with target.command_scope():
        target.mapper.read(0x100000, 8)
        target.mapper.read(0x8000000, 8)

real_read = link.read_memory

def failing(kind):
    def read_memory(addr, size):
        real_read(addr, size)
        if kind == "refused":
            raise TargetMemoryError(addr, size, "Cannot access memory")
        raise KeyboardInterrupt
    return read_memory

def injected(kind):
    def run():
        link.read_memory = failing(kind)
        try:
            with target.command_scope():
                target.mapper.read(0x100000, 8)
        finally:
            del link.read_memory
    return run

op("walk", whole_walk)
op("nested", walk_and_translate)
op("unscoped read", lambda: target.mapper.read(0x200000, 4096))
op("beyond RAM", beyond_ram)
op("refused", injected("refused"))
op("Ctrl-C", injected("interrupt"))
result(outcomes)
packet("Qqemu.PhyMemMode:0")
"""
    (outcomes,) = run_gdb(guest4.gdb_port, body, tmp_path)
    switched = 1 - start
    one = {"queries": 1, "switches": switched, "restores": switched}
    assert outcomes == {
        "walk": [start, "ok", one],
        "nested": [start, "ok", one],
        "unscoped read": [start, "ok", one],
        "beyond RAM": [start, "PhysMemoryError", one],
        "refused": [start, "PhysMemoryError", one],
        "Ctrl-C": [start, "KeyboardInterrupt", one],
    }


def test_ctrl_c_in_the_middle_of_reads_restores_the_mode(guest4: QemuGuest, tmp_path: Path) -> None:
    body = """
packet("Qqemu.PhyMemMode:0")
target = open_target(read_via="stub")
outcome, reads = "none", 0
print("READING", flush=True)
try:
    with target.command_scope():
        deadline = time.time() + 60
        while time.time() < deadline:
            target.mapper.read(0x100000, 0x80000)  # too big to cache: read every time
            reads += 1
except KeyboardInterrupt:
    outcome = "KeyboardInterrupt"
result([outcome, reads, mode(), gdb.execute("print 6*7", to_string=True).strip()])
"""

    def interrupt(line: str, proc: subprocess.Popen[str]) -> None:
        if line == "READING":
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)

    ((outcome, reads, mode, answer),) = run_gdb_interactively(
        guest4.gdb_port, body, tmp_path, interrupt
    )
    assert (outcome, mode, answer) == ("KeyboardInterrupt", 0, "$1 = 42")
    assert reads > 0


# --- reads ------------------------------------------------------------------------------------


def test_gdb_never_serves_bytes_cached_in_the_other_mode(guest4: QemuGuest, tmp_path: Path) -> None:
    """With a GDB memory region that caches (``mem ... cache``), GDB's dcache holds what it read
    virtually; the backend flushes it after each switch, so its physical read gets physical
    bytes and GDB's next virtual read virtual ones. Without the flush (the control) the
    physical read would get the cached virtual bytes."""
    body = """
target = open_target(read_via="stub")
st = state()
inferior = gdb.selected_inferior()
# A user page of the stopped process (busybox is linked at 0x400000), inside RAM physically too.
run = next(r for r in walk(target).runs()
           if type(r) is LeafRun and 0x100000 <= r.vaddr < 0x7000000 and r.page_size == 4096)
addr = run.vaddr
gdb.execute("set mem inaccessible-by-default off")
gdb.execute("mem 0x%x 0x%x rw cache" % (addr, addr + 0x1000))

def virtual():
    return inferior.read_memory(addr, 32).tobytes().hex()

out = {"x": monitor("x /4gx 0x%x" % addr), "xp": monitor("xp /4gx 0x%x" % addr)}
st.invalidate()
out["virtual"] = virtual()
with target.command_scope():
    out["physical"] = target.mapper.read(addr, 32).hex()
out["virtual_after"] = virtual()
st.link.flush_cache = lambda: None  # the control: no flush
st.invalidate()
with target.command_scope():
    out["physical_unflushed"] = target.mapper.read(addr, 32).hex()
del st.link.flush_cache
out["mode"] = mode()
result(out)
"""
    (out,) = run_gdb(guest4.gdb_port, body, tmp_path)
    virtual, physical = parse_xp(out["x"]).hex(), parse_xp(out["xp"]).hex()
    assert virtual != physical
    assert (out["virtual"], out["physical"], out["virtual_after"]) == (virtual, physical, virtual)
    assert out["physical_unflushed"] == virtual  # GDB's dcache: why the backend flushes
    assert out["mode"] == 0


def test_reads_equal_monitor_xp_on_every_path_and_beyond_ram_raises(
    guest4: QemuGuest, tmp_path: Path
) -> None:
    body = f"""
target = open_target(read_via="stub")
root = target.cpu(0).root
pages = [root, 0x1000000, 0x100000, 0x7fff000, 0x9f000]
out = {{"read_path": target.read_path, "ram": [[r.start, r.end] for r in target.ram],
       "pages": pages, "xp": [monitor("xp /512gx 0x%x" % p) for p in pages]}}
with target.command_scope():
    out["phymem"] = [target.mapper.read(p, 4096).hex() for p in pages]
    out["odd"] = target.mapper.read(0x1000ffc, 8).hex()
beyond = {{}}
for paddr, size in [(0x8000000, 8), (0xa0000, 8), (0x9fff8, 16), (0xfd000000, 4096)]:
    try:
        target.mapper.read(paddr, size)
        beyond[hex(paddr)] = "read"
    except PhysMemoryError as exc:
        beyond[hex(paddr)] = str(exc)
out["beyond"] = beyond
packet("Qqemu.PhyMemMode:1")  # what QEMU itself gives beyond RAM
out["raw_beyond"] = bytes(gdb.selected_inferior().read_memory(0x8000000, 8)).hex()
packet("Qqemu.PhyMemMode:0")
try:
    leaf_runs(target, WalkOptions(root=RootOptions(cr3=0x9000000)))
except GdbextError as exc:
    out["bad_root"] = str(exc)
out["runs_phymem"] = leaf_runs(target)

xp = open_target(read_via="xp")
out["xp_path"] = xp.read_path
out["via_xp"] = [xp.mapper.read(p, 4096).hex() for p in pages]
out["odd_xp"] = xp.mapper.read(0x1000ffc, 8).hex()
out["runs_xp"] = leaf_runs(xp)

packet("Qqemu.PhyMemMode:1")  # a mode left over: direct-map reads must still be virtual
dm = open_target(direct_map="{DIRECT_MAP_4L:#x}")
out["dm_path"] = dm.read_path
with dm.command_scope():
    # (the last page, 0x7fff000, is BIOS-reserved: Linux's direct map leaves it out)
    out["via_dm"] = [dm.mapper.read(p, 4096).hex() for p in pages[:-2] + pages[-1:]]
out["dm_mode_after"] = mode()
packet("Qqemu.PhyMemMode:0")
result(out)
"""
    (out,) = run_gdb(guest4.gdb_port, body, tmp_path)
    expected = [parse_xp(text).hex() for text in out["xp"]]
    assert all(len(bytes.fromhex(e)) == 4096 for e in expected)
    assert out["read_path"] == "PhyMemMode"
    assert out["phymem"] == expected
    assert out["odd"][:8] == expected[1][0xFFC * 2 :]
    assert out["odd"] == out["odd_xp"]
    assert out["ram"] == RAM_128M
    assert out["raw_beyond"] == "00" * 8  # QEMU's zeros, which the backend refuses
    for paddr in ("0x8000000", "0xa0000", "0x9fff8", "0xfd000000"):
        message = out["beyond"][paddr]
        assert message.startswith("physical read of ") and "outside RAM" in message, message
    assert "root table 0x9000000 is outside physical memory" in out["bad_root"]
    assert out["xp_path"] == "monitor xp"
    assert out["via_xp"] == expected
    assert out["runs_xp"] == out["runs_phymem"] and len(out["runs_phymem"]) > 100
    assert out["dm_path"] == f"direct map at {DIRECT_MAP_4L:#x}"
    assert out["via_dm"] == expected[:-2] + expected[-1:]
    assert out["dm_mode_after"] == 1


# --- CPU state ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["4level", "la57"])
def test_cpu_state_equals_info_registers(
    qemu_guest: Callable[[str], QemuGuest], tmp_path: Path, name: str
) -> None:
    if GDB is None:
        pytest.skip("no gdb")
    guest = qemu_guest(name)
    guest.stop()
    body = """
target = open_target()
cpu = target.cpu(0)
result({"cpus": len(target.cpus), "cpu": [cpu.cr0, cpu.cr3, cpu.cr4, cpu.efer],
        "levels": cpu.levels, "info": monitor("info registers"),
        "selected": target.facts.selected_cpu})
"""
    try:
        (out,) = run_gdb(guest.gdb_port, body, tmp_path)
    finally:
        guest.stop()
    regs = registers_of(out["info"])
    assert out["cpu"] == [regs["cr0"], regs["cr3"], regs["cr4"], regs["efer"]]
    assert out["cpus"] == 1 and out["selected"] == 0
    assert out["levels"] == (5 if name == "la57" else 4)
