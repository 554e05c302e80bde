"""Changes by the paging engine (:mod:`gdbext.x86.mutate`): map, unmap, update_flags, clean_up,
and the refusal to change a read-only table.

Every expectation is computed here, independently of the engine, over the hand-built tables of
:mod:`support.pagetables`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest
from support.pagetables import (
    ACC,
    ADDR,
    G1,
    K4,
    M2,
    NX,
    PAT_LARGE,
    POOL,
    PS,
    ROOT,
    Env,
    G,
    P,
    U,
    W,
    idx,
    v4,
)

from gdbext.addr import AddrRange
from gdbext.errors import (
    AlreadyMappedError,
    EntryInUseError,
    FrameAllocationError,
    GdbextError,
    InputError,
    MisalignedAddressError,
    NonCanonicalAddressError,
    NotMappedError,
    PageSizeMismatchError,
    ParentHugePageError,
    ReadOnlyError,
)
from gdbext.x86.records import (
    CleanUp,
    Mapping,
    Unmapped,
)
from gdbext.x86.tlbflush import FlushAll, FlushPage


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
