"""Unit tests of the paging engine (:mod:`gdbext.x86.paging`) over hand-built page tables.

Every expectation is computed here, independently of the engine: tables are written entry by
entry with :mod:`struct` into a bytearray, and addresses are composed from table indices.
"""

from __future__ import annotations

import itertools
import struct
from collections import Counter
from collections.abc import Callable, Iterable

import pytest

from gdbext.addr import AddrRange
from gdbext.errors import (
    AlreadyMappedError,
    EntryInUseError,
    FrameAllocationError,
    GdbextError,
    HugePageForbiddenError,
    InputError,
    MisalignedAddressError,
    NonCanonicalAddressError,
    NotMappedError,
    PageSizeMismatchError,
    ParentHugePageError,
    PhysMemoryError,
    ReadOnlyError,
    ReservedBitsError,
    TableOutsideRamError,
    WalkOptionError,
)
from gdbext.x86.paging import X86PageTable
from gdbext.x86.records import (
    AliasRun,
    Anomaly,
    CleanUp,
    LeafRun,
    Mapping,
    Translation,
    Unmapped,
    WalkStep,
)
from gdbext.x86.tlbflush import Flush, FlushAll, FlushPage

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


# =================================================================================================
# translate


def test_translate_4k_with_offset() -> None:
    env = Env()
    va = v4(1, 2, 3, 4, off=0xABC)
    leaf = 0x1234_5678_9000 | P | W | U | ACC | DIRTY | G
    path = env.link(va, 1, leaf)
    t = env.pt.translate(va)
    assert t.vaddr == va
    assert t.paddr == 0x1234_5678_9ABC
    assert t.frame == 0x1234_5678_9000
    assert t.page_size == K4
    assert t.level == 1
    assert t.entry == leaf
    assert int(t.flags) == P | W | U | ACC | DIRTY | G
    assert (t.user, t.writable, t.executable) == (True, True, True)
    assert t.steps == (
        WalkStep(4, ROOT, 1, path[1] | P | W | U),
        WalkStep(3, path[1], 2, path[2] | P | W | U),
        WalkStep(2, path[2], 3, path[3] | P | W | U),
        WalkStep(1, path[3], 4, leaf),
    )


def test_translate_2m_with_offset() -> None:
    env = Env()
    va = v4(1, 2, 3, 0x1AB, off=0x123)
    leaf = 0x4020_0000 | P | W | PS
    path = env.link(va, 2, leaf)
    t = env.pt.translate(va)
    assert t.paddr == 0x4020_0000 + 0x1AB123
    assert (t.page_size, t.level, t.entry, t.frame) == (M2, 2, leaf, 0x4020_0000)
    assert (t.user, t.writable, t.executable) == (False, True, True)
    assert t.steps == steps_of(env, va, path, 2)
    assert len(t.steps) == 3 and t.steps[-1] == WalkStep(2, path[2], 3, leaf)


def test_translate_1g_with_offset() -> None:
    env = Env()
    va = v4(300, 2, 0x155, 0x0AA, off=0x321)
    leaf = 0x80_C000_0000 | P | PS | NX
    path = env.link(va, 3, leaf)
    t = env.pt.translate(va)
    assert va == 0xFFFF_9600_AAAA_A321
    assert t.paddr == 0x80_C000_0000 + ((0x155 << 21) | (0x0AA << 12) | 0x321)
    assert (t.page_size, t.level, t.frame) == (G1, 3, 0x80_C000_0000)
    assert (t.user, t.writable, t.executable) == (False, False, False)
    assert t.steps == (
        WalkStep(4, ROOT, 300, path[1] | P | W | U),
        WalkStep(3, path[1], 2, leaf),
    )


@pytest.mark.parametrize(("level", "size", "base"), [(2, M2, 0x4020_0000), (3, G1, 0x80_C000_0000)])
def test_pat_bit_of_large_leaf_is_not_address(level: int, size: int, base: int) -> None:
    env = Env()
    va = v4(0, 1, 2, 3, off=0x45)
    leaf = base | PAT_LARGE | P | PS | W
    env.link(va, level, leaf)
    off = va & (size - 1)
    t = env.pt.translate(va)
    assert t.paddr == base + off
    assert t.frame == base
    assert t.entry & PAT_LARGE  # the raw entry keeps it
    (m,) = list(env.pt.iter_mappings())
    assert (m.vaddr, m.paddr, m.page_size, m.entry) == (va - off, base, size, leaf)


def test_effective_permissions_all_combinations() -> None:
    """user/writable ANDed over all four levels, NX ORed; every combination of the three bits."""
    env = Env()
    va = v4(7, 8, 9, 10)
    path = env.link(va, 1, 0x5000 | P)
    slots = [(path[k], idx(va, 4 - k)) for k in range(4)]
    targets = [path[1], path[2], path[3], 0x5000]
    choices = [0, W, U, NX, W | U, W | NX, U | NX, W | U | NX]
    for combo in itertools.product(choices, repeat=4):
        for (table, i), target, bits in zip(slots, targets, combo, strict=True):
            env.ram.set(table, i, target | P | bits)
        t = env.pt.translate(va)
        assert t.writable == all(b & W for b in combo), combo
        assert t.user == all(b & U for b in combo), combo
        assert t.executable == (not any(b & NX for b in combo)), combo
        assert t.paddr == 0x5000


@pytest.mark.parametrize("nx_level", [None, 4, 3, 2, 1])
def test_nx_with_and_without_nxe(nx_level: int | None) -> None:
    for nxe in (True, False):
        env = Env(nxe=nxe)
        va = v4(1, 1, 1, 1)
        path = env.link(va, 1, 0x7000 | P | W)
        if nx_level is not None:
            k = 4 - nx_level
            env.ram.set(path[k], idx(va, nx_level), env.ram.get(path[k], idx(va, nx_level)) | NX)
        if nx_level is None:
            # Without NX anywhere, the page is executable in both modes.
            assert env.pt.translate(va).executable is True
        elif nxe:
            assert env.pt.translate(va).executable is False
        else:
            entry = env.ram.get(path[4 - nx_level], idx(va, nx_level))
            with pytest.raises(ReservedBitsError) as info:
                env.pt.translate(va)
            assert type(info.value) is ReservedBitsError
            assert (info.value.level, info.value.entry, info.value.bits) == (nx_level, entry, NX)
            assert info.value.vaddr == va
            assert env.pt.try_translate(va) is None


def test_nxe_false_permissions_still_anded() -> None:
    env = Env(nxe=False)
    va = v4(0, 0, 0, 1)
    env.link(va, 1, 0x3000 | P | W | U, pflags=P | U)
    t = env.pt.translate(va)
    assert (t.user, t.writable, t.executable) == (True, False, True)


@pytest.mark.parametrize("levels", [4, 5])
@pytest.mark.parametrize("swap", [0, 0x0000_0012_3456_7800 | W | U])
def test_not_mapped_at_each_level(levels: int, swap: int) -> None:
    """A non-present entry (zero, or a non-zero OS entry) stops the walk at its level."""
    for level in range(levels, 0, -1):
        env = Env(levels)
        va = env.va(*([3] * levels), off=0x10)
        path = env.link(va, 1, 0x9000 | P | W)
        k = levels - level
        env.ram.set(path[k], idx(va, level), swap)
        with pytest.raises(NotMappedError) as info:
            env.pt.translate(va)
        assert (info.value.level, info.value.entry, info.value.vaddr) == (level, swap, va)
        assert info.value.exit_status == 1
        assert env.pt.try_translate(va) is None


@pytest.mark.parametrize(
    ("levels", "bad", "good"),
    [
        (
            4,
            [0x0000_8000_0000_0000, 0xFFFF_7FFF_FFFF_FFFF, 0x0100_0000_0000_0000, 1 << 64, -1],
            [0x0000_7FFF_FFFF_FFFF, 0xFFFF_8000_0000_0000],
        ),
        (
            5,
            [0x0100_0000_0000_0000, 0xFEFF_FFFF_FFFF_FFFF, 0x8000_0000_0000_0000, 1 << 64],
            [0x0000_8000_0000_0000, 0x00FF_FFFF_FFFF_FFFF, 0xFF00_0000_0000_0000],
        ),
    ],
)
def test_non_canonical(levels: int, bad: list[int], good: list[int]) -> None:
    env = Env(levels)
    for va in bad:
        with pytest.raises(NonCanonicalAddressError) as info:
            env.pt.translate(va)
        assert info.value.address == va
        assert info.value.va_bits == 12 + 9 * levels
        # Past 64 bits (or negative) is "out of range", not "not canonical for 48-bit".
        kind = "out of range" if not 0 <= va < 1 << 64 else "not canonical"
        assert kind in str(info.value)
        assert env.pt.try_translate(va) is None
    for va in good:  # canonical, so the walk starts and finds nothing
        with pytest.raises(NotMappedError) as nm:
            env.pt.translate(va)
        assert nm.value.level == levels


@pytest.mark.parametrize(("levels", "level"), [(4, 4), (5, 5), (5, 4)])
def test_huge_page_forbidden(levels: int, level: int) -> None:
    env = Env(levels)
    va = env.va(*([5] * levels))
    path = env.link(va, 1, 0x9000 | P)
    k = levels - level
    entry = env.ram.get(path[k], idx(va, level)) | PS
    env.ram.set(path[k], idx(va, level), entry)
    with pytest.raises(HugePageForbiddenError) as info:
        env.pt.translate(va)
    assert isinstance(info.value, ReservedBitsError)
    assert (info.value.level, info.value.entry, info.value.bits) == (level, entry, PS)
    assert env.pt.try_translate(va) is None


@pytest.mark.parametrize(
    ("leaf_level", "level", "bad_bits"),
    [
        (1, 3, 1 << 45),  # a table pointer with an address bit above MAXPHYADDR (40)
        (1, 1, 1 << 40),  # a 4 KiB leaf with one
        (2, 2, 1 << 51),
        (3, 3, 1 << 44),
    ],
)
def test_reserved_address_bits_above_maxphyaddr(leaf_level: int, level: int, bad_bits: int) -> None:
    env = Env(max_phys_bits=40)
    va = v4(2, 3, 4, 5)
    leaf = 0x4000_0000 | P | (PS if leaf_level > 1 else 0)
    path = env.link(va, leaf_level, leaf)
    k = 4 - level
    entry = env.ram.get(path[k], idx(va, level)) | bad_bits
    env.ram.set(path[k], idx(va, level), entry)
    with pytest.raises(ReservedBitsError) as info:
        env.pt.translate(va)
    assert (info.value.level, info.value.entry, info.value.bits) == (level, entry, bad_bits)
    # With MAXPHYADDR 52 the same bits are plain address bits.
    pt52 = X86PageTable(env.ram, ROOT, 4, max_phys_bits=52)
    if level == leaf_level:
        assert pt52.translate(va).frame == 0x4000_0000 | bad_bits
    else:
        assert pt52.try_translate(va) is None  # the linked table is now outside RAM
        with pytest.raises(TableOutsideRamError):
            pt52.translate(va)


@pytest.mark.parametrize(
    ("level", "bit"), [(2, 1 << 13), (2, 1 << 20), (3, 1 << 13), (3, 1 << 21), (3, 1 << 29)]
)
def test_reserved_bits_inside_large_leaf(level: int, bit: int) -> None:
    env = Env()
    va = v4(1, 1, 1, 1)
    leaf = 0x4000_0000 | bit | P | PS | W
    env.link(va, level, leaf)
    with pytest.raises(ReservedBitsError) as info:
        env.pt.translate(va)
    assert (info.value.level, info.value.entry, info.value.bits) == (level, leaf, bit)
    assert env.pt.try_translate(va) is None
    anomalies: list[Anomaly] = []
    assert list(env.pt.iter_mappings(on_anomaly=anomalies.append)) == []
    assert [(a.kind, a.level, a.entry) for a in anomalies] == [("reserved-bits", level, leaf)]


@pytest.mark.parametrize("level", [4, 3, 2])
def test_table_outside_ram(level: int) -> None:
    env = Env()
    va = v4(1, 2, 3, 4)
    path = env.link(va, 1, 0x9000 | P)
    outside = 0x7_0000_0000
    entry = outside | P | W
    env.ram.set(path[4 - level], idx(va, level), entry)
    with pytest.raises(TableOutsideRamError) as info:
        env.pt.translate(va)
    assert (info.value.level, info.value.entry, info.value.table) == (level, entry, outside)
    assert env.pt.try_translate(va) is None
    anomalies: list[Anomaly] = []
    assert list(env.pt.iter_mappings(on_anomaly=anomalies.append)) == []
    assert [(a.kind, a.level, a.entry, a.table, a.index) for a in anomalies] == [
        ("table-outside-ram", level, entry, path[4 - level], idx(va, level))
    ]


def test_root_outside_ram() -> None:
    pt = X86PageTable(Ram(), 0x4000_0000)
    with pytest.raises(TableOutsideRamError) as info:
        pt.translate(0x1000)
    assert (info.value.level, info.value.table) == (4, 0x4000_0000)
    assert pt.try_translate(0x1000) is None


def test_try_translate_returns_translation_when_mapped() -> None:
    env = Env()
    va = v4(1, 2, 3, 4, off=0x18)
    env.link(va, 1, 0xABC000 | P | W)
    t = env.pt.try_translate(va)
    assert isinstance(t, Translation)
    assert t == env.pt.translate(va)
    assert t.paddr == 0xABC018


def test_translate_5_level() -> None:
    env = Env(5)
    va = v5(300, 1, 2, 3, 4, off=0x567)
    assert va == 0xFF2C_0080_8060_4567
    leaf = 0x2_0000_3000 | P | W | U
    path = env.link(va, 1, leaf)
    t = env.pt.translate(va)
    assert (t.paddr, t.page_size, t.level) == (0x2_0000_3567, K4, 1)
    assert [s.level for s in t.steps] == [5, 4, 3, 2, 1]
    assert [s.table for s in t.steps] == path
    assert [s.index for s in t.steps] == [300, 1, 2, 3, 4]
    # 0x0000_8000_0000_0000 is canonical with LA57: PML5 index 0, PML4 index 256.
    va2 = 0x0000_8000_0000_0000 + 0x4000_1234
    env.link(va2, 3, 0x1_0000_0000 | P | PS)
    assert v5(0, 256, 1, 0, 0, off=0x1234) == va2
    t2 = env.pt.translate(va2)
    assert (t2.paddr, t2.page_size) == (0x1_0000_1234, G1)
    assert [s.index for s in t2.steps] == [0, 256, 1]


# =================================================================================================
# iter_runs / iter_mappings


def test_iter_mappings_order_and_values() -> None:
    env = Env()
    layout = [  # (va, leaf level, leaf entry), deliberately not in VA order
        (v4(511, 510), 3, 0x0 | P | PS | G),
        (v4(0, 1, 7), 2, 0x4000_0000 | P | PS | W),
        (v4(256, 0, 0, 0), 1, 0x7000 | P),
        (v4(0, 0, 0, 5), 1, 0x5000 | P | W | U),
        (v4(255, 511), 3, 0x1_0000_0000 | P | PS | NX | W | U),
        (v4(0, 0, 0, 6), 1, 0x6000 | P | W | U | NX),
    ]
    for va, level, leaf in layout:
        env.link(va, level, leaf)
    got = list(env.pt.iter_mappings())
    size = {1: K4, 2: M2, 3: G1}
    expected = [
        Mapping(va, leaf & ADDR, size[level], leaf, bool(leaf & U), bool(leaf & W), not leaf & NX)
        for va, level, leaf in sorted(layout)
    ]
    assert got == expected
    assert [m.vaddr for m in got] == [
        0x0000_0000_0000_5000,
        0x0000_0000_0000_6000,
        0x0000_0000_40E0_0000,
        0x0000_7FFF_C000_0000,
        0xFFFF_8000_0000_0000,
        0xFFFF_FFFF_8000_0000,
    ]
    # Contiguous 4 KiB leaves with different flags are separate runs.
    runs = list(env.pt.iter_runs())
    assert all(type(r) is LeafRun for r in runs)
    assert [r.count for r in runs if isinstance(r, LeafRun)] == [1, 1, 1, 1, 1, 1]


def test_iter_runs_groups_contiguous_leaves() -> None:
    env = Env()
    for i in range(10):
        env.link(v4(0, 0, 0, i), 1, (0x100_0000 + i * K4) | P | W)
    env.link(v4(0, 0, 0, 10), 1, 0x200_0000 | P | W)  # breaks physical contiguity
    env.link(v4(0, 0, 0, 11), 1, 0x200_1000 | P)  # different flags
    runs = list(env.pt.iter_runs())
    assert runs == [
        LeafRun(0, 0x100_0000, 10, K4, 0x100_0000 | P | W, False, True, True),
        LeafRun(10 * K4, 0x200_0000, 1, K4, 0x200_0000 | P | W, False, True, True),
        LeafRun(11 * K4, 0x200_1000, 1, K4, 0x200_1000 | P, False, False, True),
    ]
    sub = list(env.pt.iter_runs(AddrRange(3 * K4, 5 * K4)))
    assert sub == [LeafRun(3 * K4, 0x100_3000, 2, K4, 0x100_3000 | P | W, False, True, True)]


@pytest.mark.parametrize("hole", [None, 0, 100, 511])
def test_iter_runs_full_table(hole: int | None) -> None:
    """512 contiguous leaves make one run; one odd entry anywhere splits it."""
    env = Env()
    path = env.link(v4(0, 0, 0, 0), 1, 0)
    pt = path[3]
    for i in range(512):
        env.ram.set(pt, i, (0x40_0000 + i * K4) | P | W)
    if hole is not None:
        env.ram.set(pt, hole, 0x90_0000 | P | W)
    runs = [(r.vaddr, r.paddr, r.count) for r in env.pt.iter_runs() if isinstance(r, LeafRun)]
    if hole is None:
        assert runs == [(0, 0x40_0000, 512)]
    else:
        expected = [(0, 0x40_0000, hole), (hole * K4, 0x90_0000, 1)]
        expected.append(((hole + 1) * K4, 0x40_0000 + (hole + 1) * K4, 511 - hole))
        assert runs == [r for r in expected if r[2]]
    assert [(m.vaddr, m.paddr) for m in env.pt.iter_mappings()] == [
        (i * K4, 0x90_0000 if i == hole else 0x40_0000 + i * K4) for i in range(512)
    ]


def test_iter_mappings_at_top_of_physical_space() -> None:
    """Leaves whose frames end at 2^52 must not run on into the flag bits of the next entry."""
    env = Env()
    top = (1 << 52) - K4
    env.link(v4(0, 0, 0, 0), 1, (top - K4) | P)
    env.link(v4(0, 0, 0, 1), 1, top | P)
    # Bit 52 is a software flag, not an address bit: this entry maps frame 0.
    env.link(v4(0, 0, 0, 2), 1, (1 << 52) | P)
    got = [(m.vaddr, m.paddr) for m in env.pt.iter_mappings()]
    assert got == [(0, top - K4), (K4, top), (2 * K4, 0)]
    for va, pa in got:
        assert env.pt.translate(va).paddr == pa


def test_iter_mappings_range_pruning_reads_only_the_path() -> None:
    env = Env()
    a = env.link(v4(0, 0, 0, 0), 1, 0x10_0000 | P)
    b = env.link(v4(0, 0, 1, 1), 1, 0x20_1000 | P)
    for i in (0, 2, 3, 5):
        env.link(v4(0, 0, 1, i), 1, (0x20_0000 + i * K4) | P)
    c = env.link(v4(1, 0, 0, 0), 1, 0x30_0000 | P)
    d = env.link(v4(300, 5, 0, 0), 1, 0x40_0000 | P)
    env.link(v4(0, 3), 3, 0xC000_0000 | P | PS)
    assert len({*a, *b, *c, *d}) == 1 + 3 + 1 + 3 + 3  # root; PDPT/PD shared by a and b
    env.clear_records()
    lo = v4(0, 0, 1, 1)
    got = list(env.pt.iter_mappings(AddrRange(lo, lo + 2 * K4)))
    assert [(m.vaddr, m.paddr) for m in got] == [(lo, 0x20_1000), (lo + K4, 0x20_2000)]
    assert env.ram.frames_read() == Counter({ROOT: 1, b[1]: 1, b[2]: 1, b[3]: 1})
    # A range inside a 1 GiB leaf reports the leaf and reads only root and PDPT.
    env.clear_records()
    inside = v4(0, 3, 100, 7)
    got = list(env.pt.iter_mappings(AddrRange(inside, inside + 1)))
    assert [(m.vaddr, m.page_size) for m in got] == [(v4(0, 3), G1)]
    assert env.ram.frames_read() == Counter({ROOT: 1, a[1]: 1})
    # A higher-half range.
    env.clear_records()
    got = list(env.pt.iter_mappings(AddrRange(0xFFFF_8000_0000_0000, 1 << 64)))
    assert [m.vaddr for m in got] == [v4(300, 5, 0, 0)]
    assert env.ram.frames_read() == Counter({ROOT: 1, d[1]: 1, d[2]: 1, d[3]: 1})
    # An empty range reads nothing.
    env.clear_records()
    assert list(env.pt.iter_runs(AddrRange(lo, lo))) == []
    assert env.ram.reads == []


def _shared_pt_env(perm_of_link: list[int]) -> tuple[Env, int, int, int]:
    env = Env()
    path = env.link(v4(0, 0, 0, 0), 1, 0x10_0000 | P | W)
    pdpt, pd, pt = path[1], path[2], path[3]
    env.ram.set(pt, 1, 0x10_1000 | P | W)
    env.ram.set(pt, 7, 0x20_0000 | P | U)
    for i, perm in enumerate(perm_of_link):
        env.ram.set(pd, i, pt | P | perm)
    return env, pdpt, pd, pt


def test_shared_table_read_once_every_alias_reported() -> None:
    perms = [W | U if i % 3 else U for i in range(300)]
    env, pdpt, pd, pt = _shared_pt_env(perms)
    env.clear_records()
    got = list(env.pt.iter_mappings())
    assert env.ram.frames_read() == Counter({ROOT: 1, pdpt: 1, pd: 1, pt: 1})
    expected = []
    for i, perm in enumerate(perms):
        for j, pa, leaf_bits in ((0, 0x10_0000, W), (1, 0x10_1000, W), (7, 0x20_0000, U)):
            eff_w = bool(perm & leaf_bits & W)
            eff_u = bool(perm & leaf_bits & U)
            expected.append(Mapping(v4(0, 0, i, j), pa, K4, pa | P | leaf_bits, eff_u, eff_w, True))
    assert len(got) == 900
    assert got == expected


def test_aliases_collapse() -> None:
    perms = [W | U] * 150 + [U] * 150
    env, _pdpt, _pd, pt = _shared_pt_env(perms)
    env.clear_records()
    runs = list(env.pt.iter_runs(aliases="collapse"))
    assert runs == [
        LeafRun(0, 0x10_0000, 2, K4, 0x10_0000 | P | W, False, True, True),
        LeafRun(7 * K4, 0x20_0000, 1, K4, 0x20_0000 | P | U, True, False, True),
        AliasRun(M2, 150 * M2, 149, pt, 1, 0, 3, 3 * K4, True, True, True),
        AliasRun(150 * M2, 300 * M2, 150, pt, 1, 0, 3, 3 * K4, True, False, True, False),
    ]
    alias = runs[2]
    assert isinstance(alias, AliasRun)
    assert alias.end - alias.vaddr == alias.count * M2
    assert Counter(p & ~0xFFF for p, _ in env.ram.reads)[pt] == 1
    # "expand" (the default) reports every leaf instead.
    assert sum(r.count for r in env.pt.iter_runs() if isinstance(r, LeafRun)) == 900
    with pytest.raises(WalkOptionError):
        list(env.pt.iter_runs(aliases="merge"))


def test_aliases_collapse_at_the_top_level() -> None:
    """A PDPT linked from two PML4 entries (identity + higher half) is walked once."""
    env = Env()
    path = env.link(v4(0, 0, 1), 2, 0x20_0000 | P | PS | W)
    env.ram.set(ROOT, 256, path[1] | P | W)
    runs = list(env.pt.iter_runs(aliases="collapse"))
    assert runs == [
        LeafRun(M2, 0x20_0000, 1, M2, 0x20_0000 | P | PS | W, False, True, True),
        AliasRun(v4(256), v4(257), 1, path[1], 3, 0, 1, M2, False, True, True, False),
    ]
    assert [m.vaddr for m in env.pt.iter_mappings()] == [M2, v4(256, 0, 1)]


@pytest.mark.parametrize("levels", [4, 5])
def test_recursive_entry_reported_not_followed(levels: int) -> None:
    env = Env(levels)
    va = env.va(*([0] * levels))
    env.link(va, 1, 0x5000 | P | W)
    recursive = ROOT | P | W
    env.ram.set(ROOT, 511, recursive)
    env.clear_records()
    runs = list(env.pt.iter_runs())
    top = env.va(511)
    assert len(runs) == 2
    assert runs[0] == LeafRun(0, 0x5000, 1, K4, 0x5000 | P | W, False, True, True)
    anomaly = runs[1]
    assert isinstance(anomaly, Anomaly)
    assert (anomaly.kind, anomaly.vaddr, anomaly.level, anomaly.table, anomaly.index) == (
        "recursive",
        top,
        levels,
        ROOT,
        511,
    )
    assert anomaly.entry == recursive
    assert env.ram.frames_read()[ROOT] == 1
    anomalies: list[Anomaly] = []
    assert [m.vaddr for m in env.pt.iter_mappings(on_anomaly=anomalies.append)] == [0]
    assert [a.kind for a in anomalies] == ["recursive"]
    # collapse mode reports it the same way, and twice if two entries recurse.
    env.ram.set(ROOT, 510, recursive)
    kinds = [
        (type(r).__name__, getattr(r, "kind", None), r.vaddr)
        for r in env.pt.iter_runs(aliases="collapse")
    ]
    assert kinds == [
        ("LeafRun", None, 0),
        ("Anomaly", "recursive", env.va(510)),
        ("Anomaly", "recursive", top),
    ]


def test_recursive_entry_below_the_root() -> None:
    env = Env()
    path = env.link(v4(0, 0, 0, 0), 1, 0x5000 | P)
    pdpt, pd = path[1], path[2]
    back = pdpt | P  # a PD entry linking the PDPT above it
    env.ram.set(pd, 9, back)
    runs = list(env.pt.iter_runs())
    assert [type(r) for r in runs] == [LeafRun, Anomaly]
    anomaly = runs[1]
    assert isinstance(anomaly, Anomaly)
    assert (anomaly.kind, anomaly.vaddr, anomaly.level, anomaly.table, anomaly.index) == (
        "recursive",
        v4(0, 0, 9),
        2,
        pd,
        9,
    )
    assert anomaly.entry == back


def test_walk_anomalies_huge_forbidden_and_repeated_bad_links() -> None:
    env = Env()
    env.link(v4(0, 0, 0, 0), 1, 0x5000 | P)
    env.ram.set(ROOT, 3, 0x20_0000 | P | PS)
    path = env.link(v4(1, 0, 0, 0), 1, 0x6000 | P)
    bogus = 0x9_0000_0000 | P
    env.ram.set(path[2], 4, bogus)
    env.ram.set(path[2], 5, bogus)
    runs = list(env.pt.iter_runs(aliases="collapse"))
    summary = [(type(r).__name__, getattr(r, "kind", None), r.vaddr) for r in runs]
    assert summary == [
        ("LeafRun", None, 0),
        ("LeafRun", None, v4(1)),
        ("Anomaly", "table-outside-ram", v4(1, 0, 4)),
        ("Anomaly", "table-outside-ram", v4(1, 0, 5)),
        ("Anomaly", "huge-page-forbidden", v4(3)),
    ]


# =================================================================================================
# map / map_range


def test_map_4k_creates_zeroed_parents_and_propagates() -> None:
    env = Env()
    va = v4(3, 4, 5, 6)
    flags = W | U | NX | G
    flushes = env.pt.map(va, 0xABCDE000, K4, flags, env.alloc)
    assert flushes == (FlushAll(),)
    assert env.hook.calls == [FlushAll()]
    assert sorted(env.alloc.allocated) == [POOL, POOL + K4, POOL + 2 * K4]
    pdpt = env.ram.get(ROOT, 3)
    pd = env.ram.get(pdpt & ADDR, 4)
    pt = env.ram.get(pd & ADDR, 5)
    for entry in (pdpt, pd, pt):
        assert entry & ~ADDR == P | W | U  # no NX, no GLOBAL upward
        assert entry & ADDR in env.alloc.live
    assert len({pdpt & ADDR, pd & ADDR, pt & ADDR}) == 3
    assert env.ram.get(pt & ADDR, 6) == 0xABCDE000 | P | W | U | NX | G
    for table, index in ((pdpt & ADDR, 4), (pd & ADDR, 5), (pt & ADDR, 6)):
        entries = env.ram.entries(table)
        assert [i for i, e in enumerate(entries) if e] == [index]  # garbage was zeroed
    assert sum(1 for e in env.ram.entries(ROOT) if e) == 1
    t = env.pt.translate(va + 0x10)
    assert (t.paddr, t.user, t.writable, t.executable) == (0xABCDE010, True, True, False)


def test_map_without_permissions_creates_bare_parents() -> None:
    env = Env()
    va = v4(0, 0, 0, 1)
    env.pt.map(va, 0x3000, K4, 0, env.alloc)
    pdpt = env.ram.get(ROOT, 0)
    pd = env.ram.get(pdpt & ADDR, 0)
    pt = env.ram.get(pd & ADDR, 0)
    assert [e & ~ADDR for e in (pdpt, pd, pt)] == [P, P, P]
    assert env.ram.get(pt & ADDR, 1) == 0x3000 | P


def test_map_propagates_upward_only_what_is_needed() -> None:
    env = Env()
    a, b, c = v4(1, 1, 1, 1), v4(1, 1, 1, 2), v4(1, 1, 1, 3)
    assert env.pt.map(a, 0x1_0000, K4, 0, env.alloc) == (FlushAll(),)
    env.hook.calls.clear()
    # b needs W and U: the three existing parents gain them, which is an intermediate change.
    assert env.pt.map(b, 0x2_0000, K4, W | U, env.alloc) == (FlushAll(),)
    assert env.hook.calls == [FlushAll()]
    assert len(env.alloc.allocated) == 3
    ta, tb = env.pt.translate(a), env.pt.translate(b)
    assert (ta.writable, ta.user) == (False, False)  # a's own leaf has neither bit
    assert (tb.writable, tb.user) == (True, True)
    for step in tb.steps[:-1]:
        assert step.entry & (P | W | U) == P | W | U
    # c needs W only, which the parents already have: only its page is flushed.
    env.hook.calls.clear()
    assert env.pt.map(c, 0x3_0000, K4, W, env.alloc) == (FlushPage(c, K4),)
    assert env.hook.calls == [FlushPage(c, K4)]
    # A new PT under the same PD is an intermediate change again.
    d = v4(1, 1, 2, 0)
    assert env.pt.map(d, 0x4_0000, K4, W, env.alloc) == (FlushAll(),)
    assert len(env.alloc.allocated) == 4


@pytest.mark.parametrize("levels", [4, 5])
@pytest.mark.parametrize(("size", "level"), [(M2, 2), (G1, 3)])
def test_map_large_pages(levels: int, size: int, level: int) -> None:
    env = Env(levels)
    va = env.va(*([257] + [3] * (levels - level)))
    pa = 0x7 * size
    flushes = env.pt.map(va, pa, size, W | G, env.alloc)
    assert flushes == (FlushAll(),)
    assert len(env.alloc.allocated) == levels - level
    t = env.pt.translate(va + size - 1)
    assert (t.paddr, t.page_size, t.level) == (pa + size - 1, size, level)
    assert t.entry == pa | P | W | G | PS
    assert (t.writable, t.user, t.executable) == (True, False, True)
    # A second page next to it in the same table needs no new table and no parent change.
    flushes = env.pt.map(va + size, pa + size, size, W, env.alloc)
    assert flushes == (FlushPage(va + size, size),)


def test_map_already_mapped() -> None:
    env = Env()
    four_k = v4(0, 0, 0, 3)
    env.pt.map(four_k, 0x5000, K4, W, env.alloc)
    env.pt.map(v4(0, 0, 4), 0x60_0000, M2, W, env.alloc)
    env.pt.map(v4(0, 5), 0x4000_0000, G1, W, env.alloc)
    pt_link = env.ram.get(env.pt.translate(four_k).steps[2].table, 0)
    pd_link = env.ram.get(env.pt.translate(four_k).steps[1].table, 0)
    cases = [
        (four_k, K4, 1, 0x5000 | P | W),
        (v4(0, 0, 4), M2, 2, 0x60_0000 | P | W | PS),
        (v4(0, 0, 4), K4, 2, None),  # under a 2 MiB leaf: a parent huge page
        (v4(0, 0, 0), M2, 2, pt_link),  # the 2 MiB slot links the PT of four_k
        (v4(0, 0), G1, 3, pd_link),  # the 1 GiB slot links the PD
        (v4(0, 5), G1, 3, 0x4000_0000 | P | W | PS),
    ]
    for va, size, level, entry in cases:
        before = env.ram.snapshot()
        allocated = len(env.alloc.allocated)
        env.clear_records()
        if entry is None:
            with pytest.raises(ParentHugePageError):
                env.pt.map(va, 0, size, 0, env.alloc)
            continue
        with pytest.raises(AlreadyMappedError) as info:
            env.pt.map(va, 0x8000_0000, size, 0, env.alloc)
        assert (info.value.vaddr, info.value.level, info.value.entry) == (va, level, entry)
        assert env.ram.snapshot() == before
        assert env.ram.writes == [] and env.hook.calls == []
        assert len(env.alloc.allocated) == allocated


@pytest.mark.parametrize(
    ("huge_size", "huge_level", "size"), [(M2, 2, K4), (G1, 3, K4), (G1, 3, M2)]
)
def test_map_under_a_huge_page(huge_size: int, huge_level: int, size: int) -> None:
    env = Env()
    base = v4(2, 2, 2) if huge_level == 2 else v4(2, 2)
    env.pt.map(base, 0x4000_0000, huge_size, W, env.alloc)
    huge_entry = 0x4000_0000 | P | W | PS
    before = env.ram.snapshot()
    allocated = len(env.alloc.allocated)
    env.clear_records()
    va = base + huge_size - size
    with pytest.raises(ParentHugePageError) as info:
        env.pt.map(va, 0, size, W, env.alloc)
    assert (info.value.level, info.value.entry) == (huge_level, huge_entry)
    assert env.ram.snapshot() == before and env.hook.calls == []
    assert len(env.alloc.allocated) == allocated


@pytest.mark.parametrize("limit", [0, 1, 2])
def test_map_frame_allocation_failure_changes_nothing(limit: int) -> None:
    env = Env(limit=limit)
    before = env.ram.snapshot()
    with pytest.raises(FrameAllocationError) as info:
        env.pt.map(v4(4, 4, 4, 4), 0x5000, K4, W | U, env.alloc)
    assert info.value.vaddr == v4(4, 4, 4, 4)
    assert info.value.level in (1, 2, 3)
    assert env.ram.snapshot() == before
    assert env.ram.writes == [] and env.hook.calls == []
    assert sorted(env.alloc.returned) == sorted(env.alloc.allocated)
    assert len(env.alloc.allocated) == limit
    assert env.alloc.live == set()


def test_map_range_frame_allocation_failure_with_existing_parents() -> None:
    env = Env(limit=3)
    env.pt.map(0, 0x5000, K4, W, env.alloc)  # takes all three frames
    before = env.ram.snapshot()
    with pytest.raises(FrameAllocationError) as info:
        # Slots 510 and 511 are in the existing PT; the third page needs a new PT.
        env.pt.map_range(v4(0, 0, 0, 510), 0x10_0000, 3 * K4, K4, W, env.alloc)
    assert info.value.level == 1
    assert env.ram.snapshot() == before  # slots 510 and 511 were not written either
    assert env.alloc.live == set(env.alloc.allocated)


def test_map_range_across_table_boundary() -> None:
    env = Env()
    va = v4(0, 0, 0, 510)
    assert env.pt.map_range(va, 0x10_0000, 4 * K4, K4, W, env.alloc) == (FlushAll(),)
    assert len(env.alloc.allocated) == 4  # PDPT, PD and two PTs
    for k in range(4):
        t = env.pt.translate(va + k * K4)
        assert (t.paddr, t.entry) == (0x10_0000 + k * K4, (0x10_0000 + k * K4) | P | W)
    assert env.pt.translate(va).steps[-1].table != env.pt.translate(va + 2 * K4).steps[-1].table
    # An overlap at the end makes the whole request fail without writing anything.
    before = env.ram.snapshot()
    with pytest.raises(AlreadyMappedError) as info:
        env.pt.map_range(v4(0, 0, 0, 500), 0x20_0000, 11 * K4, K4, W, env.alloc)
    assert info.value.vaddr == va
    assert env.ram.snapshot() == before


@pytest.mark.parametrize(("pages", "expect_all"), [(33, False), (34, True)])
def test_map_range_flush_ceiling(pages: int, expect_all: bool) -> None:
    env = Env()
    env.pt.map(v4(0, 0, 0, 511), 0x5000, K4, W, env.alloc)
    env.hook.calls.clear()
    flushes = env.pt.map_range(0, 0x10_0000, pages * K4, K4, W, env.alloc)
    if expect_all:
        assert flushes == (FlushAll(),)
    else:
        assert flushes == tuple(FlushPage(k * K4, K4) for k in range(pages))
    assert tuple(env.hook.calls) == flushes


def test_map_range_whole_table_of_2m() -> None:
    env = Env()
    flushes = env.pt.map_range(v4(1, 1), 0x1_0000_0000, G1, M2, W | NX, env.alloc)
    assert flushes == (FlushAll(),)
    mappings = list(env.pt.iter_mappings())
    assert len(mappings) == 512
    assert mappings[-1] == Mapping(
        v4(1, 1, 511),
        0x1_0000_0000 + 511 * M2,
        M2,
        (0x1_0000_0000 + 511 * M2) | P | W | NX | PS,
        False,
        True,
        False,
    )


@pytest.mark.parametrize(
    ("va", "pa", "size", "error", "bad"),
    [
        (0x1000, 0, M2, MisalignedAddressError, 0x1000),
        (0x20_0000, 0x1000, M2, MisalignedAddressError, 0x1000),
        (0x4000_0000, 0x20_0000, G1, MisalignedAddressError, 0x20_0000),
        (0x1001, 0x2000, K4, MisalignedAddressError, 0x1001),
        (0x0000_8000_0000_0000, 0x2000, K4, NonCanonicalAddressError, 0x0000_8000_0000_0000),
        (0x1000, 0x2000, 0x3000, InputError, None),
        (0x1000, 1 << 52, K4, InputError, None),
    ],
)
def test_map_rejects_bad_arguments(
    va: int, pa: int, size: int, error: type[GdbextError], bad: int | None
) -> None:
    env = Env()
    with pytest.raises(error) as info:
        env.pt.map(va, pa, size, W, env.alloc)
    if bad is not None:
        assert info.value.address == bad  # type: ignore[attr-defined]
    if error is MisalignedAddressError:
        assert info.value.alignment == size  # type: ignore[attr-defined]
    assert env.ram.writes == [] and env.alloc.allocated == []


def test_map_rejects_bad_flags() -> None:
    env = Env()
    with pytest.raises(InputError):
        env.pt.map(0x1000, 0x2000, K4, PS, env.alloc)  # HUGE_PAGE on a 4 KiB page
    with pytest.raises(InputError):
        env.pt.map(0x1000, 0x2000, K4, 0x3000 | W, env.alloc)  # address bits
    env_nxe = Env(nxe=False)
    with pytest.raises(InputError):  # NX is a reserved bit without EFER.NXE
        env_nxe.pt.map(0x1000, 0x2000, K4, NX, env_nxe.alloc)
    assert env.ram.writes == [] and env_nxe.ram.writes == []
    env_nxe.pt.map(0x1000, 0x2000, K4, W, env_nxe.alloc)
    env_nxe.clear_records()
    with pytest.raises(InputError):
        env_nxe.pt.update_flags(0x1000, NX | W)
    assert env_nxe.ram.writes == [] and env_nxe.pt.translate(0x1000).entry == 0x2000 | P | W


def test_map_range_length_must_stay_canonical() -> None:
    env = Env()
    with pytest.raises(NonCanonicalAddressError):
        env.pt.map_range(v4(255, 511), 0, 2 * G1, G1, 0, env.alloc)
    with pytest.raises(NonCanonicalAddressError):
        env.pt.map_range(v4(511, 511), 0, 2 * G1, G1, 0, env.alloc)
    assert env.ram.writes == []


# =================================================================================================
# Non-present but non-zero entries


def test_non_present_non_zero_leaf_is_never_touched() -> None:
    env = Env()
    va = v4(0, 0, 0, 6)
    path = env.link(va, 1, 0)
    swap = 0x0000_0005_0000_0000 | W | U  # P clear: e.g. a Linux swap entry
    env.ram.set(path[3], 6, swap)
    before = env.ram.snapshot()
    with pytest.raises(EntryInUseError) as in_use:
        env.pt.map(va, 0x5000, K4, W, env.alloc)
    assert (in_use.value.level, in_use.value.entry, in_use.value.vaddr) == (1, swap, va)
    for op in (
        lambda: env.pt.unmap(va),
        lambda: env.pt.update_flags(va, W),
        lambda: env.pt.translate(va),
    ):
        with pytest.raises(NotMappedError) as nm:
            op()
        assert (nm.value.level, nm.value.entry) == (1, swap)
    assert env.ram.snapshot() == before
    assert list(env.pt.iter_mappings()) == []
    assert env.pt.is_table_empty(path[3]) is False
    env.ram.set(path[3], 6, 0)
    assert env.pt.is_table_empty(path[3]) is True
    env.ram.set(path[3], 6, swap)
    result = env.pt.clean_up(env.alloc)
    assert result == CleanUp((), (), ())
    assert env.ram.snapshot() == before


def test_non_present_non_zero_parent() -> None:
    env = Env()
    env.pt.map(0, 0x5000, K4, W | U, env.alloc)
    path = [s.table for s in env.pt.translate(0).steps]
    swap = 0xDEAD_0000 | W
    env.ram.set(path[2], 5, swap)
    before = env.ram.snapshot()
    for size, va in ((K4, v4(0, 0, 5, 1)), (M2, v4(0, 0, 5))):
        with pytest.raises(EntryInUseError) as info:
            env.pt.map(va, 0, size, W, env.alloc)
        assert (info.value.level, info.value.entry) == (2, swap)
    with pytest.raises(NotMappedError) as nm:
        env.pt.translate(v4(0, 0, 5, 1))
    assert (nm.value.level, nm.value.entry) == (2, swap)
    assert env.ram.snapshot() == before and len(env.alloc.allocated) == 3
    # The PD holding it is not empty, so unmapping the only leaf and cleaning up frees the PT
    # but neither the PD nor anything above it.
    env.pt.unmap(v4(0, 0, 0, 0))
    assert env.pt.clean_up(env.alloc).freed == (path[3],)
    assert env.ram.get(path[2], 5) == swap
    assert env.ram.get(ROOT, 0) == path[1] | P | W | U


# =================================================================================================
# unmap


@pytest.mark.parametrize(
    ("level", "size", "leaf_pa", "pat"),
    [(1, K4, 0x12_3000, 0), (2, M2, 0x60_0000, PAT_LARGE), (3, G1, 0x1_4000_0000, PAT_LARGE)],
)
def test_unmap_returns_frame_and_size(level: int, size: int, leaf_pa: int, pat: int) -> None:
    env = Env()
    va = v4(260, 1, 1, 1) & ~(size - 1)
    leaf = leaf_pa | pat | P | W | (PS if level > 1 else 0)
    path = env.link(va, level, leaf)
    result = env.pt.unmap(va)
    assert result == Unmapped(va, leaf_pa, size, leaf, (FlushPage(va, size),))
    assert env.hook.calls == [FlushPage(va, size)]
    assert env.ram.get(path[-1], idx(va, level)) == 0
    assert env.ram.writes == [(path[-1] + 8 * idx(va, level), bytes(8))]  # tables stay
    with pytest.raises(NotMappedError) as info:
        env.pt.translate(va)
    assert (info.value.level, info.value.entry) == (level, 0)


def test_unmap_errors_write_nothing() -> None:
    env = Env()
    big = v4(0, 0, 3)
    env.link(big, 2, 0x60_0000 | P | PS | W)
    env.clear_records()
    with pytest.raises(MisalignedAddressError):
        env.pt.unmap(big + K4)
    with pytest.raises(PageSizeMismatchError) as mismatch:
        env.pt.unmap(big, K4)
    assert (mismatch.value.level, mismatch.value.wanted) == (2, K4)
    with pytest.raises(NotMappedError) as nm:
        env.pt.unmap(v4(0, 0, 4))
    assert (nm.value.level, nm.value.entry) == (2, 0)
    with pytest.raises(NotMappedError) as nm:
        env.pt.unmap(v4(9))
    assert nm.value.level == 4
    assert env.ram.writes == [] and env.hook.calls == []
    assert env.pt.unmap(big, M2).paddr == 0x60_0000


# =================================================================================================
# update_flags


def test_update_flags_keeps_address_and_pat() -> None:
    env = Env()
    va = v4(0, 0, 3)
    path = env.link(va, 2, 0x4020_0000 | PAT_LARGE | P | PS | W)
    flushes = env.pt.update_flags(va, NX | G)
    assert flushes == (FlushPage(va, M2),)
    assert env.hook.calls == [FlushPage(va, M2)]
    assert env.ram.get(path[2], 3) == 0x4020_0000 | PAT_LARGE | P | PS | NX | G
    t = env.pt.translate(va + 5)
    assert (t.paddr, t.writable, t.executable) == (0x4020_0005, False, False)


def test_update_flags_4k_and_propagation() -> None:
    env = Env()
    va = v4(1, 2, 3, 4)
    env.pt.map(va, 0x7000, K4, 0, env.alloc)
    env.hook.calls.clear()
    flushes = env.pt.update_flags(va, W | U | ACC, K4)
    assert flushes == (FlushAll(),)  # parents gained W and U
    assert env.hook.calls == [FlushAll()]
    t = env.pt.translate(va)
    assert t.entry == 0x7000 | P | W | U | ACC
    assert (t.writable, t.user) == (True, True)
    assert all(s.entry & (W | U) == W | U for s in t.steps)
    # Taking W away again changes only the leaf: parents never lose bits.
    assert env.pt.update_flags(va, U) == (FlushPage(va, K4),)
    t = env.pt.translate(va)
    assert (t.writable, t.user, t.entry) == (False, True, 0x7000 | P | U)
    assert all(s.entry & W for s in t.steps[:-1])


def test_update_flags_errors() -> None:
    env = Env()
    va = v4(1, 2, 3, 4)
    env.pt.map(va, 0x7000, K4, W, env.alloc)
    env.clear_records()
    with pytest.raises(NotMappedError) as nm:
        env.pt.update_flags(va + K4, W)
    assert (nm.value.level, nm.value.entry) == (1, 0)
    with pytest.raises(MisalignedAddressError):
        env.pt.update_flags(va + 8, W)
    with pytest.raises(InputError):
        env.pt.update_flags(va, PS)
    with pytest.raises(InputError):
        env.pt.update_flags(va, 0x1000)
    with pytest.raises(PageSizeMismatchError):
        env.pt.update_flags(va, W, M2)
    assert env.ram.writes == [] and env.hook.calls == []


# =================================================================================================
# clean_up


def test_clean_up_frees_bottom_up_and_returns_frames() -> None:
    env = Env()
    va = v4(5, 6, 7, 8)
    env.pt.map(va, 0x9000, K4, W, env.alloc)
    steps = env.pt.translate(va).steps
    pdpt, pd, pt = steps[1].table, steps[2].table, steps[3].table
    env.pt.unmap(va)
    env.hook.calls.clear()
    result = env.pt.clean_up(env.alloc)
    assert result == CleanUp((pt, pd, pdpt), (), (FlushAll(),))
    assert env.hook.calls == [FlushAll()]
    assert env.alloc.returned == [pt, pd, pdpt]
    assert env.alloc.live == set()
    assert not any(env.ram.entries(ROOT))
    # The root is never freed; an empty page table cleans up to nothing.
    env.clear_records()
    assert env.pt.clean_up(env.alloc) == CleanUp((), (), ())
    assert env.ram.writes == [] and env.hook.calls == []


def test_clean_up_keeps_non_empty_tables() -> None:
    env = Env()
    keep, drop = v4(1, 1, 1, 1), v4(1, 1, 2, 1)
    env.pt.map(keep, 0x9000, K4, W, env.alloc)
    env.pt.map(drop, 0xA000, K4, W, env.alloc)
    drop_pt = env.pt.translate(drop).steps[-1].table
    env.pt.unmap(drop)
    result = env.pt.clean_up(env.alloc)
    assert result.freed == (drop_pt,)
    assert env.pt.translate(keep).paddr == 0x9000
    assert env.alloc.live == set(env.alloc.allocated) - {drop_pt}


def test_clean_up_does_not_free_a_shared_table() -> None:
    env = Env()
    path = env.link(v4(0, 0, 0, 0), 1, 0)  # an empty PT
    pdpt, _pd, pt = path[1:]
    other_pd = env.table()
    env.ram.set(pdpt, 1, other_pd | P)
    env.ram.set(other_pd, 0, pt | P)  # the same PT, linked from a second PD
    before = env.ram.snapshot()
    result = env.pt.clean_up(env.alloc)
    assert result == CleanUp((), (pt,), ())
    assert env.ram.snapshot() == before
    # Linked twice from the same PD: same answer.
    env2 = Env()
    path2 = env2.link(v4(0, 0, 0, 0), 1, 0)
    env2.ram.set(path2[2], 1, path2[3] | P | W)
    assert env2.pt.clean_up(env2.alloc) == CleanUp((), (path2[3],), ())


def test_clean_up_does_not_follow_recursive_entry() -> None:
    env = Env()
    env.ram.set(ROOT, 511, ROOT | P | W)
    va = v4(2, 2, 2, 2)
    env.pt.map(va, 0x9000, K4, W, env.alloc)
    tables = [s.table for s in env.pt.translate(va).steps[1:]]
    env.pt.unmap(va)
    result = env.pt.clean_up(env.alloc)
    assert result.freed == tuple(reversed(tables))
    assert result.shared == ()
    assert env.ram.get(ROOT, 511) == ROOT | P | W
    assert [i for i, e in enumerate(env.ram.entries(ROOT)) if e] == [511]


def test_clean_up_range() -> None:
    env = Env()
    a, b = v4(1, 1, 1, 1), v4(300, 1, 1, 1)
    env.pt.map(a, 0x9000, K4, W, env.alloc)
    env.pt.map(b, 0xA000, K4, W, env.alloc)
    tables_b = [s.table for s in env.pt.translate(b).steps[1:]]
    env.pt.unmap(a)
    env.pt.unmap(b)
    result = env.pt.clean_up(env.alloc, AddrRange(0xFFFF_8000_0000_0000, 1 << 64))
    assert result.freed == tuple(reversed(tables_b))
    assert env.ram.get(ROOT, 1) != 0 and env.ram.get(ROOT, 300) == 0
    assert len(env.pt.clean_up(env.alloc).freed) == 3


# =================================================================================================
# Read-only


def _all_changes(env: Env) -> Iterable[tuple[str, Callable[[], object]]]:
    yield "map", lambda: env.pt.map(v4(0, 0, 0, 9), 0x9000, K4, W, env.alloc)
    yield "map_range", lambda: env.pt.map_range(0x20_0000, 0, 2 * K4, K4, W, env.alloc)
    yield "unmap", lambda: env.pt.unmap(v4(0, 0, 0, 1))
    yield "update_flags", lambda: env.pt.update_flags(v4(0, 0, 0, 1), W | U)
    yield "clean_up", lambda: env.pt.clean_up(env.alloc)


@pytest.mark.parametrize("how", ["allow_writes", "mapper"])
def test_read_only_refuses_every_change(how: str) -> None:
    env = Env(allow_writes=how == "mapper", read_only=how == "mapper")
    env.link(v4(0, 0, 0, 1), 1, 0x5000 | P)
    env.link(v4(0, 0, 1, 0), 1, 0)  # an empty PT that clean_up would free
    before = env.ram.snapshot()
    for name, op in _all_changes(env):
        with pytest.raises(ReadOnlyError):
            op()
        assert env.ram.writes == [], name
    assert env.ram.snapshot() == before
    assert env.alloc.allocated == [] and env.hook.calls == []
    assert env.pt.translate(v4(0, 0, 0, 1)).paddr == 0x5000  # reading still works


def test_walk_of_a_root_outside_ram_is_an_error() -> None:
    pt = X86PageTable(Ram(), 0x4000_0000)
    with pytest.raises(TableOutsideRamError) as info:
        list(pt.iter_runs())
    assert (info.value.table, info.value.entry) == (0x4000_0000, None)
    assert "root table 0x40000000 is outside physical memory" in str(info.value)
