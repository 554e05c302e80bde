"""The live backend over a fake gdbstub: the CPU states read per stop, a lost target, and the
GDB backend plugin.

The fake stub (:class:`support.fakestub.FakeStub`) behaves as QEMU's gdbstub does where it
matters.
"""

from __future__ import annotations

import pytest
from support.fakestub import opened, opened_state, stub_for
from support.fakestub import sim as sim  # the fixture

from gdbext.cpu import CpuState
from gdbext.errors import UsageError
from gdbext.frontend.commands import RootOptions, WalkOptions, walk
from gdbext.plugin.host import Host
from gdbext.plugin.target import OpenRequest, Target
from gdbext_gdb.plugin import open_gdb
from gdbext_gdbstub.link import TargetLostError
from gdbext_gdbstub.options import LiveOptions

# --- CPUs ------------------------------------------------------------------------------------


def test_cpus_are_the_threads_read_lazily_and_kept_for_the_stop(sim: Target) -> None:
    cpus = [CpuState(0x80050033, 0x1000 * (i + 1), 0x6F0, 0xD01) for i in range(3)]
    stub = stub_for(sim)
    stub.cpus = cpus
    stub.selected = 2
    calls: list[int | None] = []
    registers = stub.registers

    def counting(thread: int | None = None) -> dict[str, int]:
        calls.append(thread)
        return registers(thread)

    stub.registers = counting  # type: ignore[method-assign]
    state, target = opened_state(stub)
    assert len(target.cpus) == 3 and target.facts.selected_cpu == 1
    assert calls == []
    assert list(target.cpus) == cpus
    assert target.cpu(2) == cpus[2] and calls == [1, 2, 3]
    state.invalidate()
    assert target.cpu(1) == cpus[1] and calls == [1, 2, 3, 2]
    assert "3 (GDB threads 1-3" in target.details["vCPUs"]


def test_the_thread_list_is_asked_for_once_a_stop(sim: Target) -> None:
    """GDB asks the stub for its threads (qfThreadInfo...): once per stop is enough."""
    stub = stub_for(sim)
    asked: list[list[int]] = []
    numbers = stub.thread_numbers

    def counting() -> list[int]:
        asked.append(numbers())
        return asked[-1]

    stub.thread_numbers = counting  # type: ignore[method-assign]
    state, _ = opened_state(stub)
    state.open(LiveOptions())
    assert asked == [[1]]
    stub.cpus = [*stub.cpus, stub.cpus[0]]  # another vCPU, seen from the next stop on
    state.invalidate()
    assert len(state.open(LiveOptions()).cpus) == 2 and asked == [[1], [1, 2]]


def test_a_lost_target_is_one_clean_error(sim: Target) -> None:
    stub = stub_for(sim)
    state, _ = opened_state(stub)
    stub.alive = False
    with pytest.raises(TargetLostError, match="lost the connection"):
        state.open(LiveOptions())


# --- the plugin ------------------------------------------------------------------------------


def test_the_plugin_is_listed_and_opens_only_inside_gdb() -> None:
    info = Host.create().backend("gdb")
    assert {o.name for o in info.options} == {"direct_map", "read_via"}
    with pytest.raises(UsageError, match="works only inside GDB"):
        open_gdb(OpenRequest(None, {}))
    with pytest.raises(UsageError, match="works only inside GDB"):
        info.open(OpenRequest(None, {}))


def test_root_options_reach_other_cpus(sim: Target) -> None:
    cpus = [sim.cpus[0], CpuState(0x80050033, 0x5000, 0x6F0, 0xD01)]
    stub = stub_for(sim)
    stub.cpus = cpus
    target = opened(stub)
    assert walk(target, WalkOptions(root=RootOptions(cpu=1))).root == 0x5000


def test_the_kernels_symbols_make_it_linux_for_the_labels(sim: Target) -> None:
    """With vmlinux loaded in GDB (``linux_banner`` known), the target says it is Linux, and
    ``--labels auto`` turns the region labels on; without symbols it says nothing."""
    from gdbext.linux.detect import labels_wanted

    plain = opened(stub_for(sim))
    assert plain.facts.os is None and not labels_wanted("auto", plain.facts)
    stub = stub_for(sim)
    stub.symbols["linux_banner"] = 0
    linux = opened(stub)
    assert linux.facts.os == "linux" and labels_wanted("auto", linux.facts)
