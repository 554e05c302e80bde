"""The rules of a paging-structure entry (:mod:`gdbext.x86.entries`) and how the page table
applies them: reserved bits by MAXPHYADDR and EFER.NXE, the leaf test of each level, link and
frame addresses, the permission fold, and ``from_cpu`` taking the CPU's MAXPHYADDR.

Expected masks are spelled out as literals (Intel SDM vol. 3, 4.5), not computed by the code
under test.
"""

from __future__ import annotations

import pytest
from support.pagetables import ACC, DIRTY, NX, PS, ROOT, Env, P, Ram, U, W, v4

from gdbext.cpu import CpuState
from gdbext.errors import (
    GdbextError,
    HugePageForbiddenError,
    InputError,
    PagingLevelsError,
    PhysBitsError,
    ReservedBitsError,
)
from gdbext.x86.entries import (
    PERM_KEY,
    ROOT_ACCESS,
    access,
    access_by_leaf,
    decode,
    entry_rules,
    fold,
    frame_address,
    huge_forbidden,
    is_leaf,
    is_link,
    link_address,
    reserved_bits,
)
from gdbext.x86.paging import X86PageTable
from gdbext.x86.records import Anomaly, LeafRun

#: Address bits at or above MAXPHYADDR, up to bit 51, by MAXPHYADDR.
ABOVE = {36: 0x000F_FFF0_0000_0000, 40: 0x000F_FF00_0000_0000, 46: 0x000F_C000_0000_0000, 52: 0}
#: Address bits below MAXPHYADDR, from bit 12.
ADDRESS = {36: 0x0000_000F_FFFF_F000, 46: 0x0000_3FFF_FFFF_F000, 52: 0x000F_FFFF_FFFF_F000}
LOW_2M = 0x0000_0000_001F_E000  # bits 13..20: reserved in a 2 MiB leaf
LOW_1G = 0x0000_0000_3FFF_E000  # bits 13..29: reserved in a 1 GiB leaf
CR0_PG, CR4_PAE, CR4_LA57 = 1 << 31, 1 << 5, 1 << 12
EFER_LONG_NX = (1 << 8) | (1 << 10) | (1 << 11)


@pytest.mark.parametrize("bits", [36, 46, 52])
@pytest.mark.parametrize("nxe", [True, False])
def test_reserved_masks_by_maxphyaddr_and_level(bits: int, nxe: bool) -> None:
    rules = entry_rules(bits, nxe)
    base = ABOVE[bits] | (0 if nxe else NX)
    assert rules.addr_mask == ADDRESS[bits]
    assert rules.nx_bit == (NX if nxe else 0)
    assert [rules.level(n).leaf_reserved for n in (1, 2, 3)] == [
        base,
        base | LOW_2M,
        base | LOW_1G,
    ]
    assert [rules.level(n).link_reserved for n in (2, 3, 4, 5)] == [
        base,
        base,
        base | PS,
        base | PS,
    ]
    # Levels 4 and 5 have no leaves.
    assert rules.level(4).leaf_reserved == rules.level(5).leaf_reserved == 0


@pytest.mark.parametrize("bits", [36, 46, 52])
def test_reserved_bits_of_entries(bits: int) -> None:
    rules = entry_rules(bits)
    pt, pd, pdpt, pml4 = (rules.level(n) for n in (1, 2, 3, 4))
    top = 1 << 51  # reserved below 52 bits, an address bit at 52
    assert reserved_bits(0x5000 | P | top, pt) == (top if bits < 52 else 0)
    assert reserved_bits(0x4020_0000 | P | PS | (1 << 13), pd) == 1 << 13
    assert reserved_bits(0x4020_0000 | P | PS | (1 << 12), pd) == 0  # PAT, not reserved
    assert reserved_bits(0x4000_0000 | P | PS | (1 << 29), pdpt) == 1 << 29
    assert reserved_bits(0x4000_0000 | P | (1 << 29), pdpt) == 0  # a link: bit 29 is address
    assert reserved_bits(0x2000 | P | PS, pml4) == PS
    assert reserved_bits(0x2000 | P | NX, pml4) == 0  # NX allowed with NXE
    assert reserved_bits(0x2000 | P | NX, entry_rules(bits, nxe=False).level(4)) == NX


def test_leaf_test_per_level() -> None:
    rules = entry_rules()
    plain, huge = 0x20_0000 | P, 0x20_0000 | P | PS
    assert [is_leaf(plain, rules.level(n)) for n in range(1, 6)] == [
        True,
        False,
        False,
        False,
        False,
    ]
    assert [is_leaf(huge, rules.level(n)) for n in range(1, 6)] == [True, True, True, False, False]
    assert [huge_forbidden(huge, rules.level(n)) for n in range(1, 6)] == [
        False,
        False,
        False,
        True,
        True,
    ]
    assert [is_link(plain, rules.level(n)) for n in range(1, 6)] == [False, True, True, True, True]
    assert not is_link(plain & ~P, rules.level(4))


@pytest.mark.parametrize("bits", [36, 46, 52])
def test_link_and_frame_addresses(bits: int) -> None:
    rules = entry_rules(bits)
    every = ADDRESS[52] | NX | 0xFFF  # every address bit of 52 and every flag bit
    assert link_address(every, rules.level(4)) == ADDRESS[bits]
    assert frame_address(every, rules.level(1)) == ADDRESS[bits]
    assert frame_address(every, rules.level(2)) == ADDRESS[bits] & ~0x1F_FFFF
    assert frame_address(every, rules.level(3)) == ADDRESS[bits] & ~0x3FFF_FFFF
    entry = decode(0x8000_0000_4020_10E3, 2, rules)  # 2 MiB leaf, PAT set
    assert (entry.present, entry.leaf, entry.link, entry.address) == (
        True,
        True,
        False,
        0x4020_0000,
    )
    assert decode(0x4020_1062, 2, rules).address == 0  # not present: nothing decoded


def test_permission_fold() -> None:
    for nx_bit in (NX, 0):
        for upper in range(8):
            for lower in range(8):
                a = (W if upper & 1 else 0) | (U if upper & 2 else 0) | (NX if upper & 4 else 0)
                b = (W if lower & 1 else 0) | (U if lower & 2 else 0) | (NX if lower & 4 else 0)
                user, writable, executable = access(fold(fold(ROOT_ACCESS, a, nx_bit), b, nx_bit))
                assert user == bool(upper & 2 and lower & 2)
                assert writable == bool(upper & 1 and lower & 1)
                assert executable == (not nx_bit or not (upper & 4 or lower & 4))


@pytest.mark.parametrize("bits", [31, 53, 0])
def test_maxphyaddr_out_of_range_is_a_gdbext_error(bits: int) -> None:
    with pytest.raises(PhysBitsError) as info:
        entry_rules(bits)
    assert isinstance(info.value, InputError)
    assert info.value.max_phys_bits == bits
    assert str(info.value) == f"MAXPHYADDR must be 32..52, not {bits}"
    with pytest.raises(PhysBitsError):
        X86PageTable(Ram(), ROOT, max_phys_bits=bits)


@pytest.mark.parametrize("levels", [3, 6, 0])
def test_levels_other_than_4_and_5_are_a_gdbext_error(levels: int) -> None:
    with pytest.raises(PagingLevelsError) as info:
        X86PageTable(Ram(), ROOT, levels)
    assert isinstance(info.value, GdbextError) and info.value.levels == levels
    assert str(info.value) == f"x86-64 paging has 4 or 5 levels, not {levels}"


def _leaf_at_bit_40(max_phys_bits: int) -> Env:
    """A 4 KiB leaf at v4(0, 0, 0, 1) whose frame has address bit 40 set."""
    env = Env(max_phys_bits=max_phys_bits, allow_writes=False)
    env.link(v4(0, 0, 0, 1), 1, (1 << 40) | 0x7000 | P | W | ACC | DIRTY)
    return env


def test_translate_honours_maxphyaddr() -> None:
    va = v4(0, 0, 0, 1, off=0x123)
    assert _leaf_at_bit_40(46).pt.translate(va).paddr == (1 << 40) | 0x7123
    with pytest.raises(ReservedBitsError) as info:
        _leaf_at_bit_40(40).pt.translate(va)
    assert (info.value.level, info.value.bits) == (1, 1 << 40)


def test_walk_honours_maxphyaddr() -> None:
    [run] = _leaf_at_bit_40(46).pt.iter_runs()
    assert isinstance(run, LeafRun) and run.paddr == (1 << 40) | 0x7000
    [anomaly] = _leaf_at_bit_40(36).pt.iter_runs()
    assert isinstance(anomaly, Anomaly)
    assert (anomaly.kind, anomaly.level, anomaly.detail) == (
        "reserved-bits",
        1,
        "bits 0x10000000000",
    )


def _cpu(max_phys_bits: int | None, la57: bool = False) -> CpuState:
    return CpuState(
        cr0=CR0_PG,
        cr3=ROOT | 0x5,  # PCID bits are not part of the root
        cr4=CR4_PAE | (CR4_LA57 if la57 else 0),
        efer=EFER_LONG_NX,
        max_phys_bits=max_phys_bits,
    )


def test_from_cpu_honours_max_phys_bits() -> None:
    ram = _leaf_at_bit_40(52).ram
    va = v4(0, 0, 0, 1)
    narrow = X86PageTable.from_cpu(ram, _cpu(40))
    assert (narrow.root, narrow.levels, narrow.nxe) == (ROOT, 4, True)
    assert (narrow.max_phys_bits, narrow.phys_bits_known) == (40, True)
    with pytest.raises(ReservedBitsError):
        narrow.translate(va)
    wide = X86PageTable.from_cpu(ram, _cpu(46))
    assert wide.translate(va).paddr == (1 << 40) | 0x7000
    unknown = X86PageTable.from_cpu(ram, _cpu(None))
    assert (unknown.max_phys_bits, unknown.phys_bits_known) == (52, False)
    assert unknown.translate(va).paddr == (1 << 40) | 0x7000
    forced = X86PageTable.from_cpu(ram, _cpu(40), max_phys_bits=46, phys_bits_known=False)
    assert (forced.max_phys_bits, forced.phys_bits_known) == (46, False)
    assert X86PageTable.from_cpu(ram, _cpu(40, la57=True)).levels == 5


def test_with_root_keeps_the_configuration() -> None:
    env = _leaf_at_bit_40(46)
    other = env.table()
    sibling = env.pt.with_root(other)
    assert (sibling.root, sibling.levels, sibling.nxe) == (other, 4, True)
    assert (sibling.max_phys_bits, sibling.phys_bits_known) == (46, True)
    assert not sibling.allow_writes and sibling.rules is env.pt.rules
    assert list(sibling.iter_runs()) == []  # an empty root maps nothing
    # Its own table cache: translations of the original are not served for it.
    cached = X86PageTable(env.ram, ROOT, max_phys_bits=46, cache=True)
    assert cached.translate(v4(0, 0, 0, 1)).paddr == (1 << 40) | 0x7000
    assert cached.with_root(other).try_translate(v4(0, 0, 0, 1)) is None


def test_huge_page_at_pml4_is_forbidden_in_translate_and_walk() -> None:
    env = Env(allow_writes=False)
    env.ram.set(ROOT, 1, 0x4000_0000 | P | W | PS)
    with pytest.raises(HugePageForbiddenError):
        env.pt.translate(v4(1))
    [anomaly] = env.pt.iter_runs()
    assert isinstance(anomaly, Anomaly) and anomaly.kind == "huge-page-forbidden"


@pytest.mark.parametrize("nx_bit", [0, NX])
def test_access_by_leaf_is_fold_then_access(nx_bit: int) -> None:
    """For every accumulator a walk can reach and every leaf's permission and other bits, the
    table of a region answers what folding the leaf answers."""
    others = (0, P | ACC | DIRTY, 0x7FF0_0000_DEAD_B000)
    for acc in (u | w | x for u in (0, U) for w in (0, W) for x in (0, nx_bit)):
        table = access_by_leaf(acc, nx_bit)
        for leaf in (
            u | w | x | o for u in (0, U) for w in (0, W) for x in (0, NX) for o in others
        ):
            assert table[leaf & PERM_KEY] == access(fold(acc, leaf, nx_bit))
