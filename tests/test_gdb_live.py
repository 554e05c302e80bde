"""The live GDB backend in the real ``gdb`` against real kernels under QEMU.

Each test writes a GDB Python script, runs ``gdb -nx -batch -ex 'target remote :PORT' -x
script.py`` (with this venv's site-packages and the repository on ``PYTHONPATH``) and reads the
``RESULT {json}`` lines the script prints. Values are checked against what QEMU says at the same
stop (``monitor xp``, ``monitor info registers``, ``monitor info tlb``, ``maintenance packet
qqemu.PhyMemMode``), never against gdbext itself.

The session guests are shared: each test stops its guest first (GDB's detach resumes it) and
leaves it stopped with PhyMemMode 0. The kill test boots its own two-vCPU guest.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sysconfig
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from conftest import require_qemu

if TYPE_CHECKING:
    from qemu_guest import QemuGuest

pytestmark = pytest.mark.qemu

REPO = Path(__file__).resolve().parent.parent
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


# --- PhyMemMode ---------------------------------------------------------------------------------


@pytest.mark.parametrize("start", [0, 1])
def test_phymem_mode_is_back_after_every_operation(
    guest4: QemuGuest, tmp_path: Path, start: int
) -> None:
    body = f"""
START = {start}
packet("Qqemu.PhyMemMode:%d" % START)
target = open_target()
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
target = open_target()
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
target = open_target()
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
target = open_target()
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


# --- the cache ----------------------------------------------------------------------------------


def test_cache_is_dropped_on_continue_and_interrupt(guest4: QemuGuest, tmp_path: Path) -> None:
    """A PTE changed behind GDB's back (a raw ``M`` packet fires no GDB event) shows only after
    ``continue`` and an interrupt; the walk then equals a fresh ``info tlb``."""
    body = """
from gdbext.render.qemu_tlb import render_walk

target = open_target()
st = state()

def tlb(t):
    with t.command_scope():
        return list(render_walk(walk(t)))

def qemu_tlb():
    return [line for line in monitor("info tlb").splitlines() if line.strip()]

first = tlb(target)
out = {"first_equal": first == qemu_tlb(), "lines": len(first)}
# An empty slot in a user page table of the current CR3, next to a mapped page.
run = next(r for r in walk(target).runs()
           if type(r) is LeafRun and r.page_size == 4096 and r.vaddr < 1 << 47)
table = translate(target, [run.vaddr]).outcomes[0].translation.steps[-1].table
entries = [int.from_bytes(target.mapper.read(table + 8 * i, 8), "little") for i in range(512)]
index = entries.index(0)
vaddr = (run.vaddr & ~0x1FFFFF) + index * 4096
pte = (run.paddr & ~0xFFF) | (1 << 63) | 0x5  # present, user, NX: read-only data

def poke(value):  # behind GDB's back: no memory_changed event
    packet("Qqemu.PhyMemMode:1")
    packet("M%x,8:%s" % (table + 8 * index, value.to_bytes(8, "little").hex()))
    packet("Qqemu.PhyMemMode:0")

poke(pte)
reads = st.stats.reads
target = open_target()
tlb(target)
out["served_from_cache"] = st.stats.reads == reads
print("CONTINUING", flush=True)
gdb.execute("continue")
target = open_target()
after = tlb(target)
fresh = qemu_tlb()
out["after_equal"] = after == fresh
out["new_line"] = "%016x: %016x X------U-" % (vaddr, run.paddr & ~0xFFF)
out["new_in_after"] = out["new_line"] in after
out["new_in_first"] = out["new_line"] in first
out["cr3"] = target.cpu(0).cr3
out["info"] = monitor("info registers")
poke(0)
target = open_target()
gdb.execute("maintenance packet Qqemu.PhyMemMode:0", to_string=True)
result(out)
"""

    def interrupt(line: str, proc: subprocess.Popen[str]) -> None:
        if line == "CONTINUING":
            time.sleep(0.7)
            guest4.stop()  # QEMU reports the stop to GDB, whose `continue` returns

    (out,) = run_gdb_interactively(guest4.gdb_port, body, tmp_path, interrupt)
    assert out["first_equal"] and out["lines"] > 1000
    assert out["served_from_cache"]
    assert out["new_in_after"] and not out["new_in_first"], out["new_line"]
    assert out["after_equal"]
    assert out["cr3"] == registers_of(out["info"])["cr3"]


def test_cache_is_dropped_on_gdb_writes_and_handlers_are_registered_once(
    guest4: QemuGuest, tmp_path: Path
) -> None:
    body = f"""
target = open_target()
target = open_target()
st = state()
assert st is state()
leaf_runs(target)
counts = [st.stats.invalidations]
gdb.execute("set $cr3 = $cr3")  # a register write: register_changed
counts.append(st.stats.invalidations)
cached_after_register = len(st.mapper.cache)
leaf_runs(target)
root = target.cpu(0).root
addr = {DIRECT_MAP_4L:#x} + root
value = int(gdb.parse_and_eval("*(unsigned char *)%d" % addr))
gdb.execute("set {{unsigned char}}%d = %d" % (addr, value))  # the same byte: memory_changed
counts.append(st.stats.invalidations)
out = {{"counts": counts, "cached_after_register": cached_after_register,
       "cached_after_write": len(st.mapper.cache),
       "handlers": len(gdb_link._HANDLERS), "states": len(gdb_link._STATES)}}
leaf_runs(target)
gdb.execute("disconnect", to_string=True)  # the connection goes: its state and handlers too
out["after_disconnect"] = [len(gdb_link._HANDLERS), len(gdb_link._STATES)]
gdb.execute("target remote 127.0.0.1:{guest4.gdb_port}", to_string=True)
target = open_target()
out["new_state"] = [state() is not st, len(state().mapper.cache), len(gdb_link._HANDLERS)]
result(out)
"""
    (out,) = run_gdb(guest4.gdb_port, body, tmp_path)
    a, b, c = out["counts"]
    assert (b - a, c - b) == (1, 1)
    assert out["cached_after_register"] == 0 and out["cached_after_write"] == 0
    assert (out["handlers"], out["states"]) == (1, 1)
    assert out["after_disconnect"] == [0, 0]
    assert out["new_state"] == [True, 0, 1]


def test_a_gdb_write_between_two_walks_at_one_stop_is_seen(
    guest4: QemuGuest, tmp_path: Path
) -> None:
    """The commands' per-stop cache (page tables, their summaries, the layout) goes with GDB's
    ``memory_changed``: a PTE written with ``set`` between two walks at one stop shows in the
    second, which equals ``info tlb`` then; written back, the walk is the first again."""
    body = f"""
from gdbext.render.qemu_tlb import render_walk

def tlb(t):
    with t.command_scope():
        return list(render_walk(walk(t)))

def qemu_tlb():
    return [line for line in monitor("info tlb").splitlines() if line.strip()]

target = open_target()
first = tlb(target)
again = tlb(open_target())
out = {{"first_equal": first == qemu_tlb(), "again_equal": again == first}}
run = next(r for r in walk(target).runs()
           if type(r) is LeafRun and r.page_size == 4096 and r.vaddr < 1 << 47)
table = translate(target, [run.vaddr]).outcomes[0].translation.steps[-1].table
entries = [int.from_bytes(target.mapper.read(table + 8 * i, 8), "little") for i in range(512)]
index = entries.index(0)
vaddr = (run.vaddr & ~0x1FFFFF) + index * 4096
pte = (run.paddr & ~0xFFF) | (1 << 63) | 0x5  # present, user, NX: read-only data
addr = {DIRECT_MAP_4L:#x} + table + 8 * index
gdb.execute("set {{unsigned long}}%d = 0x%x" % (addr, pte))  # memory_changed
after = tlb(open_target())
out["new_line"] = "%016x: %016x X------U-" % (vaddr, run.paddr & ~0xFFF)
out["new_in_first"] = out["new_line"] in first
out["new_in_after"] = out["new_line"] in after
out["after_equal"] = after == qemu_tlb()
gdb.execute("set {{unsigned long}}%d = 0" % addr)
out["restored"] = tlb(open_target()) == first
result(out)
"""
    (out,) = run_gdb(guest4.gdb_port, body, tmp_path)
    assert out["first_equal"] and out["again_equal"]
    assert out["new_in_after"] and not out["new_in_first"], out["new_line"]
    assert out["after_equal"] and out["restored"]


# --- a dying target -------------------------------------------------------------------------------


def test_two_vcpus_then_qemu_killed_mid_read_is_one_clean_error(tmp_path: Path) -> None:
    require_qemu()
    if GDB is None:
        pytest.skip("no gdb")
    from qemu_guest import GuestConfig, QemuGuest

    body = """
target = open_target()
gdb.execute("thread 2", to_string=True)
target = open_target()
cpus = [[c.cr0, c.cr3, c.cr4, c.efer] for c in target.cpus]
out = {"cpus": cpus, "selected_cpu": target.facts.selected_cpu,
       "thread_after": gdb.selected_thread().num}
infos = []
for n in range(len(cpus)):
    monitor("cpu %d" % n)
    infos.append(monitor("info registers"))
monitor("cpu 0")
gdb.execute("thread 1", to_string=True)
out["infos"] = infos
print("READING", flush=True)
started = time.time()
try:
    with target.command_scope():
        while time.time() - started < 60:
            target.mapper.read(0x100000, 0x80000)
    out["error"] = None
except GdbextError as exc:
    out["error"] = [type(exc).__name__, str(exc)]
out["seconds"] = time.time() - started
out["later"] = gdb.execute("print 6*7", to_string=True).strip()
try:
    open_target()
except GdbextError as exc:
    out["reopen"] = str(exc)
result(out)
"""
    with QemuGuest(GuestConfig(cpu="qemu64", smp=2)) as guest:
        pid = guest.pid

        def kill(line: str, proc: subprocess.Popen[str]) -> None:
            if line == "READING":
                time.sleep(0.5)
                os.kill(pid, signal.SIGKILL)

        (out,) = run_gdb_interactively(guest.gdb_port, body, tmp_path, kill)
    assert out["selected_cpu"] == 1 and out["thread_after"] == 2
    assert out["cpus"] == [
        [r["cr0"], r["cr3"], r["cr4"], r["efer"]] for r in map(registers_of, out["infos"])
    ]
    kind, message = out["error"]
    assert kind == "TargetLostError" and "\n" not in message
    assert message.startswith("lost the connection to the target")
    assert out["seconds"] < 30
    assert out["later"] == "$1 = 42"
    assert "connect GDB first" in out["reopen"]
