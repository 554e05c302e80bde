"""Property tests of the paging engine against an independent reference model.

A Hypothesis state machine drives random map_range/map, unmap, update_flags and clean_up
calls (4 KiB, 2 MiB and 1 GiB pages) on a small set of virtual addresses in both halves, so
that overlaps actually happen, and checks after every step that

- the engine agrees with a reference model kept here (leaves by base address, and which tables
  exist with which W/U bits in the entry that links them), including that every error leaves
  both memory and model unchanged;
- the raw page-table memory, read by a walker written here, holds exactly the model's tables
  and leaves, and the allocator's live frames are exactly those tables (no leak, no reuse);
- ``translate`` of sampled addresses and the full (and range-restricted) ``iter_mappings``
  agree with the model, effective permissions included.

Effective permissions: ``map`` and ``update_flags`` OR the leaf's W/U into every parent entry
on the path and never clear them, so a page's effective W (U) is its own leaf bit ANDed with
the bits its parents have accumulated; NX is never written into parents, so the effective NX
is the leaf's.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from depth import examples
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from gdbext.addr import AddrRange
from gdbext.errors import (
    AlreadyMappedError,
    FrameAllocationError,
    GdbextError,
    InputError,
    MisalignedAddressError,
    NonCanonicalAddressError,
    NotMappedError,
    PageSizeMismatchError,
    ParentHugePageError,
    PhysMemoryError,
)
from gdbext.x86.paging import X86PageTable
from gdbext.x86.records import CleanUp, LeafRun, Mapping, Translation, Unmapped
from gdbext.x86.tlbflush import Flush, FlushAll, FlushPage

P, W, U, PWT, PCD, ACC, DIRTY, PS, G = 1, 2, 4, 8, 16, 32, 64, 128, 256
BIT_9, BIT_52, BIT_62 = 1 << 9, 1 << 52, 1 << 62
NX = 1 << 63
ADDR = 0x000F_FFFF_FFFF_F000
K4, M2, G1 = 1 << 12, 1 << 21, 1 << 30
SIZES = (K4, M2, G1)
LEVEL_OF = {K4: 1, M2: 2, G1: 3}
RAM_SIZE = 1 << 20
ROOT = 0x1000
POOL_START, POOL_END = 0x2000, RAM_SIZE
GARBAGE = b"\x5a" * K4
FLUSH_PAGE_CEILING = 33  # documented: above this many pages a change asks for a full flush


def shift(level: int) -> int:
    return 12 + 9 * (level - 1)


def span(level: int) -> int:
    return 1 << shift(level)


def canonical(va: int, levels: int) -> bool:
    bits = 12 + 9 * levels
    top = va >> (bits - 1)
    return 0 <= va < 1 << 64 and top in (0, (1 << (65 - bits)) - 1)


# --- Memory, allocator, flush recorder -----------------------------------------------------------


class Ram:
    def __init__(self) -> None:
        self.buf = bytearray(RAM_SIZE)

    def read(self, paddr: int, size: int) -> bytes:
        if paddr < 0 or paddr + size > RAM_SIZE:
            raise PhysMemoryError(paddr, size)
        return bytes(self.buf[paddr : paddr + size])

    def write(self, paddr: int, data: bytes) -> None:
        if paddr < 0 or paddr + len(data) > RAM_SIZE:
            raise PhysMemoryError(paddr, len(data))
        self.buf[paddr : paddr + len(data)] = data

    def entries(self, table: int) -> tuple[int, ...]:
        return struct.unpack_from("<512Q", self.buf, table)


class Frames:
    """Hands out garbage-filled frames; refills a frame with garbage when it is given back."""

    def __init__(self, ram: Ram) -> None:
        self.ram = ram
        self.free = list(range(POOL_START, POOL_END, K4))
        self.live: set[int] = set()
        self.budget: int | None = None  # allocations still allowed (None: unlimited)
        for frame in self.free:
            ram.buf[frame : frame + K4] = GARBAGE

    def allocate_frame(self) -> int | None:
        if self.budget is not None:
            if self.budget == 0:
                return None
            self.budget -= 1
        frame = self.free.pop()
        self.live.add(frame)
        return frame

    def deallocate_frame(self, paddr: int) -> None:
        assert paddr in self.live, f"0x{paddr:x} given back but not handed out"
        self.live.remove(paddr)
        self.ram.buf[paddr : paddr + K4] = GARBAGE
        self.free.append(paddr)


class Hook:
    def __init__(self) -> None:
        self.calls: list[Flush] = []

    def __call__(self, flush: Flush) -> None:
        self.calls.append(flush)


# --- Reference model -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Leaf:
    paddr: int
    size: int
    flags: int  # as requested: no PRESENT, no HUGE_PAGE

    @property
    def entry(self) -> int:
        return self.paddr | self.flags | P | (PS if self.size != K4 else 0)


TableKey = tuple[int, int]  # (level of the table, va >> shift(level + 1))


class Model:
    """Leaves by base address, and tables by (level, prefix) -> W|U bits of their parent entry."""

    def __init__(self, levels: int) -> None:
        self.levels = levels
        self.leaves: dict[int, Leaf] = {}
        self.tables: dict[TableKey, int] = {}

    def copy(self) -> Model:
        other = Model(self.levels)
        other.leaves = dict(self.leaves)
        other.tables = dict(self.tables)
        return other

    def key(self, va: int, level: int) -> TableKey:
        return (level, va >> shift(level + 1))

    def path(self, va: int, leaf_level: int) -> list[TableKey]:
        """Keys of the tables below the root down to the one holding a leaf at ``leaf_level``."""
        return [self.key(va, level) for level in range(self.levels - 1, leaf_level - 1, -1)]

    def leaf_at(self, va: int) -> tuple[int, Leaf] | None:
        """The leaf covering ``va`` and its base."""
        for size in SIZES:
            base = va & ~(size - 1)
            leaf = self.leaves.get(base)
            if leaf is not None and leaf.size == size:
                return base, leaf
        return None

    def missing_level(self, va: int) -> int:
        """The level whose entry for ``va`` is empty (``va`` must not be mapped)."""
        for level in range(self.levels, 0, -1):
            if level == 1 or self.key(va, level - 1) not in self.tables:
                return level
        raise AssertionError("unreachable")

    def effective(self, base: int, leaf: Leaf) -> tuple[bool, bool, bool]:
        """(user, writable, executable) as the MMU computes them."""
        bits = leaf.flags & (W | U)
        for key in self.path(base, LEVEL_OF[leaf.size]):
            bits &= self.tables[key]
        return bool(bits & U), bool(bits & W), not leaf.flags & NX

    def page_error(self, va: int, size: int) -> type[GdbextError] | None:
        """Why one page cannot be mapped, checking parents top-down and then the slot."""
        leaf_level = LEVEL_OF[size]
        for level in range(self.levels, leaf_level, -1):
            if level <= 3:
                huge = self.leaves.get(va & ~(span(level) - 1))
                if huge is not None and huge.size == span(level):
                    return ParentHugePageError
        own = self.leaves.get(va)
        if own is not None and own.size == size:
            return AlreadyMappedError
        if leaf_level > 1 and self.key(va, leaf_level - 1) in self.tables:
            return AlreadyMappedError  # the slot links a table (even an empty one)
        return None

    def mappings(self, lo: int = 0, hi: int = 1 << 64) -> list[Mapping]:
        out: list[Mapping] = []
        if lo >= hi:
            return out
        for base in sorted(self.leaves):
            leaf = self.leaves[base]
            if base < hi and lo < base + leaf.size:
                user, writable, executable = self.effective(base, leaf)
                out.append(
                    Mapping(base, leaf.paddr, leaf.size, leaf.entry, user, writable, executable)
                )
        return out

    def survivors(self) -> dict[TableKey, int]:
        """The tables clean_up keeps: those with a leaf somewhere below them."""
        keep: set[TableKey] = set()
        for base, leaf in self.leaves.items():
            keep.update(self.path(base, LEVEL_OF[leaf.size]))
        return {k: v for k, v in self.tables.items() if k in keep}


def raw_walk(ram: Ram, levels: int) -> tuple[dict[TableKey, tuple[int, int]], dict[int, int]]:
    """Read page-table memory directly: tables {key: (frame, linking entry)}, leaves {va: entry}."""
    tables: dict[TableKey, tuple[int, int]] = {}
    leaves: dict[int, int] = {}
    va_bits = 12 + 9 * levels

    def canon(va: int) -> int:
        if va >> (va_bits - 1) & 1:
            va |= ((1 << 64) - 1) ^ ((1 << va_bits) - 1)
        return va

    def walk(table: int, level: int, base: int) -> None:
        for i, entry in enumerate(ram.entries(table)):
            if entry == 0:
                continue
            assert entry & P, f"non-present non-zero entry 0x{entry:x} was written"
            va = canon(base + (i << shift(level)))
            if level == 1 or (level <= 3 and entry & PS):
                leaves[va] = entry
                continue
            assert level >= 2
            key = (level - 1, va >> shift(level))
            assert key not in tables
            tables[key] = (entry & ADDR, entry)
            walk(entry & ADDR, level - 1, va)

    walk(ROOT, levels, 0)
    return tables, leaves


# --- Strategies ----------------------------------------------------------------------------------

FLAG_BITS = [W, U, NX, G, W, U, NX, PWT, ACC, DIRTY, BIT_9, BIT_52, BIT_62]
flag_sets = st.lists(st.sampled_from(FLAG_BITS), max_size=5).map(lambda bits: sum(set(bits)))
page_indices = st.sampled_from([0, 0, 1, 511])


class PagingMachine(RuleBasedStateMachine):
    LEVELS = 4
    #: Run the engine with its table cache and translation memo (they must never go stale).
    CACHE = False
    #: 1 GiB-aligned bases: two sharing a PDPT, the top of the lower half, the higher half.
    BASES: tuple[int, ...] = (
        0x0000_0000_0000_0000,
        0x0000_0000_4000_0000,
        0x0000_7FFF_C000_0000,
        0xFFFF_8000_0000_0000,
        0xFFFF_FFFF_C000_0000,
    )

    def __init__(self) -> None:
        super().__init__()
        self.ram = Ram()
        self.alloc = Frames(self.ram)
        self.hook = Hook()
        self.pt = X86PageTable(
            self.ram, ROOT, self.LEVELS, allow_writes=True, flush_hook=self.hook, cache=self.CACHE
        )
        self.model = Model(self.LEVELS)
        self.current_rule = ""
        self.samples = sorted(
            {
                base + k2 * M2 + k1 * K4 + off
                for base in self.BASES
                for k2 in (0, 1, 511)
                for k1 in (0, 1, 511)
                for off in (0, 0xFF8)
            }
        )

    # --- helpers --------------------------------------------------------------------------------

    def page(self, base_i: int, size: int, k2: int, k1: int) -> int:
        base = self.BASES[base_i % len(self.BASES)]
        if size == G1:
            return base
        if size == M2:
            return base + k2 * M2
        return base + k2 * M2 + k1 * K4

    def expect_failure(self, error: type[GdbextError], call: Callable[[], object]) -> GdbextError:
        """Run ``call``; it must raise ``error`` and change nothing at all."""
        before = bytes(self.ram.buf)
        live = set(self.alloc.live)
        with pytest.raises(error) as info:
            call()
        assert isinstance(info.value, error)
        event(f"{self.current_rule}: {error.__name__}")
        assert self.ram.buf == before
        assert self.alloc.live == live
        assert self.hook.calls == []
        return info.value

    def returned(self, flushes: tuple[Flush, ...]) -> None:
        kind = type(flushes[0]).__name__ if flushes else "no flush"
        event(f"{self.current_rule}: ok, {kind}")
        assert tuple(self.hook.calls) == flushes
        self.hook.calls.clear()

    # --- rules ----------------------------------------------------------------------------------

    @rule(
        base_i=st.integers(0, 7),
        size=st.sampled_from(SIZES),
        k2=page_indices,
        k1=page_indices,
        count=st.sampled_from([1, 1, 1, 2, 3]),
        pa_raw=st.integers(0, (1 << 52) - 1),
        flags=flag_sets,
        budget=st.sampled_from([None, None, None, 0, 1, 2]),
    )
    def map_pages(
        self,
        base_i: int,
        size: int,
        k2: int,
        k1: int,
        count: int,
        pa_raw: int,
        flags: int,
        budget: int | None,
    ) -> None:
        self.current_rule = f"map {size >> 10}K x{count}"
        va = self.page(base_i, size, k2, k1)
        pa = pa_raw & ~(size - 1)
        length = count * size
        m = self.model

        def call() -> tuple[Flush, ...]:
            if count == 1 and base_i % 2:
                return self.pt.map(va, pa, size, flags, self.alloc)
            return self.pt.map_range(va, pa, length, size, flags, self.alloc)

        self.alloc.budget = budget
        try:
            last = va + length - 1
            half = 1 << (12 + 9 * self.LEVELS - 1)
            if not canonical(last, self.LEVELS) or va < half <= last:
                self.expect_failure(NonCanonicalAddressError, call)
                return
            if pa + length > 1 << 52:
                self.expect_failure(InputError, call)
                return
            pages = [va + i * size for i in range(count)]
            for page in pages:
                error = m.page_error(page, size)
                if error is not None:
                    self.expect_failure(error, call)
                    return
            leaf_level = LEVEL_OF[size]
            needed = {key for page in pages for key in m.path(page, leaf_level)}
            new_tables = needed - m.tables.keys()
            if budget is not None and len(new_tables) > budget:
                err = self.expect_failure(FrameAllocationError, call)
                assert isinstance(err, FrameAllocationError) and err.vaddr == va
                return
            bits = flags & (W | U)
            gains = any(m.tables[k] | bits != m.tables[k] for k in needed - new_tables)
            changed = bool(new_tables) or gains
            for key in needed:
                m.tables[key] = m.tables.get(key, 0) | bits
            for i, page in enumerate(pages):
                m.leaves[page] = Leaf(pa + i * size, size, flags)
            flushes = call()
            if changed or count > FLUSH_PAGE_CEILING:
                assert flushes == (FlushAll(),)
            else:
                assert flushes == tuple(FlushPage(page, size) for page in pages)
            self.returned(flushes)
        finally:
            self.alloc.budget = None

    def _lookup(self, va: int, page_size: int | None) -> tuple[int, Leaf] | type[GdbextError]:
        found = self.model.leaf_at(va)
        if found is None:
            return NotMappedError
        base, leaf = found
        if page_size is not None and page_size != leaf.size:
            return PageSizeMismatchError
        if base != va:
            return MisalignedAddressError
        return found

    def target(self, pick: int, sample: int, misalign: bool) -> int:
        if self.model.leaves and pick % 4:
            bases = sorted(self.model.leaves)
            va = bases[pick % len(bases)]
            return va + (K4 if misalign and self.model.leaves[va].size > K4 else 0)
        return self.samples[sample % len(self.samples)] & ~0xFFF

    @rule(
        pick=st.integers(0, 1 << 16),
        sample=st.integers(0, 1 << 16),
        misalign=st.booleans(),
        size_hint=st.sampled_from([None, None, K4, M2, G1]),
    )
    def unmap(self, pick: int, sample: int, misalign: bool, size_hint: int | None) -> None:
        self.current_rule = "unmap"
        va = self.target(pick, sample, misalign)
        found = self._lookup(va, size_hint)
        if not isinstance(found, tuple):
            err = self.expect_failure(found, lambda: self.pt.unmap(va, size_hint))
            if isinstance(err, NotMappedError):
                assert (err.level, err.entry) == (self.model.missing_level(va), 0)
            return
        self._unmap_leaf(va, size_hint)

    def _unmap_leaf(self, va: int, size_hint: int | None = None) -> None:
        base, leaf = va, self.model.leaves[va]
        result = self.pt.unmap(va, size_hint)
        flushes = (FlushPage(base, leaf.size),)
        assert result == Unmapped(base, leaf.paddr, leaf.size, leaf.entry, flushes)
        self.returned(result.flushes)
        del self.model.leaves[base]

    @rule(base_i=st.integers(0, 7))
    def empty_a_region_and_clean_up(self, base_i: int) -> None:
        """Unmap every leaf of one 1 GiB region, so that clean_up has tables to free."""
        self.current_rule = "unmap region"
        used = sorted({va & ~(G1 - 1) for va in self.model.leaves}) or [0]
        base = used[base_i % len(used)]
        for va in sorted(self.model.leaves):
            if base <= va < base + G1:
                self._unmap_leaf(va)
        self.clean_up()

    @rule(
        pick=st.integers(0, 1 << 16),
        sample=st.integers(0, 1 << 16),
        misalign=st.booleans(),
        size_hint=st.sampled_from([None, None, K4, M2, G1]),
        flags=flag_sets,
    )
    def update_flags(
        self, pick: int, sample: int, misalign: bool, size_hint: int | None, flags: int
    ) -> None:
        self.current_rule = "update_flags"
        va = self.target(pick, sample, misalign)
        found = self._lookup(va, size_hint)
        if not isinstance(found, tuple):
            self.expect_failure(found, lambda: self.pt.update_flags(va, flags, size_hint))
            return
        base, leaf = found
        m = self.model
        bits = flags & (W | U)
        keys = m.path(base, LEVEL_OF[leaf.size])
        changed = any(m.tables[k] | bits != m.tables[k] for k in keys)
        for key in keys:
            m.tables[key] |= bits
        m.leaves[base] = Leaf(leaf.paddr, leaf.size, flags)
        flushes = self.pt.update_flags(va, flags, size_hint)
        assert flushes == ((FlushAll(),) if changed else (FlushPage(base, leaf.size),))
        self.returned(flushes)

    @rule()
    def clean_up(self) -> None:
        """Frees exactly the tables with no leaf below them; every mapping is unchanged."""
        self.current_rule = "clean_up"
        tables_before, _ = raw_walk(self.ram, self.LEVELS)
        mappings_before = list(self.pt.iter_mappings())
        translations_before = [self.pt.translate(m.vaddr) for m in mappings_before]
        keep = self.model.survivors()
        empty_frames = {frame for key, (frame, _) in tables_before.items() if key not in keep}
        result = self.pt.clean_up(self.alloc)
        assert isinstance(result, CleanUp)
        assert len(result.freed) == len(set(result.freed))
        assert set(result.freed) == empty_frames  # only, and all, the empty tables
        assert result.shared == ()
        assert result.flushes == ((FlushAll(),) if empty_frames else ())
        assert not set(result.freed) & self.alloc.live  # given back to the allocator
        assert ROOT not in result.freed
        self.returned(result.flushes)
        self.model.tables = keep
        assert list(self.pt.iter_mappings()) == mappings_before
        assert [self.pt.translate(m.vaddr) for m in mappings_before] == translations_before

    @rule(lo_i=st.integers(0, 1 << 16), hi_i=st.integers(0, 1 << 16))
    def walk_range(self, lo_i: int, hi_i: int) -> None:
        points = [*self.samples, 1 << 64]
        lo, hi = sorted((points[lo_i % len(points)], points[hi_i % len(points)]))
        got = list(self.pt.iter_mappings(AddrRange(lo, hi)))
        assert got == self.model.mappings(lo, hi)

    # --- the check after every step -------------------------------------------------------------

    def check(self) -> None:
        m = self.model
        tables, leaves = raw_walk(self.ram, self.LEVELS)
        # Memory holds exactly the model's tables (with their parent W/U bits) and leaves.
        assert {k: entry & ~ADDR for k, (_, entry) in tables.items()} == {
            k: P | bits for k, bits in m.tables.items()
        }
        assert leaves == {base: leaf.entry for base, leaf in m.leaves.items()}
        # Every live frame is a table and every table a live frame, each used once.
        frames = [frame for frame, _ in tables.values()]
        assert len(frames) == len(set(frames))
        assert set(frames) == self.alloc.live
        # The engine's view. No table is linked twice, so collapsing aliases changes nothing.
        expected = m.mappings()
        assert list(self.pt.iter_mappings()) == expected
        runs = list(self.pt.iter_runs(aliases="collapse"))
        assert all(type(r) is LeafRun for r in runs)
        assert [mp for r in runs if isinstance(r, LeafRun) for mp in r.mappings()] == expected
        for va in self.samples:
            found = m.leaf_at(va)
            if found is None:
                # try/except rather than pytest.raises: this runs ~90 times a step.
                try:
                    self.pt.translate(va)
                except NotMappedError as error:
                    assert (error.level, error.entry) == (m.missing_level(va), 0)
                else:
                    raise AssertionError(f"0x{va:x} translated; the model has no leaf there")
                assert self.pt.try_translate(va) is None
                continue
            base, leaf = found
            t = self.pt.translate(va)
            assert isinstance(t, Translation)
            user, writable, executable = m.effective(base, leaf)
            assert (t.paddr, t.page_size, t.entry, t.level) == (
                leaf.paddr + va - base,
                leaf.size,
                leaf.entry,
                LEVEL_OF[leaf.size],
            )
            assert (t.user, t.writable, t.executable) == (user, writable, executable)

    @invariant()
    def agrees_with_model(self) -> None:
        self.check()


class PagingMachine5(PagingMachine):
    LEVELS = 5
    BASES = (
        0x0000_0000_0000_0000,
        0x0000_0000_4000_0000,
        0x0000_8000_0000_0000,  # canonical only with LA57: PML5 0, PML4 256
        0x00FF_FFFF_C000_0000,
        0xFF00_0000_0000_0000,
        0xFFFF_FFFF_C000_0000,
    )


#: Runs of each 4- and 5-level machine (the cached one does half), 40 steps each: 8 by default
#: (a second or two a machine), 120 under GDBEXT_TEST_DEPTH=full (CI; about 20 s a machine).
EXAMPLES = examples(120, quick=8)


def _settings(count: int) -> settings:
    return settings(
        max_examples=count,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


TestPaging4 = PagingMachine.TestCase
TestPaging4.settings = _settings(EXAMPLES)
TestPaging5 = PagingMachine5.TestCase
TestPaging5.settings = _settings(EXAMPLES)


class PagingMachineCached(PagingMachine):
    CACHE = True


TestPagingCached = PagingMachineCached.TestCase
TestPagingCached.settings = _settings(max(EXAMPLES // 2, 1))
