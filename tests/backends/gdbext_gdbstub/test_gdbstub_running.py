"""A target that runs while it is read: the host path only, nothing sent to the stub.

The fake stub fails the test on any packet, monitor command, memory or register read while
its ``running`` is set (GDB would refuse them, or wait for a stop); this test process plays
QEMU as in ``test_gdbstub_hostread``, so the reads go through its own ``/proc/PID/mem``.
"""

from __future__ import annotations

import pytest
from support.fakestub import sim as sim  # the fixture
from test_gdbstub_hostread import HostStub, host_stub, open_host

from gdbext.cpu import CpuState
from gdbext.errors import InputError
from gdbext.frontend.commands import RootOptions, WalkOptions, open_page_table, walk
from gdbext.frontend.memread import ReadOptions, read_memory
from gdbext.plugin.target import Target
from gdbext_gdbstub.link import LiveTargetError
from gdbext_gdbstub.options import LiveOptions
from gdbext_gdbstub.state import LiveState

#: A page of the demo guest's RAM that the tests change "while the VM runs".
PAGE = 0x1000000


def resumed(stub: HostStub, state: LiveState) -> Target:
    """The VM resumed (GDB's resume event drops the stop's cache), then a command opens it."""
    stub.running = True
    state.invalidate()
    return state.open(LiveOptions())


def poke(stub: HostStub, paddr: int, data: bytes) -> None:
    """The guest writes ``data`` at ``paddr`` (in this process's copy of its RAM)."""
    assert stub.main is not None
    stub.main[paddr : paddr + len(data)] = data


def walk_lines(target: Target, root: RootOptions | None = None) -> list[object]:
    return list(walk(target, WalkOptions(root=root or RootOptions())).runs())


def test_a_running_target_is_read_through_the_host_path_and_sent_nothing(sim: Target) -> None:
    stub = host_stub(sim)
    state, stopped = open_host(stub)
    stop_cpu = stopped.cpus[0]
    expected = walk_lines(sim)
    sent, reads = len(stub.sent), len(stub.reads)
    target = resumed(stub, state)  # the stub fails the test on anything sent now
    assert target.read_path == stopped.read_path
    assert target.details["state"].startswith("running (reads from QEMU's memory while the VM")
    assert "each read is consistent only with itself" in target.details["state"]
    cr3 = f"CPU 0's CR3 0x{stop_cpu.cr3:x} is the default root"
    assert target.details["CPU state"].startswith("as read at the last stop")
    assert cr3 in target.details["CPU state"]
    assert target.cpus[0] == stop_cpu
    assert walk_lines(target) == expected  # the last stop's CR3, the tables read now
    data = read_memory(target, ReadOptions(PAGE, 0x3000, physical=True))
    assert b"".join(c.data for c in data.chunks() if hasattr(c, "data")) == sim.mapper.read(
        PAGE, 0x3000
    )
    dict(target.details)  # VMCOREINFO's search too: through the host path, with that CR3
    assert (len(stub.sent), len(stub.reads)) == (sent, reads)
    assert stub.mode == 0


def test_each_command_reads_the_moving_guest_afresh(sim: Target) -> None:
    stub = host_stub(sim)
    state, _ = open_host(stub)
    target = resumed(stub, state)
    before = target.mapper.read(PAGE, 8)
    poke(stub, PAGE, b"running!")
    assert target.mapper.read(PAGE, 8) == before  # one command: its own pages
    assert state.open(LiveOptions()).mapper.read(PAGE, 8) == b"running!"  # the next: afresh
    poke(stub, PAGE, b"stopped!")
    stub.running = False  # stopped again (GDB says nothing of a stop): nothing read while it
    target = state.open(LiveOptions())  # ran is kept, and the registers are read again
    assert target.mapper.read(PAGE, 8) == b"stopped!"
    assert "state" not in target.details
    assert target.cpus[0].cr3 == sim.cpus[0].cr3


def test_without_a_kept_cpu_state_a_root_must_be_given(sim: Target) -> None:
    stub = host_stub(sim)
    state, _ = open_host(stub)
    state.registers_changed()  # a register write at the stop: what was read is stale
    target = resumed(stub, state)
    assert target.cpus[0] == CpuState()
    assert target.details["CPU state"].startswith("unknown: registers cannot be read while")
    assert "give --cr3 ADDR, or --phys" in target.details["CPU state"]
    with pytest.raises(InputError, match=r"^CR3 is unknown \(CPU 0\); give .* --cr3 ADDR"):
        open_page_table(target)
    root = RootOptions(cr3=sim.cpus[0].cr3)
    assert walk_lines(target, root) == walk_lines(sim)
    assert target.mapper.read(PAGE, 64) == sim.mapper.read(PAGE, 64)


def test_a_host_path_never_checked_is_refused_with_the_reason(sim: Target) -> None:
    stub = host_stub(sim, running=True)
    with pytest.raises(LiveTargetError, match=r"^the target is running, and the host read path"):
        open_host(stub)
    assert stub.sent == [] and stub.reads == []
    with pytest.raises(LiveTargetError, match="was not checked yet: it is checked against the "):
        open_host(stub)


def test_a_host_path_that_was_unusable_is_refused_with_its_reason(sim: Target) -> None:
    stub = host_stub(sim, refuse="Memory at address 0x0 is not RAM\r\n")
    state, target = open_host(stub)
    assert target.read_path == "PhyMemMode"
    stub.running = True
    state.invalidate()
    with pytest.raises(LiveTargetError, match=r"is not usable: QEMU's monitor did not map 0x0"):
        state.open(LiveOptions())


@pytest.mark.parametrize("via", ["stub", "phymem", "xp"])
def test_the_stub_paths_refuse_a_running_target(sim: Target, via: str) -> None:
    stub = host_stub(sim)
    state, _ = open_host(stub)
    stub.running = True
    with pytest.raises(LiveTargetError, match=f"--read-via {via} reads through the gdbstub, "):
        state.open(LiveOptions(read_via=via))
    assert state.open(LiveOptions(read_via="host")).read_path.startswith("host memory")


def test_only_the_last_stops_cpu_states_are_kept(sim: Target) -> None:
    stub = host_stub(sim)
    state, _ = open_host(stub)  # stop A: the registers are read
    state.invalidate()  # resumed
    state.stopped()  # stop B, where no command read them
    target = resumed(stub, state)
    assert target.cpus[0] == CpuState()
    assert target.details["CPU state"].startswith("unknown")
    stub.running = False
    state.stopped()
    state.open(LiveOptions()).cpus[0]  # stop C: read
    state.forget_cpus()  # LLDB, at the next command at the same stop
    assert resumed(stub, state).cpus[0].cr3 == sim.cpus[0].cr3


def test_with_no_selected_thread_cpu_0_is_the_default(sim: Target) -> None:
    stub = host_stub(sim)
    state, _ = open_host(stub)
    stub.selected = None  # type: ignore[assignment]  # LLDB's while the process runs
    target = resumed(stub, state)
    assert f"CPU 0's CR3 0x{sim.cpus[0].cr3:x} is the default" in target.details["CPU state"]
    assert target.facts.selected_cpu is None and target.cpus[0].cr3 == sim.cpus[0].cr3
