"""The target's per-stop cache (:class:`gdbext.plugin.target.StopCache`) as commands use it:
one page table per root and paging mode, one layout, and nothing kept past :meth:`clear`."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

from gdbext.frontend.commands import RootOptions, WalkOptions, open_page_table, walk
from gdbext.linux.detect import detect_layout
from gdbext.plugin.target import StopCache, Target
from gdbext.x86.paging import X86PageTable
from gdbext.x86.records import LeafRun
from gdbext_sim.scenario import load_scenario

DEMO = Path(__file__).resolve().parents[2] / "fixtures" / "scenarios" / "demo.json"


def runs(target: Target) -> list[LeafRun]:
    return [r for r in walk(target, WalkOptions()).runs() if type(r) is LeafRun]


def test_a_target_keeps_one_page_table_per_root_and_mode() -> None:
    target = dataclasses.replace(load_scenario(DEMO).to_target(), stop_cache=StopCache())
    assert target.stop_cache is not None
    pt = open_page_table(target)
    assert open_page_table(target) is pt
    assert open_page_table(target, RootOptions(cr3=pt.root)) is pt
    five = open_page_table(target, RootOptions(levels=5))
    assert five is not pt and five.levels == 5
    # The walks through the kept table equal a walk of a new, uncached one.
    fresh = X86PageTable(target.mapper, pt.root, pt.levels, nxe=pt.nxe)
    expected = [r for r in fresh.iter_runs() if type(r) is LeafRun]
    assert runs(target) == runs(target) == expected
    assert walk(target).layout is walk(target).layout
    assert walk(target).layout == detect_layout(fresh, target.facts)
    target.stop_cache.clear()
    assert open_page_table(target) is not pt


def test_a_target_without_a_stop_cache_reads_afresh_for_each_command() -> None:
    """The simulator's memory is anyone's to write: its target has no stop cache, so a change
    made through the mapper between two commands is seen by the second."""
    target = load_scenario(DEMO).to_target()
    assert target.stop_cache is None
    pt = open_page_table(target)
    assert open_page_table(target) is not pt
    first = runs(target)
    leaf = first[0]
    step = pt.translate(leaf.vaddr).steps[-1]
    slot = step.table + 8 * step.index
    entry = int.from_bytes(target.mapper.read(slot, 8), "little")
    target.mapper.write(slot, (entry ^ 2).to_bytes(8, "little"))
    assert runs(target) != first


def test_the_cache_is_bounded_and_makes_each_value_once() -> None:
    cache = StopCache(limit=2)
    made: list[int] = []

    def make(n: int) -> int:
        made.append(n)
        return n * 10

    got = [cache.get(n, functools.partial(make, n)) for n in (1, 2, 1, 3, 1)]
    assert got == [10, 20, 10, 30, 10]
    assert made == [1, 2, 3, 1]  # 1 was the oldest when 3 came
