"""Addresses, ranges, geometry, units and CPU state: small values checked by hand."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gdbext.addr import AddrRange, PhysAddr, VirtAddr, align_down, align_up, check_aligned
from gdbext.cpu import CpuState
from gdbext.errors import MisalignedAddressError, NonCanonicalAddressError
from gdbext.geometry import FIVE_LEVEL, FOUR_LEVEL, geometry
from gdbext.units import format_size, parse_int, parse_size


@pytest.mark.parametrize(
    ("vaddr", "bits", "canonical"),
    [
        (0x0000_7FFF_FFFF_FFFF, 48, True),
        (0x0000_8000_0000_0000, 48, False),
        (0xFFFF_7FFF_FFFF_FFFF, 48, False),
        (0xFFFF_8000_0000_0000, 48, True),
        (0x00FF_FFFF_FFFF_FFFF, 57, True),
        (0x0100_0000_0000_0000, 57, False),
        (0xFF00_0000_0000_0000, 57, True),
        (0xFEFF_FFFF_FFFF_FFFF, 57, False),
        (0x0000_8000_0000_0000, 57, True),
    ],
)
def test_canonical(vaddr: int, bits: int, canonical: bool) -> None:
    assert VirtAddr(vaddr).is_canonical(bits) is canonical
    assert geometry((bits - 12) // 9).is_canonical(vaddr) is canonical
    if not canonical:
        with pytest.raises(NonCanonicalAddressError) as info:
            VirtAddr.new_canonical(vaddr, bits)
        assert (info.value.address, info.value.va_bits) == (vaddr, bits)


@given(st.integers(0, (1 << 64) - 1))
def test_canonicalize_agrees_with_sign_extension(value: int) -> None:
    for geo in (FOUR_LEVEL, FIVE_LEVEL):
        low = value & ((1 << geo.va_bits) - 1)
        signed = low - (1 << geo.va_bits) if low >> (geo.va_bits - 1) else low
        assert geo.canonicalize(value) == signed & ((1 << 64) - 1)
        assert geo.is_canonical(geo.canonicalize(value))


def test_indices_split_by_level() -> None:
    va = (3 << 39) | (5 << 30) | (7 << 21) | (11 << 12) | 0x123
    assert FOUR_LEVEL.indices(va) == (3, 5, 7, 11)
    assert FIVE_LEVEL.indices(va | (9 << 48)) == (9, 3, 5, 7, 11)
    assert VirtAddr(0xFFFF_FFFF_FFFF_F000).indices() == (511, 511, 511, 511)


def test_alignment_helpers() -> None:
    assert (align_down(0x1FFF, 0x1000), align_up(0x1001, 0x1000)) == (0x1000, 0x2000)
    assert align_up(0x2000, 0x1000) == 0x2000
    with pytest.raises(MisalignedAddressError) as info:
        check_aligned(0x201000, 1 << 21, "virtual address")
    assert info.value.alignment == 1 << 21 and "virtual address 0x201000" in str(info.value)


def test_phys_and_virt_bounds() -> None:
    with pytest.raises(ValueError):
        PhysAddr(1 << 52)
    with pytest.raises(ValueError):
        VirtAddr(1 << 64)
    assert repr(PhysAddr(0x1000)) == "PhysAddr(0x1000)"


def test_addr_range() -> None:
    r = AddrRange.parse("0x1000+0x2000")
    assert (r.start, r.end, r.size) == (0x1000, 0x3000, 0x2000)
    assert AddrRange.parse("4096-8192") == AddrRange(0x1000, 0x2000)
    assert r.intersection(AddrRange(0x2000, 0x5000)) == AddrRange(0x2000, 0x3000)
    assert r.intersection(AddrRange(0x3000, 0x5000)) is None
    assert list(AddrRange(0x1800, 0x3001).pages()) == [0x1000, 0x2000, 0x3000]
    assert AddrRange(0, 1 << 64).size == 1 << 64
    for bad in ("0x1000", "zz-1", "5-3"):
        with pytest.raises(ValueError):
            AddrRange.parse(bad)


def test_units() -> None:
    assert parse_int("0x1_000") == 4096 and parse_int("10") == 10
    assert [parse_size(x) for x in ("4K", "2M", "1G", "256MiB", "0x1000", 7)] == [
        4096, 2 << 20, 1 << 30, 256 << 20, 4096, 7,
    ]  # fmt: skip
    assert [format_size(x) for x in (4096, 3 << 20, 1 << 30, 1536, 0)] == [
        "4K", "3M", "1G", "1536B", "0B",
    ]  # fmt: skip
    for bad in ("-1", "x", "1.5"):
        with pytest.raises(ValueError):
            parse_int(bad)
    with pytest.raises(ValueError):
        parse_size("3Q")


def test_cpu_state_decodes_control_registers() -> None:
    # Values QEMU shows for a Debian 6.1 guest with -cpu max (LA57) and PCID.
    cpu = CpuState(cr0=0x80050033, cr3=0x10A4001, cr4=0x771EF0 | (1 << 17), efer=0xD01)
    assert (cpu.levels, cpu.la57, cpu.nxe, cpu.wp, cpu.smep, cpu.smap) == (
        5, True, True, True, True, True,
    )  # fmt: skip
    assert (cpu.root, cpu.pcid) == (0x10A4000, 1)
    unknown = CpuState()
    assert (unknown.levels, unknown.root, unknown.nxe, unknown.wp) == (4, None, True, False)
