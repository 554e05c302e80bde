"""The live backend over a fake gdbstub: the RAM check (QEMU's ``info mtree -f``), the per-stop
cache, the prefetch batching and the engine's prefetch hook.

The fake stub (:class:`support.fakestub.FakeStub`) behaves as QEMU's gdbstub does where it
matters.
"""

from __future__ import annotations

import pytest
from support.fakestub import MTREE, opened, opened_state, stub_for, table_pages
from support.fakestub import sim as sim  # the fixture

from gdbext.addr import AddrRange
from gdbext.errors import PhysMemoryError, ReadOnlyError
from gdbext.frontend.commands import WalkOptions, walk
from gdbext.permfilter import PermFilter
from gdbext.plugin.target import Target
from gdbext.x86.paging import X86PageTable
from gdbext.x86.records import LeafRun
from gdbext_gdbstub.mapper import LiveMapper
from gdbext_gdbstub.ram import parse_mtree_ram
from gdbext_sim.memory import SparsePhysMemory

# --- RAM -----------------------------------------------------------------------------------


def test_ram_from_mtree_and_reads_beyond_it_raise_before_anything_is_sent(sim: Target) -> None:
    stub = stub_for(sim)
    target = opened(stub)
    assert target.ram == [AddrRange(0, 0xA0000), AddrRange(0xC0000, 0x10000000)]
    stub.sent.clear()
    for paddr, size in [(0x10000000, 8), (0xFFFF000, 0x2000), (0xA0000, 8), (0x9FFF8, 16)]:
        with pytest.raises(PhysMemoryError, match="outside RAM"):
            target.mapper.read(paddr, size)
    assert stub.sent == [] and stub.reads == []


def test_unknown_ram_is_said_and_reads_are_not_checked(sim: Target) -> None:
    stub = stub_for(sim, has_monitor=False)
    target = opened(stub)
    assert target.ram is None
    assert "unknown" in target.details["RAM"]
    assert target.mapper.read(0x10000000, 8) == bytes(8)  # QEMU's zeros: nothing to check with


def test_mtree_parsing_keeps_only_the_memory_view_and_ram_blocks() -> None:
    text = MTREE.format(last=0x7FFFFFF) + (
        'FlatView #2\n AS "memory", root: other\n  0000000100000000-000000013fffffff '
        "(prio 0, ram): pc.ram @0000000080000000\n"
    )
    assert parse_mtree_ram(text) == [AddrRange(0, 0xA0000), AddrRange(0xC0000, 0x8000000)]
    big = (
        'FlatView #0\n AS "memory", root: system\n'
        "  0000000000000000-000000007fffffff (prio 0, ram): ram-below-4g\n"
        "  0000000100000000-000000017fffffff (prio 0, ram): ram-above-4g @0000000080000000 KVM\n"
    )
    assert parse_mtree_ram(big) == [AddrRange(0, 0x80000000), AddrRange(1 << 32, 0x180000000)]
    assert parse_mtree_ram("") == []


# --- cache and prefetch ----------------------------------------------------------------------


def test_pages_are_cached_for_one_stop(sim: Target) -> None:
    stub = stub_for(sim)
    state, target = opened_state(stub)
    target.mapper.read(0x1000000, 4096)
    target.mapper.read(0x1000010, 16)
    target.mapper.read(0x1000000, 0x2000)
    assert [a for a, _, _ in stub.reads] == [0x1000000, 0x1001000]
    state.invalidate()
    target.mapper.read(0x1000010, 16)
    assert [a for a, _, _ in stub.reads][-1] == 0x1000000
    big = target.mapper.read(0x100000, 0x100000)  # more pages than are cached per read
    assert big == sim.mapper.read(0x100000, 0x100000)
    assert stub.reads[-1][:2] == (0x100000, 0x100000)


def test_prefetch_reads_adjacent_pages_at_once_and_skips_cached_and_non_ram(sim: Target) -> None:
    stub = stub_for(sim)
    target = opened(stub)
    mapper = target.mapper
    assert isinstance(mapper, LiveMapper)
    mapper.read(0x1002000, 8)
    stub.reads.clear()
    mapper.prefetch([0x1003000, 0x1000000, 0x1001000, 0x1002000, 0x1001000, 0x1005000, 1 << 40])
    assert [(a, s) for a, s, _ in stub.reads] == [(0x1000000, 0x2000), (0x1003000, 0x1000),
                                                  (0x1005000, 0x1000)]  # fmt: skip
    assert stub.mode == 0
    stub.reads.clear()
    for page in (0x1000000, 0x1001000, 0x1003000, 0x1005000):
        assert mapper.read(page, 4096) == sim.mapper.read(page, 4096)
    assert stub.reads == []


def test_the_cache_is_bounded(sim: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gdbext_gdbstub.mapper.CACHE_PAGES", 4)
    stub = stub_for(sim)
    target = opened(stub)
    mapper = target.mapper
    assert isinstance(mapper, LiveMapper)
    mapper.prefetch([0x1000000 + i * 4096 for i in range(10)])
    assert len(mapper.cache) == 4
    for i in range(6):
        mapper.read(0x2000000 + i * 4096, 8)
    assert len(mapper.cache) == 4


def test_the_backend_never_writes(sim: Target) -> None:
    target = opened(stub_for(sim))
    with pytest.raises(ReadOnlyError):
        target.mapper.write(0x1000, b"x")


# --- the engine's prefetch hook --------------------------------------------------------------


class PrefetchRecorder:
    """The simulator's memory plus a prefetch that records what the walk announced."""

    def __init__(self, memory: SparsePhysMemory) -> None:
        self.memory = memory
        self.announced: list[list[int]] = []
        self.read_pages: list[int] = []

    def read(self, paddr: int, size: int) -> bytes:
        self.read_pages.append(paddr)
        return self.memory.read(paddr, size)

    def write(self, paddr: int, data: bytes) -> None:
        raise AssertionError("no writes")

    def prefetch(self, paddrs: list[int]) -> None:
        self.announced.append(list(paddrs))


@pytest.mark.parametrize(
    "options",
    [
        WalkOptions(),
        WalkOptions(range=AddrRange(0xFFFF_FFFF_8100_0000, 0xFFFF_FFFF_8120_1000)),
        WalkOptions(range=AddrRange(0x0, 0x401000)),
        WalkOptions(perm=PermFilter.parse("u")),
        WalkOptions(perm=PermFilter.parse("w,!x")),
    ],
)
def test_the_walk_announces_exactly_the_tables_it_then_reads(
    sim: Target, options: WalkOptions
) -> None:
    memory = sim.mapper
    assert isinstance(memory, SparsePhysMemory)
    rec = PrefetchRecorder(memory)
    target = Target("rec", "rec", rec, sim.cpus, ram=sim.ram)
    records = list(walk(target, options).runs())
    assert records == list(walk(sim, options).runs())
    announced = {p for batch in rec.announced for p in batch}
    root = sim.cpus[0].root
    assert announced == set(rec.read_pages) - {root}
    assert announced == table_pages(sim, options) - {root}
    # Batched per parent table: far fewer calls than tables.
    assert len(rec.announced) <= len(announced)


def test_a_live_walk_with_prefetch_reads_fewer_times_and_equals_the_simulator(sim: Target) -> None:
    stub = stub_for(sim)
    target = opened(stub)
    assert target.command_scope is not None
    with target.command_scope():
        live_runs = [r for r in walk(target).runs() if type(r) is LeafRun]
    assert live_runs == [r for r in walk(sim).runs() if type(r) is LeafRun]
    tables = table_pages(sim)
    assert set(target.mapper.cache) >= tables  # type: ignore[attr-defined]
    assert len(stub.reads) < len(tables)


def test_plain_mappers_are_untouched_by_the_hook(sim: Target) -> None:
    pt = X86PageTable(sim.mapper, sim.cpus[0].root or 0, 4)
    assert list(pt.iter_runs()) == list(walk(sim).runs())
