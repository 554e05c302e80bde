"""The live GDB backend without GDB: its logic over a fake gdbstub (:class:`FakeStub`).

The fake behaves as QEMU's gdbstub does where it matters: PhyMemMode is global state that
``qqemu.PhyMemMode`` / ``Qqemu.PhyMemMode:N`` query and set; in mode 1 reads are physical and
return zeros outside RAM; in mode 0 they are virtual (here: only the direct map); ``monitor xp``
and ``monitor info mtree -f`` print what QEMU prints. The tests check that the mode is back
after every operation (errors and Ctrl-C included), the RAM check, the per-stop cache, the
prefetch batching and the engine's prefetch hook, the three read paths and the CPU states.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gdbext.addr import AddrRange
from gdbext.cpu import CpuState
from gdbext.errors import PhysMemoryError, ReadOnlyError, UsageError
from gdbext.frontend.commands import RootOptions, WalkOptions, translate, walk
from gdbext.permfilter import PermFilter
from gdbext.plugin.host import Host
from gdbext.plugin.target import OpenRequest, Target
from gdbext.x86.paging import X86PageTable
from gdbext.x86.records import LeafRun
from gdbext_gdb.plugin import NAMING, open_gdb
from gdbext_gdbstub.link import LiveTargetError, TargetLostError, TargetMemoryError
from gdbext_gdbstub.mapper import LiveMapper
from gdbext_gdbstub.options import LiveOptions
from gdbext_gdbstub.ram import parse_mtree_ram
from gdbext_gdbstub.readpath import parse_xp
from gdbext_gdbstub.state import LiveState
from gdbext_sim.memory import SparsePhysMemory
from gdbext_sim.scenario import load_scenario

DEMO = Path(__file__).resolve().parent.parent / "fixtures" / "scenarios" / "demo.json"
DIRECT_MAP = 0xFFFF_8880_0000_0000

MTREE = """FlatView #0
 AS "memory", root: system
 AS "cpu-memory-0", root: system
 Root memory region: system
  0000000000000000-000000000009ffff (prio 0, ram): pc.ram
  00000000000a0000-00000000000bffff (prio 1, i/o): vga-lowmem
  00000000000c0000-00000000000cafff (prio 0, rom): pc.ram @00000000000c0000
  00000000000cb000-{last:016x} (prio 0, ram): pc.ram @00000000000cb000
  00000000fd000000-00000000fdffffff (prio 1, ram): vga.vram
  00000000fffc0000-00000000ffffffff (prio 0, rom): pc.bios

FlatView #1
 AS "I/O", root: io
 Root memory region: io
  0000000000000000-0000000000000007 (prio 0, i/o): dma-chan
"""


@dataclass
class FakeStub:
    """A :class:`~gdbext_gdbstub.link.DebuggerLink` over simulated RAM, as QEMU's gdbstub
    behaves."""

    memory: SparsePhysMemory
    mode: int = 0
    has_phymem: bool = True
    has_monitor: bool = True
    cpus: list[CpuState] = field(default_factory=lambda: [CpuState(0x80050033, 0x1000, 0x6F0)])
    selected: int = 1
    symbols: dict[str, int] = field(default_factory=dict)
    alive: bool = True
    #: Every packet and monitor command sent, in order.
    sent: list[str] = field(default_factory=list)
    reads: list[tuple[int, int, int]] = field(default_factory=list)  # (addr, size, mode)
    flushes: int = 0
    #: Called before each memory read (to inject errors).
    on_read: Callable[[int, int], None] | None = None
    on_packet: Callable[[str], None] | None = None

    def _ram(self, addr: int, size: int) -> bool:
        return any(r.start <= addr and addr + size <= r.end for r in self.memory.ram_ranges)

    def _phys(self, addr: int, size: int) -> bytes:
        out = bytearray()
        for a in range(addr, addr + size, 4096):
            n = min(4096 - (a & 4095), addr + size - a)
            out += self.memory.read(a, n) if self._ram(a, n) else bytes(n)  # QEMU: zeros
        return bytes(out[:size])

    def _check_alive(self) -> None:
        if not self.alive:
            raise TargetLostError("lost the connection to the target (Remote connection closed)")

    def read_memory(self, addr: int, size: int) -> bytes:
        self._check_alive()
        if self.on_read is not None:
            self.on_read(addr, size)
        self.reads.append((addr, size, self.mode))
        if self.mode == 1:
            return self._phys(addr, size)
        if addr >= DIRECT_MAP and addr + size <= DIRECT_MAP + self.memory.ram_size:
            return self._phys(addr - DIRECT_MAP, size)
        raise TargetMemoryError(addr, size, f"Cannot access memory at address 0x{addr:x}")

    def packet(self, text: str) -> str:
        self._check_alive()
        self.sent.append(text)
        if self.on_packet is not None:
            self.on_packet(text)
        if not self.has_phymem:
            return ""
        if text == "qqemu.PhyMemMode":
            return str(self.mode)
        if text.startswith("Qqemu.PhyMemMode:"):
            self.mode = int(text.rpartition(":")[2])
            return "OK"
        return ""

    def monitor(self, command: str) -> str:
        self._check_alive()
        self.sent.append("monitor " + command)
        if not self.has_monitor:
            raise LiveTargetError("monitor: Target does not support this command.")
        if command == "info mtree -f":
            return MTREE.format(last=self.memory.ram_size - 1).replace("\n", "\r\n")
        words = command.split()
        if words[0] == "xp":
            count = int(words[1][1:-2])
            addr = int(words[2], 16)
            lines = []
            for i in range(0, count, 2):
                a = addr + 8 * i
                if not self._ram(a, 8):
                    lines.append(f"{a:016x}: Cannot access memory")
                    break
                n = min(2, count - i)
                values = struct.unpack(f"<{n}Q", self.memory.read(a, 8 * n))
                lines.append(f"{a:016x}: " + " ".join(f"0x{v:016x}" for v in values))
            return "\r\n".join(lines) + "\r\n"
        raise LiveTargetError(f"monitor: unknown command {command!r}")

    def registers(self, thread: int | None = None) -> dict[str, int]:
        self._check_alive()
        cpu = self.cpus[(self.selected if thread is None else thread) - 1]
        regs = {"cr0": cpu.cr0, "cr3": cpu.cr3, "cr4": cpu.cr4, "efer": cpu.efer}
        return {k: v for k, v in regs.items() if v is not None}

    def thread_numbers(self) -> list[int]:
        return list(range(1, len(self.cpus) + 1))

    def selected_thread(self) -> int | None:
        return self.selected

    def flush_cache(self) -> None:
        self.flushes += 1

    def symbol_value(self, name: str) -> int | None:
        return self.symbols.get(name)

    def symbol_address(self, name: str) -> int | None:
        return 0xFFFFFFFF82000000 if name in self.symbols else None

    def connected(self) -> bool:
        return self.alive

    def mode_packets(self) -> list[str]:
        return [s for s in self.sent if "PhyMemMode" in s]


@pytest.fixture
def sim() -> Target:
    return load_scenario(DEMO).to_target()


def stub_for(sim: Target, **kwargs: object) -> FakeStub:
    memory = sim.mapper
    assert isinstance(memory, SparsePhysMemory)
    return FakeStub(memory, cpus=list(sim.cpus), **kwargs)  # type: ignore[arg-type]


def opened_state(stub: FakeStub, **options: str | None) -> tuple[LiveState, Target]:
    state = LiveState(stub, "remote :1234", NAMING)
    return state, state.open(LiveOptions.from_request(OpenRequest(None, options), NAMING))


def opened(stub: FakeStub, **options: str | None) -> Target:
    return opened_state(stub, **options)[1]


def table_pages(sim: Target, options: WalkOptions | None = None) -> set[int]:
    """The table pages a walk reads from the simulator (no prefetch there)."""
    read: set[int] = set()
    mem = sim.mapper

    class Recorder:
        def read(self, paddr: int, size: int) -> bytes:
            read.add(paddr)
            return mem.read(paddr, size)

        def write(self, paddr: int, data: bytes) -> None:
            raise AssertionError("no writes")

    rec = Target("sim", "rec", Recorder(), sim.cpus, ram=sim.ram)
    for _ in walk(rec, options or WalkOptions()).runs():
        pass
    return read


# --- PhyMemMode ----------------------------------------------------------------------------


@pytest.mark.parametrize("before", [0, 1])
def test_mode_is_back_after_a_command_and_each_bracket_sends_one_query_switch_restore(
    sim: Target, before: int
) -> None:
    stub = stub_for(sim, mode=before)
    target = opened(stub)
    stub.sent.clear()
    assert target.command_scope is not None
    with target.command_scope():
        with target.command_scope():  # re-entrant
            records = list(walk(target).runs())
        assert stub.mode == 1
        translate(target, [0xFFFFFFFF81000000])
    assert stub.mode == before
    expected = ["qqemu.PhyMemMode"] + (["Qqemu.PhyMemMode:1", "Qqemu.PhyMemMode:0"] * (1 - before))
    assert stub.mode_packets() == expected
    assert records == list(walk(sim).runs())
    # Every read went out in physical mode.
    assert {mode for _, _, mode in stub.reads} == {1}


def test_reads_outside_a_scope_bracket_themselves(sim: Target) -> None:
    stub = stub_for(sim)
    target = opened(stub)
    stub.sent.clear()
    assert target.mapper.read(0x1000000, 8) == sim.mapper.read(0x1000000, 8)
    assert stub.mode == 0
    assert stub.mode_packets() == ["qqemu.PhyMemMode", "Qqemu.PhyMemMode:1", "Qqemu.PhyMemMode:0"]
    stub.sent.clear()
    target.mapper.read(0x1000008, 8)  # cached: nothing sent at all
    assert stub.sent == []


def test_a_scope_without_uncached_reads_sends_nothing(sim: Target) -> None:
    stub = stub_for(sim)
    target = opened(stub)
    assert target.command_scope is not None
    with target.command_scope():
        first = list(walk(target).runs())
    stub.sent.clear()
    with target.command_scope():
        assert list(walk(target).runs()) == first
    assert stub.sent == []


@pytest.mark.parametrize("before", [0, 1])
@pytest.mark.parametrize("failure", ["outside-ram", "refused", "interrupt"])
def test_mode_is_back_after_a_failing_read(sim: Target, before: int, failure: str) -> None:
    stub = stub_for(sim, mode=before)
    target = opened(stub)
    assert target.command_scope is not None
    expected: type[BaseException]
    if failure == "refused":

        def refuse(addr: int, size: int) -> None:
            if addr == 0x2000000:
                raise TargetMemoryError(addr, size, "Cannot access memory at address 0x2000000")

        stub.on_read, expected = refuse, PhysMemoryError
    elif failure == "interrupt":

        def interrupt(addr: int, size: int) -> None:
            if addr == 0x2000000:
                raise KeyboardInterrupt

        stub.on_read, expected = interrupt, KeyboardInterrupt
    else:
        expected = PhysMemoryError
    with pytest.raises(expected), target.command_scope():
        target.mapper.read(0x1000000, 8)  # switches the mode
        assert stub.mode == 1
        if failure == "outside-ram":
            target.mapper.read(0x10000000, 8)  # beyond the 256 MiB of RAM
        else:
            target.mapper.read(0x2000000, 8)
    assert stub.mode == before
    assert stub.mode_packets()[-1] == f"Qqemu.PhyMemMode:{before}" or before == 1


def test_a_connection_lost_mid_command_gives_the_read_error_only(sim: Target) -> None:
    stub = stub_for(sim)
    state, target = opened_state(stub)
    assert target.command_scope is not None
    with pytest.raises(TargetLostError, match="lost the connection"), target.command_scope():
        target.mapper.read(0x1000000, 8)
        stub.alive = False  # QEMU killed: nothing to restore, and no second error
        target.mapper.read(0x3000000, 8)
    # The mode it could not put back, for a debugger that reconnects (a stub that stopped
    # answering keeps its mode).
    assert state.bracket.unrestored == 0
    assert target.command_scope is not None
    with target.command_scope():  # the bracket is usable again
        pass


def test_ctrl_c_while_restoring_still_restores(sim: Target) -> None:
    stub = stub_for(sim)
    target = opened(stub)
    assert target.command_scope is not None
    pressed: list[str] = []

    def press_once(text: str) -> None:
        if text == "Qqemu.PhyMemMode:0" and not pressed:
            pressed.append(text)
            raise KeyboardInterrupt

    stub.on_packet = press_once
    with pytest.raises(KeyboardInterrupt), target.command_scope():
        target.mapper.read(0x1000000, 8)
    assert stub.mode == 0 and pressed


def test_a_refused_restore_is_an_error_after_success_only(sim: Target) -> None:
    stub = stub_for(sim)
    target = opened(stub)
    assert target.command_scope is not None

    def refuse_restore(text: str) -> None:
        if text == "Qqemu.PhyMemMode:0":
            raise LiveTargetError("maintenance: boom")

    stub.on_packet = refuse_restore
    restore_error = "could not restore PhyMemMode to 0"
    with pytest.raises(LiveTargetError, match=restore_error), target.command_scope():
        target.mapper.read(0x1000000, 8)
    stub.mode = 0
    with pytest.raises(PhysMemoryError), target.command_scope():  # the command's error wins
        target.mapper.read(0x1200000, 8)
        target.mapper.read(0x10000000, 8)


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


# --- read paths ------------------------------------------------------------------------------


def test_xp_when_phymem_is_refused_equals_physical_reads(sim: Target) -> None:
    stub = stub_for(sim, has_phymem=False)
    target = opened(stub)
    assert target.read_path == "monitor xp"
    assert target.mapper.read(0x1000004, 13) == sim.mapper.read(0x1000004, 13)
    assert target.command_scope is not None
    with target.command_scope():
        assert list(walk(target).runs()) == list(walk(sim).runs())
    assert stub.reads == []  # no memory reads: only monitor commands
    assert not [s for s in stub.sent if s.startswith("Qqemu")]


def test_xp_can_be_chosen_and_is_batched(sim: Target, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gdbext_gdbstub.readpath.XP_CHUNK_QWORDS", 1024)
    stub = stub_for(sim)
    target = opened(stub, read_via="xp")
    assert target.read_path == "monitor xp"
    mapper = target.mapper
    assert isinstance(mapper, LiveMapper)
    stub.sent.clear()
    mapper.prefetch([0x1000000 + i * 4096 for i in range(4)])
    assert stub.sent == ["monitor xp /1024gx 0x1000000", "monitor xp /1024gx 0x1002000"]
    assert mapper.read(0x1000000, 0x4000) == sim.mapper.read(0x1000000, 0x4000)
    assert stub.mode == 0


def test_xp_output_errors() -> None:
    with pytest.raises(TargetMemoryError):
        parse_xp("0000000010000000: Cannot access memory\r\n", 0x10000000, 1)
    with pytest.raises(LiveTargetError, match="expected 0x1000"):
        parse_xp("0000000000002000: 0x0000000000000000\r\n", 0x1000, 1)
    with pytest.raises(LiveTargetError, match="1 of 2 words"):
        parse_xp("0000000000001000: 0x0000000000000000\r\n", 0x1000, 2)
    with pytest.raises(LiveTargetError, match="unexpected"):
        parse_xp("unknown command: 'xp'\r\n", 0x1000, 1)


def test_direct_map_for_stubs_with_neither(sim: Target) -> None:
    stub = stub_for(sim, has_phymem=False, has_monitor=False)
    with pytest.raises(LiveTargetError, match="--direct-map ADDR"):
        opened(stub)
    target = opened(stub, direct_map=hex(DIRECT_MAP))
    assert target.read_path == f"direct map at 0x{DIRECT_MAP:x}"
    assert target.facts.direct_map_base == DIRECT_MAP
    assert list(walk(target).runs()) == list(walk(sim).runs())
    assert {addr >= DIRECT_MAP for addr, _, _ in stub.reads} == {True}
    stub.symbols["page_offset_base"] = DIRECT_MAP
    target = opened(stub)
    assert target.read_path == f"direct map at 0x{DIRECT_MAP:x}"


def test_direct_map_on_qemu_holds_the_stub_in_virtual_mode(sim: Target) -> None:
    stub = stub_for(sim, mode=1)
    target = opened(stub, read_via="direct-map", direct_map=hex(DIRECT_MAP))
    assert target.mapper.read(0x1000000, 8) == sim.mapper.read(0x1000000, 8)
    assert {mode for _, _, mode in stub.reads} == {0}
    assert stub.mode == 1


def test_forced_paths_that_do_not_exist(sim: Target) -> None:
    with pytest.raises(LiveTargetError, match="no PhyMemMode"):
        opened(stub_for(sim, has_phymem=False), read_via="phymem")
    with pytest.raises(LiveTargetError, match="monitor xp"):
        opened(stub_for(sim, has_monitor=False), read_via="xp")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"read_via": "magic"}, "--read-via must be one of"),
        ({"direct_map": "banana"}, "--direct-map"),
        ({"direct_map": "0xffff888000000001"}, "page-aligned"),
    ],
)
def test_bad_options(options: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        LiveOptions.from_request(OpenRequest(None, options), NAMING)
    with pytest.raises(UsageError, match="not vmcore"):
        LiveOptions.from_request(OpenRequest("vmcore", {}), NAMING)


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


# --- the per-stop cache of commands ---------------------------------------------------------


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
