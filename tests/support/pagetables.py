"""Hand-built page tables for the tests of the paging engine (:mod:`gdbext.x86`).

Every expectation of those tests is computed independently of the engine: tables are written
entry by entry with :mod:`struct` into a bytearray (:class:`Ram`), and addresses are composed
from table indices (:func:`vaddr`). Entry bits are spelled out here rather than imported.
"""

from __future__ import annotations

import struct
from collections import Counter

from gdbext.errors import (
    PhysMemoryError,
    ReadOnlyError,
)
from gdbext.x86.paging import X86PageTable
from gdbext.x86.records import (
    WalkStep,
)
from gdbext.x86.tlbflush import Flush

# --- Raw entry bits and sizes, spelled out here rather than imported -----------------------------

P, W, U, PWT, PCD, ACC, DIRTY, PS, G = 1, 2, 4, 8, 16, 32, 64, 128, 256
NX = 1 << 63
PAT_LARGE = 1 << 12
ADDR = 0x000F_FFFF_FFFF_F000
K4, M2, G1 = 1 << 12, 1 << 21, 1 << 30
RAM_SIZE = 1 << 20
ROOT = 0x1000
POOL = 0x80000  # allocator frames: 0x80000..0xBFFFF
POOL_FRAMES = 64
GARBAGE = b"\xa5" * K4


def vaddr(levels: int, *indices: int, off: int = 0) -> int:
    """The canonical address with these table indices (top level first) and page offset."""
    assert len(indices) <= levels
    va = off
    for k, index in enumerate(indices):
        va |= index << (12 + 9 * (levels - 1 - k))
    va_bits = 12 + 9 * levels
    if va >> (va_bits - 1) & 1:
        va |= ((1 << 64) - 1) ^ ((1 << va_bits) - 1)
    return va


def v4(*indices: int, off: int = 0) -> int:
    return vaddr(4, *indices, off=off)


def v5(*indices: int, off: int = 0) -> int:
    return vaddr(5, *indices, off=off)


def idx(va: int, level: int) -> int:
    return (va >> (12 + 9 * (level - 1))) & 0x1FF


# --- A bytearray PhysMapper, a frame allocator and a flush recorder ------------------------------


class Ram:
    """``[0, size)`` of RAM in a bytearray; records every read and write."""

    def __init__(self, size: int = RAM_SIZE, *, read_only: bool = False) -> None:
        self.buf = bytearray(size)
        self.read_only = read_only
        self.reads: list[tuple[int, int]] = []
        self.writes: list[tuple[int, bytes]] = []

    def read(self, paddr: int, size: int) -> bytes:
        if paddr < 0 or paddr + size > len(self.buf):
            raise PhysMemoryError(paddr, size)
        self.reads.append((paddr, size))
        return bytes(self.buf[paddr : paddr + size])

    def write(self, paddr: int, data: bytes) -> None:
        if self.read_only:
            raise ReadOnlyError("read-only test memory")
        if paddr < 0 or paddr + len(data) > len(self.buf):
            raise PhysMemoryError(paddr, len(data))
        self.writes.append((paddr, bytes(data)))
        self.buf[paddr : paddr + len(data)] = data

    # Test-side access that bypasses the records.
    def set(self, table: int, index: int, value: int) -> None:
        struct.pack_into("<Q", self.buf, table + 8 * index, value)

    def get(self, table: int, index: int) -> int:
        return int(struct.unpack_from("<Q", self.buf, table + 8 * index)[0])

    def entries(self, table: int) -> tuple[int, ...]:
        return struct.unpack_from("<512Q", self.buf, table)

    def snapshot(self) -> bytes:
        return bytes(self.buf)

    def frames_read(self) -> Counter[int]:
        """How many reads touched each 4 KiB frame."""
        return Counter(paddr & ~0xFFF for paddr, _ in self.reads)


class Frames:
    """A frame allocator over a fixed pool whose free frames hold garbage (not zeros)."""

    def __init__(
        self, ram: Ram, start: int = POOL, count: int = POOL_FRAMES, limit: int | None = None
    ) -> None:
        self.ram = ram
        self.free = [start + i * K4 for i in range(count)]
        self.limit = limit
        self.allocated: list[int] = []
        self.returned: list[int] = []
        self.live: set[int] = set()
        for frame in self.free:
            ram.buf[frame : frame + K4] = GARBAGE

    def allocate_frame(self) -> int | None:
        if not self.free or (self.limit is not None and len(self.allocated) >= self.limit):
            return None
        frame = self.free.pop(0)
        self.allocated.append(frame)
        self.live.add(frame)
        return frame

    def deallocate_frame(self, paddr: int) -> None:
        assert paddr in self.live, f"frame 0x{paddr:x} given back but not handed out"
        self.live.remove(paddr)
        self.returned.append(paddr)
        self.free.append(paddr)


class Hook:
    def __init__(self) -> None:
        self.calls: list[Flush] = []

    def __call__(self, flush: Flush) -> None:
        self.calls.append(flush)


class Env:
    """RAM, a hand-built root at ``ROOT``, an allocator, a flush recorder and the page table."""

    def __init__(
        self,
        levels: int = 4,
        *,
        nxe: bool = True,
        max_phys_bits: int = 52,
        allow_writes: bool = True,
        read_only: bool = False,
        limit: int | None = None,
    ) -> None:
        self.levels = levels
        self.ram = Ram(read_only=read_only)
        self.alloc = Frames(self.ram, limit=limit)
        self.hook = Hook()
        self._next = ROOT + K4
        self.pt = X86PageTable(
            self.ram,
            ROOT,
            levels,
            nxe=nxe,
            max_phys_bits=max_phys_bits,
            allow_writes=allow_writes,
            flush_hook=self.hook,
        )

    def va(self, *indices: int, off: int = 0) -> int:
        return vaddr(self.levels, *indices, off=off)

    def table(self) -> int:
        """A fresh zeroed table frame below the allocator's pool."""
        frame = self._next
        self._next += K4
        assert frame < POOL
        self.ram.buf[frame : frame + K4] = bytes(K4)
        return frame

    def link(self, va: int, leaf_level: int, leaf: int, pflags: int = P | W | U) -> list[int]:
        """Write ``leaf`` at ``leaf_level`` for ``va``, creating parents with ``pflags``.

        Returns the tables on the path, root first (the last holds the leaf).
        """
        table = ROOT
        path = [ROOT]
        for level in range(self.levels, leaf_level, -1):
            i = idx(va, level)
            entry = self.ram.get(table, i)
            if not entry & P:
                entry = self.table() | pflags
                self.ram.set(table, i, entry)
            table = entry & ADDR
            path.append(table)
        self.ram.set(table, idx(va, leaf_level), leaf)
        return path

    def clear_records(self) -> None:
        self.ram.reads.clear()
        self.ram.writes.clear()
        self.hook.calls.clear()


def steps_of(env: Env, va: int, path: list[int], last_level: int) -> tuple[WalkStep, ...]:
    """The walk steps expected for ``va`` along the tables ``path`` (root first)."""
    out = []
    for k, table in enumerate(path):
        level = env.levels - k
        if level < last_level:
            break
        out.append(WalkStep(level, table, idx(va, level), env.ram.get(table, idx(va, level))))
    return tuple(out)
