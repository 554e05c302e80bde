"""The live GDB backend's per-stop state in the real ``gdb`` against real kernels under QEMU:
what is cached is dropped when the guest runs or GDB writes, and a target that dies mid-read is
one clean error.

Values are checked against what QEMU says at the same stop (``monitor info tlb``), never
against gdbext itself (``support/gdblive.py`` runs the scripts).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support.gdblive import DIRECT_MAP_4L, GDB, registers_of, run_gdb, run_gdb_interactively
from support.gdblive import guest4 as guest4  # the fixture

from conftest import require_qemu

if TYPE_CHECKING:
    from qemu_guest import QemuGuest

pytestmark = pytest.mark.qemu

#: What the cache tests' GDB scripts share: a walk in the ``info tlb`` format, QEMU's own
#: ``info tlb``, and an empty slot of a user page table next to a mapped 4 KiB page, with the
#: PTE (user, read-only, NX) that would map the slot's page to that page's frame.
TLB_HELPERS = """
from gdbext.render.qemu_tlb import render_walk

def tlb(t):
    with t.command_scope():
        return list(render_walk(walk(t)))

def qemu_tlb():
    return [line for line in monitor("info tlb").splitlines() if line.strip()]

def empty_user_slot(target):
    run = next(r for r in walk(target).runs()
               if type(r) is LeafRun and r.page_size == 4096 and r.vaddr < 1 << 47)
    table = translate(target, [run.vaddr]).outcomes[0].translation.steps[-1].table
    entries = [int.from_bytes(target.mapper.read(table + 8 * i, 8), "little")
               for i in range(512)]
    index = entries.index(0)
    vaddr = (run.vaddr & ~0x1FFFFF) + index * 4096
    pte = (run.paddr & ~0xFFF) | (1 << 63) | 0x5  # present, user, NX: read-only data
    return run, table, index, vaddr, pte
"""

# --- the cache ----------------------------------------------------------------------------------


def test_cache_is_dropped_on_continue_and_interrupt(guest4: QemuGuest, tmp_path: Path) -> None:
    """A PTE changed behind GDB's back (a raw ``M`` packet fires no GDB event) shows only after
    ``continue`` and an interrupt; the walk then equals a fresh ``info tlb``."""
    body = (
        TLB_HELPERS
        + """
target = open_target()
st = state()
first = tlb(target)
out = {"first_equal": first == qemu_tlb(), "lines": len(first)}
# An empty slot in a user page table of the current CR3, next to a mapped page.
run, table, index, vaddr, pte = empty_user_slot(target)

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
# GDB asked the stub for its threads as it presented the stop; the walk (read through the
# stub) asks for none.
import re, tempfile
log = tempfile.NamedTemporaryFile(suffix=".log", delete=False).name
for setting in (f"logging file {log}", "logging overwrite on", "logging redirect on",
                "logging debugredirect on", "logging enabled on", "debug remote 1"):
    gdb.execute("set " + setting)
target = open_target(read_via="stub")
after = tlb(target)
for setting in ("debug remote 0", "logging enabled off"):
    gdb.execute("set " + setting)
sent = re.findall(r"Sending packet: [$]([A-Za-z]+)", open(log).read())
out["thread_packets"] = [p for p in sent if "Thread" in p]
out["m_packets"] = sent.count("m")
out["vcpus"] = len(target.cpus)
out["info_cpus"] = monitor("info cpus")
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
    )

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
    assert out["m_packets"] > 10 and out["thread_packets"] == []
    assert out["vcpus"] == len(re.findall(r"CPU #\d+", out["info_cpus"])) >= 1


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
    body = (
        TLB_HELPERS
        + f"""
target = open_target()
first = tlb(target)
again = tlb(open_target())
out = {{"first_equal": first == qemu_tlb(), "again_equal": again == first}}
run, table, index, vaddr, pte = empty_user_slot(target)
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
    )
    (out,) = run_gdb(guest4.gdb_port, body, tmp_path)
    assert out["first_equal"] and out["again_equal"]
    assert out["new_in_after"] and not out["new_in_first"], out["new_line"]
    assert out["after_equal"] and out["restored"]


# --- a dying target -------------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["stub", "host"])
def test_two_vcpus_then_qemu_killed_mid_read_is_one_clean_error(tmp_path: Path, via: str) -> None:
    require_qemu()
    if GDB is None:
        pytest.skip("no gdb")
    from qemu_guest import GuestConfig, QemuGuest

    body = (
        f"VIA = {via!r}\n"
        + """
target = open_target(read_via=VIA)
gdb.execute("thread 2", to_string=True)
target = open_target(read_via=VIA)
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
    )
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
    assert kind == "TargetLostError" and "\n" not in message, message
    assert message.startswith("lost the connection to the target")
    assert out["seconds"] < 30
    assert out["later"] == "$1 = 42"
    # Through the stub GDB noticed; through the host path the backend did.
    assert ("connect GDB first" if via == "stub" else "is gone") in out["reopen"]
