"""Commands at one stop share the page table and Linux's layout (the target's stop cache),
and see a change of memory or CPU state once the live backend clears it.

The fake stub (:class:`support.fakestub.FakeStub`) stands for QEMU's gdbstub; the simulator's
memory behind it is the reference.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from support.fakestub import opened_state, stub_for
from support.fakestub import sim as sim  # the fixture

from gdbext.cpu import CpuState
from gdbext.frontend.commands import RootOptions, WalkOptions, translate, walk
from gdbext.plugin.target import Target
from gdbext.x86.records import LeafRun
from gdbext_gdbstub.options import LiveOptions


def leaves(target: Target, root: RootOptions | None = None) -> list[tuple[int, int, int, int]]:
    """The leaf runs of a walk of ``target``."""
    root = root or RootOptions()
    return [
        (r.vaddr, r.paddr, r.count, r.entry)
        for r in walk(target, WalkOptions(root=root)).runs()
        if type(r) is LeafRun
    ]


def scoped(target: Target) -> AbstractContextManager[None]:
    """``target``'s command scope (a live target has one)."""
    scope = target.command_scope
    assert scope is not None
    return scope()


def fresh(sim: Target) -> Target:
    """The simulator's memory and CPUs as a target with nothing cached (the reference)."""
    return Target("sim", "reference", sim.mapper, sim.cpus, ram=sim.ram)


def test_commands_share_the_page_table_and_layout_until_the_stop_ends(sim: Target) -> None:
    """Two walks at one stop: the second reads nothing and reuses the first one's page table
    and layout; a change of memory (as a GDB write, after which GDB's ``memory_changed``
    handler invalidates the state) and a new stop are seen, equal to a fresh walk of the
    simulator's memory."""
    stub = stub_for(sim)
    state, target = opened_state(stub)
    with scoped(target):
        first = leaves(target)
        layout = walk(target).layout
    assert first == leaves(sim)
    reads = len(stub.reads)
    again = state.open(LiveOptions())
    assert again.stop_cache is target.stop_cache
    with scoped(again):
        assert leaves(again) == first
        assert walk(again).page_table is walk(target).page_table
        assert walk(again).layout is layout
    assert len(stub.reads) == reads

    # Flip the writable bit of the first 4 KiB leaf, in the memory behind the stub.
    run = next(r for r in walk(sim).runs() if type(r) is LeafRun and r.page_size == 4096)
    found = translate(sim, [run.vaddr]).outcomes[0].translation
    assert found is not None
    pte_at = found.steps[-1].table + 8 * found.steps[-1].index
    pte = int.from_bytes(sim.mapper.read(pte_at, 8), "little")
    sim.mapper.write(pte_at, (pte ^ 2).to_bytes(8, "little"))
    state.invalidate()
    target = state.open(LiveOptions())
    with scoped(target):
        changed = leaves(target)
    assert changed != first and changed == leaves(fresh(sim))
    sim.mapper.write(pte_at, pte.to_bytes(8, "little"))
    state.invalidate()  # a new stop
    with scoped(target):
        assert leaves(state.open(LiveOptions())) == first


def test_another_cr3_at_the_same_stop_is_another_page_table(sim: Target) -> None:
    """A register write LLDB reports no event for (``forget_cpus``): the page table follows
    CR3, and the walk equals the simulator's of that root (a copy of the top table without
    its user half)."""
    stub = stub_for(sim)
    state, target = opened_state(stub)
    with scoped(target):
        first = leaves(target)
    cpu = stub.cpus[0]
    assert sim.frame_allocator is not None and cpu.root is not None
    root = sim.frame_allocator.allocate_frame()
    assert root is not None
    top = sim.mapper.read(cpu.root, 4096)
    sim.mapper.write(root, bytes(2048) + top[2048:])
    other = CpuState(cr0=cpu.cr0, cr3=root, cr4=cpu.cr4, efer=cpu.efer)
    stub.cpus = [other]
    state.forget_cpus()
    target = state.open(LiveOptions())
    with scoped(target):
        assert walk(target).page_table.root == root
        assert leaves(target) == leaves(fresh(sim), RootOptions(cr3=root)) != first
