"""A fake gdbstub for the live backend's tests without a debugger (:class:`FakeStub`).

The fake behaves as QEMU's gdbstub does where it matters: PhyMemMode is global state that
``qqemu.PhyMemMode`` / ``Qqemu.PhyMemMode:N`` query and set; in mode 1 reads are physical and
return zeros outside RAM; in mode 0 they are virtual (here: only the direct map); ``monitor xp``
and ``monitor info mtree -f`` print what QEMU prints.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from gdbext.cpu import CpuState
from gdbext.frontend.commands import WalkOptions, walk
from gdbext.plugin.target import OpenRequest, Target
from gdbext_gdb.naming import NAMING
from gdbext_gdbstub.link import LiveTargetError, TargetLostError, TargetMemoryError
from gdbext_gdbstub.options import LiveOptions
from gdbext_gdbstub.state import LiveState
from gdbext_sim.memory import SparsePhysMemory
from gdbext_sim.scenario import load_scenario
from support.paths import DEMO

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
    #: The VM runs: every packet, memory or register read fails, as GDB refuses them then.
    running: bool = False
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
        if self.running:
            raise AssertionError("sent to a running target")

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
        self._check_alive()  # GDB asks the stub for its thread list
        return list(range(1, len(self.cpus) + 1))

    def selected_thread(self) -> int | None:
        return self.selected

    def flush_cache(self) -> None:
        self.flushes += 1

    def symbol_value(self, name: str) -> int | None:
        self._check_alive()  # GDB reads it from memory
        return self.symbols.get(name)

    def symbol_address(self, name: str) -> int | None:
        return 0xFFFFFFFF82000000 if name in self.symbols else None

    def stub_address(self) -> tuple[str, int] | None:
        return None

    def is_running(self) -> bool:
        return self.running

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
