"""Translation by the paging engine (:meth:`~gdbext.x86.paging.X86PageTable.translate`).

Every expectation is computed here, independently of the engine, over the hand-built tables of
:mod:`support.pagetables`.
"""

from __future__ import annotations

import itertools

import pytest
from support.pagetables import (
    ACC,
    DIRTY,
    G1,
    K4,
    M2,
    NX,
    PAT_LARGE,
    PS,
    ROOT,
    Env,
    G,
    P,
    Ram,
    U,
    W,
    idx,
    steps_of,
    v4,
    v5,
)

from gdbext.errors import (
    HugePageForbiddenError,
    NonCanonicalAddressError,
    NotMappedError,
    ReservedBitsError,
    TableOutsideRamError,
)
from gdbext.x86.paging import X86PageTable
from gdbext.x86.records import (
    Anomaly,
    Translation,
    WalkStep,
)


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


def test_cached_translations_equal_fresh_walks_region_by_region() -> None:
    """With ``cache=True`` a translation may start from a remembered page table or large page
    (by 2 MiB region): every result equals the uncached walk's, steps included, and an entry
    changed through the page table (or outside it, then ``invalidate_cache``) is seen."""
    env = Env()
    pt_path = env.link(v4(1, 2, 3, 0), 1, 0x5000 | P | W | ACC)
    env.ram.set(pt_path[-1], 7, 0x7000 | P | U)  # W comes from nowhere: parents allow it
    env.ram.set(pt_path[-1], 9, 0x9000)  # not present
    env.link(v4(1, 2, 4), 2, 0x4060_0000 | P | W | PS | NX)  # a 2 MiB leaf, NX
    cached = X86PageTable(env.ram, ROOT, 4, cache=True, allow_writes=True)
    fresh = X86PageTable(env.ram, ROOT, 4)
    addresses = [
        v4(1, 2, 3, 0, off=0x10),
        v4(1, 2, 3, 7, off=0x20),
        v4(1, 2, 3, 0, off=0x30),
        v4(1, 2, 4, 0, off=0x40),
        v4(1, 2, 4, 300, off=0x50),
        v4(1, 2, 4, 511, off=0xFFF),
    ]
    for _ in range(2):
        for va in addresses:
            assert cached.translate(va) == fresh.translate(va)
    got = cached.translate(v4(1, 2, 4, 300, off=0x50))
    assert (got.paddr, got.page_size, got.executable) == (0x4072_C050, M2, False)
    with pytest.raises(NotMappedError) as info:
        cached.translate(v4(1, 2, 3, 9))  # from the remembered page table: all steps
    assert info.value.steps == steps_of(env, v4(1, 2, 3, 9), pt_path, 1)
    cached.update_flags(v4(1, 2, 3, 7), P | W)
    assert cached.translate(v4(1, 2, 3, 7)).writable
    env.ram.set(pt_path[-1], 7, 0x8000 | P)  # behind the page table's back
    cached.invalidate_cache()
    assert cached.translate(v4(1, 2, 3, 7, off=1)).paddr == 0x8001
