"""Tests of gdbext.bootinfo: BootInfo v0.9 of the rust-osdev bootloader crate.

Byte layouts are built by hand here from the offsets of the reference (dump-formats.md 5.2),
not only through gdbext's own builders.
"""

from __future__ import annotations

import struct

import pytest
from support.bootinfo import BOOTINFO_PADDR, GARBAGE, OFFSET, V09_EXPECTED, DictMapper

from gdbext.bootinfo import (
    BootInfo,
    build_bootinfo_v09,
    parse_bootinfo,
    parse_bootinfo_v09,
    recursive_table_addr,
    require_physical_memory_offset,
    v09_layout,
)
from gdbext.errors import InputError
from gdbext.heap import MemoryRegion

# --- Hand-built v0.9 bytes (reference offsets) -----------------------------------------------

V09_ENTRIES = [
    (0x0, 0x1, 10),  # FrameZero
    (0x1, 0x9F, 0),  # Usable
    (0x100, 0x400, 6),  # Kernel
    (0x400, 0x7FE0, 0),  # Usable
    (0x7FE0, 0x8000, 14),  # NonExhaustive
]
RECURSIVE_510 = 0xFFFF_FF7F_BFDF_E000


def hand_bootinfo_v09(
    entries: list[tuple[int, int, int]],
    *,
    size: int,
    next_entry_index: int | None = None,
    fields: dict[int, int] | None = None,
) -> bytearray:
    """Entries (start_frame@0, end_frame@8, region_type@16; 24 bytes), next_entry_index@1536."""
    raw = bytearray([GARBAGE]) * size
    for index, (start_frame, end_frame, region_type) in enumerate(entries):
        struct.pack_into("<Q", raw, index * 24, start_frame)
        struct.pack_into("<Q", raw, index * 24 + 8, end_frame)
        struct.pack_into("<I", raw, index * 24 + 16, region_type)
    count = len(entries) if next_entry_index is None else next_entry_index
    struct.pack_into("<Q", raw, 1536, count)
    for offset, value in (fields or {}).items():
        struct.pack_into("<Q", raw, offset, value)
    return raw


V09_CASES = [
    # features, size, {offset: value}, physical_memory_offset, recursive_index
    (("map_physical_memory",), 1584, {1544: OFFSET}, OFFSET, None),
    (
        ("recursive_page_table", "map_physical_memory"),
        1592,
        {1544: RECURSIVE_510, 1552: OFFSET},
        OFFSET,
        510,
    ),
    (("recursive_page_table",), 1584, {1544: RECURSIVE_510}, None, 510),
    ((), 1576, {}, None, None),
]


@pytest.mark.parametrize(("features", "size", "fields", "offset", "recursive"), V09_CASES)
def test_v09_hand_built_per_feature_layout(
    features: tuple[str, ...],
    size: int,
    fields: dict[int, int],
    offset: int | None,
    recursive: int | None,
) -> None:
    mapper = DictMapper()
    mapper.write(BOOTINFO_PADDR, bytes(hand_bootinfo_v09(V09_ENTRIES, size=size, fields=fields)))
    info = parse_bootinfo_v09(mapper, BOOTINFO_PADDR, features=features)
    assert info == BootInfo(
        version="0.9",
        api_version=None,
        memory_regions=V09_EXPECTED,
        physical_memory_offset=offset,
        recursive_index=recursive,
        rsdp_addr=None,
        at=BOOTINFO_PADDR,
        memory_regions_paddr=BOOTINFO_PADDR,
    )
    assert v09_layout(features).size == size


@pytest.mark.parametrize(("features", "size", "fields", "offset", "recursive"), V09_CASES)
def test_v09_builder_matches_reference_offsets(
    features: tuple[str, ...],
    size: int,
    fields: dict[int, int],
    offset: int | None,
    recursive: int | None,
) -> None:
    raw = build_bootinfo_v09(
        V09_EXPECTED,
        physical_memory_offset=offset,
        features=features,
        recursive_page_table_addr=RECURSIVE_510,
    )
    assert len(raw) == size
    for index, entry in enumerate(V09_ENTRIES):
        assert struct.unpack_from("<QQI", raw, index * 24) == entry
    # Unused entries are MemoryRegion::empty(): frames 0..0, Empty (11).
    assert struct.unpack_from("<QQI", raw, 63 * 24) == (0, 0, 11)
    assert struct.unpack_from("<Q", raw, 1536)[0] == len(V09_ENTRIES)
    for field_offset, value in fields.items():
        assert struct.unpack_from("<Q", raw, field_offset)[0] == value
    mapper = DictMapper()
    mapper.write(BOOTINFO_PADDR, raw)
    info = parse_bootinfo(mapper, BOOTINFO_PADDR, "0.9", features=features)
    assert info.memory_regions == V09_EXPECTED
    assert info.physical_memory_offset == offset
    assert info.recursive_index == recursive


def test_v09_entries_past_next_entry_index_are_ignored() -> None:
    mapper = DictMapper()
    entries = [*V09_ENTRIES, (0x9999, 0x1, 99)]  # garbage, invalid on purpose
    raw = hand_bootinfo_v09(entries, size=1584, next_entry_index=5, fields={1544: OFFSET})
    mapper.write(BOOTINFO_PADDR, bytes(raw))
    assert parse_bootinfo_v09(mapper, BOOTINFO_PADDR).memory_regions == V09_EXPECTED


def test_v09_full_map_of_64() -> None:
    mapper = DictMapper()
    entries = [(i, i + 1, 0) for i in range(64)]
    raw = hand_bootinfo_v09(entries, size=1584, fields={1544: 0})
    mapper.write(BOOTINFO_PADDR, bytes(raw))
    info = parse_bootinfo_v09(mapper, BOOTINFO_PADDR)
    assert len(info.memory_regions) == 64
    assert info.memory_regions[63] == MemoryRegion(63 * 4096, 64 * 4096, "Usable")


def test_v09_next_entry_index_beyond_64() -> None:
    mapper = DictMapper()
    raw = hand_bootinfo_v09(V09_ENTRIES, size=1584, next_entry_index=65, fields={1544: OFFSET})
    mapper.write(BOOTINFO_PADDR, bytes(raw))
    with pytest.raises(InputError, match=r"BootInfo v0\.9 at 0x1000: .*next_entry_index is 65"):
        parse_bootinfo_v09(mapper, BOOTINFO_PADDR)


def test_v09_unknown_region_type() -> None:
    mapper = DictMapper()
    entries = [*V09_ENTRIES[:2], (0x100, 0x200, 15)]
    mapper.write(BOOTINFO_PADDR, bytes(hand_bootinfo_v09(entries, size=1584)))
    with pytest.raises(InputError, match="at 0x1000: memory region 2 has region_type 15"):
        parse_bootinfo_v09(mapper, BOOTINFO_PADDR)


def test_v09_inverted_or_huge_frames() -> None:
    mapper = DictMapper()
    mapper.write(BOOTINFO_PADDR, bytes(hand_bootinfo_v09([(5, 4, 0)], size=1584)))
    with pytest.raises(InputError, match="memory region 0 starts at frame 0x5"):
        parse_bootinfo_v09(mapper, BOOTINFO_PADDR)
    mapper.write(BOOTINFO_PADDR, bytes(hand_bootinfo_v09([(0, 1 << 60, 0)], size=1584)))
    with pytest.raises(InputError, match="beyond 64 bits"):
        parse_bootinfo_v09(mapper, BOOTINFO_PADDR)


def test_v09_bad_recursive_page_table_addr() -> None:
    mapper = DictMapper()
    raw = hand_bootinfo_v09(V09_ENTRIES, size=1584, fields={1544: 0xFFFF_8000_0000_0000})
    mapper.write(BOOTINFO_PADDR, bytes(raw))
    with pytest.raises(InputError, match="recursive_page_table_addr 0xffff800000000000"):
        parse_bootinfo_v09(mapper, BOOTINFO_PADDR, features=["recursive_page_table"])


def test_v09_unknown_feature() -> None:
    with pytest.raises(InputError, match="map_physical_memroy"):
        parse_bootinfo_v09(DictMapper(), BOOTINFO_PADDR, features=["map_physical_memroy"])


def test_v09_without_map_physical_memory_has_no_offset() -> None:
    mapper = DictMapper()
    mapper.write(
        BOOTINFO_PADDR, build_bootinfo_v09(V09_EXPECTED, physical_memory_offset=None, features=())
    )
    info = parse_bootinfo_v09(mapper, BOOTINFO_PADDR, features=())
    with pytest.raises(InputError, match="physical_memory_offset is None"):
        require_physical_memory_offset(info)


def test_v09_builder_rejects_misaligned_and_bad_input() -> None:
    with pytest.raises(ValueError, match="4 KiB"):
        build_bootinfo_v09([MemoryRegion(0x800, 0x2000, "Usable")], physical_memory_offset=0)
    with pytest.raises(ValueError, match="4 KiB"):
        build_bootinfo_v09([MemoryRegion(0x1000, 0x2001, "Usable")], physical_memory_offset=0)
    with pytest.raises(ValueError, match="at most 64"):
        build_bootinfo_v09([MemoryRegion(0, 0x1000, "Usable")] * 65, physical_memory_offset=0)
    with pytest.raises(ValueError, match="MemoryRegionType"):
        build_bootinfo_v09([MemoryRegion(0, 0x1000, "UnknownUefi(7)")], physical_memory_offset=0)
    with pytest.raises(ValueError, match="exactly when"):
        build_bootinfo_v09([], physical_memory_offset=None)
    with pytest.raises(ValueError, match="exactly when"):
        build_bootinfo_v09([], physical_memory_offset=OFFSET, features=())


def test_recursive_table_addr_known_values() -> None:
    assert recursive_table_addr(511) == 0xFFFF_FFFF_FFFF_F000
    assert recursive_table_addr(510) == RECURSIVE_510
    assert recursive_table_addr(0) == 0
    assert recursive_table_addr(1) == 0x0000_0080_4020_1000
