"""The simulator's sparse physical memory and its top-down page-table frame allocator."""

from __future__ import annotations

import pytest

from gdbext.addr import AddrRange
from gdbext.errors import PhysMemoryError
from gdbext.mapper import FrameAllocator, PhysMapper, is_read_only, read_u64, write_u64
from gdbext_sim.memory import ZERO_FRAME, SparsePhysMemory, TopDownFrameAllocator

MIB = 1 << 20


def holey_memory() -> SparsePhysMemory:
    """1 MiB with a PC-like hole at [0xa0000, 0xc0000)."""
    return SparsePhysMemory(MIB, ram=[AddrRange(0xC0000, MIB), AddrRange(0, 0xA0000)])


# --- SparsePhysMemory ------------------------------------------------------------------------


def test_is_a_writable_phys_mapper() -> None:
    mem = SparsePhysMemory(MIB)
    assert isinstance(mem, PhysMapper)
    assert mem.read_only is False
    assert not is_read_only(mem)
    assert mem.ram_size == MIB
    assert mem.ram_ranges == (AddrRange(0, MIB),)


def test_unwritten_memory_reads_as_zeros_without_storage() -> None:
    mem = SparsePhysMemory(256 * MIB)
    assert mem.read(0x1234, 100) == bytes(100)
    assert mem.read(0xFFF_F000, 4096) is ZERO_FRAME  # the shared zero page
    assert mem.read(0x7FF8, 16) == bytes(16)
    assert mem.stored_frames == 0


def test_write_then_read_within_a_frame() -> None:
    mem = SparsePhysMemory(MIB)
    write_u64(mem, 0x2008, 0x1122_3344_5566_7788)
    assert read_u64(mem, 0x2008) == 0x1122_3344_5566_7788
    assert mem.read(0x2000, 16) == bytes(8) + bytes.fromhex("8877665544332211")
    page = mem.read(0x2000, 4096)
    assert type(page) is bytes and len(page) == 4096 and page[8] == 0x88
    assert mem.stored_frames == 1


def test_reads_return_copies() -> None:
    mem = SparsePhysMemory(MIB)
    mem.write(0x3000, b"\xaa" * 4096)
    before = mem.read(0x3000, 4096)
    small = mem.read(0x3000, 8)
    mem.write(0x3000, b"\xbb" * 8)
    assert before == b"\xaa" * 4096
    assert small == b"\xaa" * 8


def test_reads_and_writes_span_frames() -> None:
    mem = SparsePhysMemory(MIB)
    data = bytes(range(256)) * 40  # 10240 bytes over three frames
    mem.write(0x4F00, data)
    assert mem.read(0x4F00, len(data)) == data
    assert mem.read(0x4FFC, 8) == data[0xFC:0x104]
    assert mem.read(0x4000, 0x100) == bytes(0x100)
    assert mem.stored_frames == 4  # 0x4000, 0x5000, 0x6000, 0x7000
    # A read spanning a written and an unwritten frame.
    assert mem.read(0x7000, 8192)[: 0x4F00 + len(data) - 0x7000] == data[0x2100:]
    assert mem.read(0x8000, 8) == bytes(8)


def test_accepts_bytearray_and_memoryview() -> None:
    mem = SparsePhysMemory(MIB)
    mem.write(0x10, bytearray(b"abc"))
    mem.write(0x13, memoryview(b"def"))
    assert mem.read(0x10, 6) == b"abcdef"


def test_zero_writes_do_not_allocate_and_zero_frames_are_released() -> None:
    mem = SparsePhysMemory(MIB)
    mem.write(0x5000, bytes(4096))
    mem.write(0x6010, bytes(16))
    assert mem.stored_frames == 0
    mem.write(0x5000, b"\x01" * 4096)
    assert mem.stored_frames == 1
    mem.write(0x5000, bytes(4096))
    assert mem.stored_frames == 0
    assert mem.read(0x5000, 4096) == bytes(4096)


def test_iter_frames_yields_non_zero_frames_in_address_order() -> None:
    mem = SparsePhysMemory(MIB)
    mem.write(0x9000, b"\x09")
    mem.write(0x1000, b"\x01")
    mem.write(0x5008, b"\x05")
    mem.write(0x5008, b"\x00")  # written, but all zeros again
    frames = list(mem.iter_frames())
    assert [paddr for paddr, _ in frames] == [0x1000, 0x9000]
    assert frames[0][1] == b"\x01" + bytes(4095)
    assert all(type(data) is bytes and len(data) == 4096 for _, data in frames)


@pytest.mark.parametrize(
    ("paddr", "size"),
    [
        (MIB, 1),  # just past the end
        (MIB - 4, 8),  # straddles the end
        (MIB - 4096, 8192),  # a page read straddling the end
        (1 << 40, 4096),
        (-8, 8),
    ],
)
def test_reads_outside_ram_raise_with_the_address(paddr: int, size: int) -> None:
    mem = SparsePhysMemory(MIB)
    with pytest.raises(PhysMemoryError) as info:
        mem.read(paddr, size)
    assert info.value.paddr == paddr
    assert info.value.size == size
    assert f"0x{paddr:x}" in str(info.value) or paddr < 0


def test_writes_outside_ram_raise_and_change_nothing() -> None:
    mem = SparsePhysMemory(MIB)
    with pytest.raises(PhysMemoryError) as info:
        mem.write(MIB - 8, b"\x01" * 16)
    assert (info.value.paddr, info.value.size) == (MIB - 8, 16)
    assert mem.stored_frames == 0
    assert mem.read(MIB - 8, 8) == bytes(8)


def test_last_bytes_of_ram_are_accessible() -> None:
    mem = SparsePhysMemory(MIB)
    mem.write(MIB - 8, b"\xff" * 8)
    assert mem.read(MIB - 8, 8) == b"\xff" * 8
    assert mem.read(MIB, 0) == b""


def test_holes_are_not_ram() -> None:
    mem = holey_memory()
    assert mem.ram_ranges == (AddrRange(0, 0xA0000), AddrRange(0xC0000, MIB))
    mem.write(0x9FFF8, b"\x01" * 8)
    mem.write(0xC0000, b"\x02" * 8)
    assert mem.read(0x9FFF8, 8) == b"\x01" * 8
    assert mem.read(0xC0000, 8) == b"\x02" * 8
    for paddr, size in [(0xA0000, 8), (0xB0000, 4096), (0x9FFF8, 16), (0xBFFF8, 16)]:
        with pytest.raises(PhysMemoryError) as info:
            mem.read(paddr, size)
        assert info.value.paddr == paddr
    with pytest.raises(PhysMemoryError):
        mem.write(0xA0000, b"\x01")
    assert not mem.in_ram(0xA0000)
    assert mem.in_ram(0x9F000, 4096)


def test_adjacent_ranges_form_contiguous_ram() -> None:
    mem = SparsePhysMemory(MIB, ram=[AddrRange(0, 0x10000), AddrRange(0x10000, 0x20000)])
    mem.write(0xFFFC, b"\x07" * 8)
    assert mem.read(0xFFF8, 16) == bytes(4) + b"\x07" * 8 + bytes(4)
    assert len(mem.ram_ranges) == 2
    with pytest.raises(PhysMemoryError):
        mem.read(0x1FFF8, 16)


@pytest.mark.parametrize(
    ("ram_size", "ram"),
    [
        (0, None),
        (MIB + 1, None),
        (MIB, []),
        (MIB, [AddrRange(0, 0x1800)]),  # not 4 KiB-aligned
        (MIB, [AddrRange(0x1000, 0x1000)]),  # empty
        (MIB, [AddrRange(0, 2 * MIB)]),  # beyond ram_size
        (MIB, [AddrRange(0, 0x3000), AddrRange(0x2000, 0x4000)]),  # overlapping
    ],
)
def test_bad_ram_layouts_are_refused(ram_size: int, ram: list[AddrRange] | None) -> None:
    with pytest.raises(ValueError):
        SparsePhysMemory(ram_size, ram=ram)


def test_negative_size_is_a_value_error() -> None:
    mem = SparsePhysMemory(MIB)
    with pytest.raises(ValueError):
        mem.read(0, -1)


# --- TopDownFrameAllocator -------------------------------------------------------------------


def test_allocator_is_a_frame_allocator_handing_out_frames_top_down() -> None:
    mem = SparsePhysMemory(MIB)
    alloc = TopDownFrameAllocator(mem)
    assert isinstance(alloc, FrameAllocator)
    frames = [alloc.allocate_frame() for _ in range(3)]
    assert frames == [MIB - 0x1000, MIB - 0x2000, MIB - 0x3000]
    assert alloc.allocated == frozenset(f for f in frames if f is not None)


def test_allocated_frames_are_zeroed() -> None:
    mem = SparsePhysMemory(MIB)
    mem.write(MIB - 0x1000, b"\xcc" * 4096)  # garbage where the first table will go
    alloc = TopDownFrameAllocator(mem)
    frame = alloc.allocate_frame()
    assert frame == MIB - 0x1000
    assert mem.read(frame, 4096) == bytes(4096)
    mem.write(frame + 16, b"\xdd" * 8)
    alloc.deallocate_frame(frame)
    assert alloc.allocate_frame() == frame
    assert mem.read(frame, 4096) == bytes(4096)


def test_deallocated_frames_are_reused_last_in_first_out() -> None:
    alloc = TopDownFrameAllocator(SparsePhysMemory(MIB))
    a, b, c = (alloc.allocate_frame() for _ in range(3))
    assert a is not None and b is not None and c is not None
    alloc.deallocate_frame(a)
    alloc.deallocate_frame(c)
    assert alloc.allocate_frame() == c
    assert alloc.allocate_frame() == a
    assert alloc.allocate_frame() == MIB - 0x4000
    assert alloc.allocated == {a, b, c, MIB - 0x4000}


def test_allocator_never_goes_below_low_and_returns_none_when_exhausted() -> None:
    alloc = TopDownFrameAllocator(SparsePhysMemory(MIB), low=MIB - 0x2800)  # rounds up
    assert alloc.allocate_frame() == MIB - 0x1000
    assert alloc.allocate_frame() == MIB - 0x2000
    assert alloc.allocate_frame() is None
    assert alloc.allocate_frame() is None
    alloc.deallocate_frame(MIB - 0x2000)
    assert alloc.allocate_frame() == MIB - 0x2000
    assert alloc.allocate_frame() is None


def test_allocator_skips_holes_and_stays_in_ram() -> None:
    mem = SparsePhysMemory(0x100000, ram=[AddrRange(0x9E000, 0xA0000), AddrRange(0xFE000, MIB)])
    alloc = TopDownFrameAllocator(mem)
    frames = [alloc.allocate_frame() for _ in range(5)]
    assert frames == [0xFF000, 0xFE000, 0x9F000, 0x9E000, None]
    assert all(mem.in_ram(f, 4096) for f in frames if f is not None)


def test_allocator_with_low_above_all_ram_has_nothing() -> None:
    alloc = TopDownFrameAllocator(SparsePhysMemory(MIB), low=MIB)
    assert alloc.allocate_frame() is None
    with pytest.raises(ValueError):
        TopDownFrameAllocator(SparsePhysMemory(MIB), low=-1)


def test_deallocating_foreign_or_freed_frames_raises() -> None:
    alloc = TopDownFrameAllocator(SparsePhysMemory(MIB))
    frame = alloc.allocate_frame()
    assert frame is not None
    with pytest.raises(ValueError, match="0x1000"):
        alloc.deallocate_frame(0x1000)
    alloc.deallocate_frame(frame)
    with pytest.raises(ValueError):
        alloc.deallocate_frame(frame)
    assert alloc.allocated == frozenset()
