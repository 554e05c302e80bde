"""Tests of gdbext.heap: MemoryRegion and locate_kernel_heap."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gdbext.addr import AddrRange
from gdbext.errors import EXIT_NOT_FOUND, InputError, NoUsableMemoryError
from gdbext.heap import MemoryRegion, locate_kernel_heap, usable_ranges

OFFSET = 0xFFFF_8000_0000_0000
TWO_64 = 1 << 64


def test_memory_region_is_usable_only_for_usable_kind() -> None:
    assert MemoryRegion(0, 0x1000, "Usable").is_usable
    for kind in ("Bootloader", "UnknownUefi(7)", "UnknownBios(2)", "InUse", "usable"):
        assert not MemoryRegion(0, 0x1000, kind).is_usable


def test_memory_region_rejects_inverted_and_out_of_range() -> None:
    with pytest.raises(ValueError):
        MemoryRegion(0x2000, 0x1000, "Usable")
    with pytest.raises(ValueError):
        MemoryRegion(-1, 0x1000, "Usable")
    with pytest.raises(ValueError):
        MemoryRegion(0, TWO_64 + 1, "Usable")
    assert MemoryRegion(0, TWO_64, "Usable").size == TWO_64


def test_memory_region_is_frozen() -> None:
    region = MemoryRegion(0, 0x1000, "Usable")
    with pytest.raises(AttributeError):
        region.start = 5  # type: ignore[misc]


def test_alignment_is_inward() -> None:
    heap = locate_kernel_heap([MemoryRegion(0x1001, 0x5FFF, "Usable")], OFFSET)
    assert heap == AddrRange(OFFSET + 0x2000, OFFSET + 0x5000)


def test_aligned_region_is_kept_whole() -> None:
    heap = locate_kernel_heap([MemoryRegion(0x100000, 0x800000, "Usable")], OFFSET)
    assert heap == AddrRange(OFFSET + 0x100000, OFFSET + 0x800000)


def test_region_without_a_whole_page_is_dropped() -> None:
    regions = [MemoryRegion(0x1001, 0x2FFF, "Usable"), MemoryRegion(0x10000, 0x11000, "Usable")]
    assert usable_ranges(regions) == [AddrRange(0x10000, 0x11000)]
    assert locate_kernel_heap(regions, 0) == AddrRange(0x10000, 0x11000)


def test_largest_after_alignment_wins_not_largest_raw() -> None:
    # Raw size 0x6ffe, aligned [0x2000, 0x7000) = 0x5000.
    ragged = MemoryRegion(0x1001, 0x7FFF, "Usable")
    # Raw size 0x6000, aligned the same.
    neat = MemoryRegion(0x20000, 0x26000, "Usable")
    assert locate_kernel_heap([ragged, neat], 0) == AddrRange(0x20000, 0x26000)


def test_non_usable_regions_are_ignored_even_if_larger() -> None:
    regions = [
        MemoryRegion(0x0, 0x4000_0000, "Bootloader"),
        MemoryRegion(0x4000_0000, 0x8000_0000, "UnknownUefi(7)"),
        MemoryRegion(0x9000_0000, 0x9000_2000, "Usable"),
    ]
    assert locate_kernel_heap(regions, OFFSET) == AddrRange(
        OFFSET + 0x9000_0000, OFFSET + 0x9000_2000
    )


def test_ties_go_to_the_lowest_address_whatever_the_order() -> None:
    high = MemoryRegion(0x50000, 0x54000, "Usable")
    low = MemoryRegion(0x10000, 0x14000, "Usable")
    # Same aligned size after alignment even though raw sizes differ.
    low_ragged = MemoryRegion(0x0FFFF, 0x14001, "Usable")  # aligned [0x10000, 0x14000)
    for regions in ([high, low], [low, high], [high, low_ragged]):
        assert locate_kernel_heap(regions, 0) == AddrRange(0x10000, 0x14000)


def test_no_usable_region_raises() -> None:
    for regions in (
        [],
        [MemoryRegion(0, 0x100000, "Bootloader")],
        [MemoryRegion(0x1001, 0x1FFF, "Usable"), MemoryRegion(0x3000, 0x3000, "Usable")],
    ):
        with pytest.raises(NoUsableMemoryError) as info:
            locate_kernel_heap(regions, OFFSET)
        assert info.value.exit_status == EXIT_NOT_FOUND


def test_accepts_any_iterable() -> None:
    regions = (MemoryRegion(s, s + 0x1000, "Usable") for s in (0x1000, 0x3000))
    assert locate_kernel_heap(regions, 0) == AddrRange(0x1000, 0x2000)


def test_overflow_past_64_bits_is_an_input_error() -> None:
    regions = [MemoryRegion(0, 0x2000, "Usable")]
    with pytest.raises(InputError, match="beyond the 64-bit address space") as info:
        locate_kernel_heap(regions, TWO_64 - 0x1000)
    assert "0x1000" in str(info.value)
    with pytest.raises(InputError):
        locate_kernel_heap([MemoryRegion(0x1000, 0x2000, "Usable")], TWO_64)


def test_range_ending_exactly_at_2_64_is_fine() -> None:
    heap = locate_kernel_heap([MemoryRegion(0, 0x2000, "Usable")], TWO_64 - 0x2000)
    assert heap == AddrRange(TWO_64 - 0x2000, TWO_64)


def test_negative_offset_is_an_input_error() -> None:
    with pytest.raises(InputError, match="negative"):
        locate_kernel_heap([MemoryRegion(0, 0x2000, "Usable")], -0x1000)


# --- Property test against a brute-force reference -------------------------------------------

KINDS = ("Usable", "Bootloader", "UnknownUefi(7)", "Reserved")


@st.composite
def regions_strategy(draw: st.DrawFn) -> list[MemoryRegion]:
    count = draw(st.integers(0, 8))
    out = []
    for _ in range(count):
        # Small addresses and sizes so that ties and sub-page regions happen often.
        start = draw(st.integers(0, 0x40000) | st.integers(0, 1 << 52))
        size = draw(st.integers(0, 0x6000))
        kind = draw(st.sampled_from(KINDS))
        out.append(MemoryRegion(start, start + size, kind))
    return out


def reference_heap(regions: list[MemoryRegion], offset: int) -> tuple[int, int] | None:
    """Brute force: aligned bounds by integer division, best by an explicit scan."""
    best: tuple[int, int] | None = None
    for region in regions:
        if region.kind != "Usable":
            continue
        first_page = -(-region.start // 4096)  # ceiling
        last_page = region.end // 4096  # floor, exclusive
        if last_page <= first_page:
            continue
        start, end = first_page * 4096, last_page * 4096
        if best is None:
            best = (start, end)
            continue
        size, best_size = end - start, best[1] - best[0]
        if size > best_size or (size == best_size and start < best[0]):
            best = (start, end)
    if best is None:
        return None
    return best[0] + offset, best[1] + offset


@given(
    regions=regions_strategy(),
    offset=st.sampled_from([0, OFFSET, 0xFFFF_FFFF_FFFF_0000, TWO_64 - 0x1000])
    | st.integers(0, TWO_64),
)
def test_locate_kernel_heap_matches_brute_force(regions: list[MemoryRegion], offset: int) -> None:
    expected = reference_heap(regions, offset)
    if expected is None:
        with pytest.raises(NoUsableMemoryError):
            locate_kernel_heap(regions, offset)
    elif expected[1] > TWO_64:
        with pytest.raises(InputError):
            locate_kernel_heap(regions, offset)
    else:
        heap = locate_kernel_heap(regions, offset)
        assert (heap.start, heap.end) == expected
        assert heap.start % 4096 == (offset % 4096)
        assert heap.size % 4096 == 0 and heap.size > 0
