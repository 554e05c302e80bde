"""Tests of gdbext.bootinfo: BootInfo v0.11 and v0.9 of the rust-osdev bootloader crate.

Byte layouts are built by hand here from the offsets of the reference (dump-formats.md 5.2),
not only through gdbext's own builders.
"""

from __future__ import annotations

import struct

import pytest

from gdbext.bootinfo import (
    BootInfo,
    build_bootinfo_v011,
    build_bootinfo_v09,
    build_regions_v011,
    parse_bootinfo,
    parse_bootinfo_v011,
    parse_bootinfo_v09,
    recursive_table_addr,
    require_physical_memory_offset,
    v09_layout,
)
from gdbext.errors import GdbextError, InputError, NotMappedError, PhysMemoryError
from gdbext.heap import MemoryRegion, locate_kernel_heap

OFFSET = 0xFFFF_8000_0000_0000
BOOTINFO_PADDR = 0x1000
REGIONS_PADDR = 0x3000
GARBAGE = 0xAA


class DictMapper:
    """Physical memory as segments ``{base: bytearray}``; an access must fit in one segment."""

    def __init__(self, segments: dict[int, int] | None = None) -> None:
        sizes = segments if segments is not None else {0: 0x100000}
        self.ram = {base: bytearray(size) for base, size in sizes.items()}
        self.reads: list[tuple[int, int]] = []

    def _find(self, paddr: int, size: int) -> tuple[bytearray, int]:
        for base, buf in self.ram.items():
            if base <= paddr and paddr + size <= base + len(buf):
                return buf, paddr - base
        raise PhysMemoryError(paddr, size)

    def read(self, paddr: int, size: int) -> bytes:
        self.reads.append((paddr, size))
        buf, off = self._find(paddr, size)
        return bytes(buf[off : off + size])

    def write(self, paddr: int, data: bytes) -> None:
        buf, off = self._find(paddr, len(data))
        buf[off : off + len(data)] = data


# --- Hand-built v0.11 bytes (reference offsets) ----------------------------------------------


def hand_bootinfo_v011(
    *,
    ptr: int,
    length: int,
    physical_memory_offset: int | None,
    recursive_index: int | None = None,
    rsdp_addr: int | None = None,
    api_version: tuple[int, int, int, int] = (0, 11, 14, 0),
) -> bytearray:
    """232 bytes; padding and the values of None Optionals are garbage."""
    raw = bytearray([GARBAGE]) * 232
    major, minor, patch, pre = api_version
    struct.pack_into("<H", raw, 0, major)
    struct.pack_into("<H", raw, 2, minor)
    struct.pack_into("<H", raw, 4, patch)
    struct.pack_into("<B", raw, 6, pre)
    struct.pack_into("<Q", raw, 8, ptr)
    struct.pack_into("<Q", raw, 16, length)
    struct.pack_into("<I", raw, 24, 1)  # framebuffer: None
    if physical_memory_offset is None:
        struct.pack_into("<I", raw, 88, 1)
    else:
        struct.pack_into("<I", raw, 88, 0)
        struct.pack_into("<Q", raw, 96, physical_memory_offset)
    if recursive_index is None:
        struct.pack_into("<I", raw, 104, 1)
    else:
        struct.pack_into("<I", raw, 104, 0)
        struct.pack_into("<H", raw, 108, recursive_index)
    if rsdp_addr is None:
        struct.pack_into("<I", raw, 112, 1)
    else:
        struct.pack_into("<I", raw, 112, 0)
        struct.pack_into("<Q", raw, 120, rsdp_addr)
    struct.pack_into("<I", raw, 128, 1)  # tls_template: None
    struct.pack_into("<I", raw, 160, 1)  # ramdisk_addr: None
    return raw


def hand_regions_v011(entries: list[tuple[int, int, int, int]]) -> bytes:
    """Regions ``(start, end, tag, payload)``: start@0, end@8, tag@16, payload@20 (24 bytes)."""
    raw = bytearray(24 * len(entries))
    for index, (start, end, tag, payload) in enumerate(entries):
        base = index * 24
        struct.pack_into("<Q", raw, base, start)
        struct.pack_into("<Q", raw, base + 8, end)
        struct.pack_into("<I", raw, base + 16, tag)
        struct.pack_into("<I", raw, base + 20, payload)
    return bytes(raw)


REGION_ENTRIES = [
    (0x0, 0x1000, 1, 0xDEAD_BEEF),  # Bootloader, garbage payload
    (0x1000, 0x9F000, 0, 0x1234_5678),  # Usable, garbage payload
    (0x9F000, 0x100000, 2, 7),  # UnknownUefi(7)
    (0x100000, 0x7FE0000, 0, 0xFFFF_FFFF),  # Usable
    (0xFEC0_0000, 0xFEC0_1000, 3, 2),  # UnknownBios(2)
]
EXPECTED_REGIONS = (
    MemoryRegion(0x0, 0x1000, "Bootloader"),
    MemoryRegion(0x1000, 0x9F000, "Usable"),
    MemoryRegion(0x9F000, 0x100000, "UnknownUefi(7)"),
    MemoryRegion(0x100000, 0x7FE0000, "Usable"),
    MemoryRegion(0xFEC0_0000, 0xFEC0_1000, "UnknownBios(2)"),
)


def setup_v011(
    mapper: DictMapper,
    *,
    physical_memory_offset: int | None = OFFSET,
    ptr: int = OFFSET + REGIONS_PADDR,
    entries: list[tuple[int, int, int, int]] | None = None,
    regions_paddr: int = REGIONS_PADDR,
    recursive_index: int | None = None,
    rsdp_addr: int | None = None,
    api_version: tuple[int, int, int, int] = (0, 11, 14, 0),
) -> None:
    entries = REGION_ENTRIES if entries is None else entries
    raw = hand_bootinfo_v011(
        ptr=ptr,
        length=len(entries),
        physical_memory_offset=physical_memory_offset,
        recursive_index=recursive_index,
        rsdp_addr=rsdp_addr,
        api_version=api_version,
    )
    mapper.write(BOOTINFO_PADDR, bytes(raw))
    mapper.write(regions_paddr, hand_regions_v011(entries))


# --- v0.11 ---------------------------------------------------------------------------------


def test_v011_hand_built_through_the_direct_map() -> None:
    mapper = DictMapper()
    setup_v011(mapper, rsdp_addr=0xE0000, recursive_index=None)
    info = parse_bootinfo_v011(mapper, BOOTINFO_PADDR)
    assert info == BootInfo(
        version="0.11",
        api_version=(0, 11, 14, False),
        memory_regions=EXPECTED_REGIONS,
        physical_memory_offset=OFFSET,
        recursive_index=None,
        rsdp_addr=0xE0000,
        at=BOOTINFO_PADDR,
        memory_regions_paddr=REGIONS_PADDR,
    )
    assert require_physical_memory_offset(info) == OFFSET


def test_v011_garbage_payload_is_ignored_for_fieldless_kinds() -> None:
    mapper = DictMapper()
    setup_v011(mapper)
    kinds = [r.kind for r in parse_bootinfo_v011(mapper, BOOTINFO_PADDR).memory_regions]
    assert kinds == ["Bootloader", "Usable", "UnknownUefi(7)", "Usable", "UnknownBios(2)"]


def test_v011_recursive_index_and_pre_release() -> None:
    mapper = DictMapper()
    setup_v011(mapper, recursive_index=510, api_version=(0, 11, 3, 1))
    info = parse_bootinfo_v011(mapper, BOOTINFO_PADDR)
    assert info.recursive_index == 510
    assert info.api_version == (0, 11, 3, True)
    assert info.rsdp_addr is None


def test_v011_none_physical_memory_offset() -> None:
    mapper = DictMapper()
    # No direct map: the pointer is an identity-mapped physical address.
    setup_v011(mapper, physical_memory_offset=None, ptr=REGIONS_PADDR)
    info = parse_bootinfo_v011(mapper, BOOTINFO_PADDR)
    assert info.physical_memory_offset is None
    assert info.memory_regions == EXPECTED_REGIONS
    with pytest.raises(InputError) as err:
        require_physical_memory_offset(info)
    message = str(err.value)
    assert message == (
        "BootInfo at 0x1000: physical_memory_offset is None "
        "(the bootloader's map_physical_memory is off); pass --phys-offset"
    )


def test_v011_only_the_stable_prefix_is_read() -> None:
    # A 0.11.0-sized BootInfo right at the end of RAM: reading 232 bytes would fail.
    mapper = DictMapper({0: 0x10000})
    at = 0x10000 - 128
    raw = hand_bootinfo_v011(ptr=REGIONS_PADDR, length=1, physical_memory_offset=None)
    mapper.write(at, bytes(raw[:128]))
    mapper.write(REGIONS_PADDR, hand_regions_v011([(0x1000, 0x2000, 0, 0)]))
    info = parse_bootinfo_v011(mapper, at)
    assert info.memory_regions == (MemoryRegion(0x1000, 0x2000, "Usable"),)


def test_v011_resolve_pointer_is_preferred_and_translates_page_by_page() -> None:
    mapper = DictMapper()
    vaddr = 0xFFFF_FFFF_8000_0FE8  # 24 bytes before a page boundary: entry 0 on page A
    page_a, page_b = 0x7000, 0x5000  # not contiguous, and B below A
    raw = hand_regions_v011(REGION_ENTRIES)
    mapper.write(page_a + 0xFE8, raw[:24])
    mapper.write(page_b, raw[24:])
    # A different, sane array where the direct map would lead.
    setup_v011(
        mapper,
        ptr=vaddr,
        physical_memory_offset=vaddr - REGIONS_PADDR,
        entries=[(0, 0x1000, 0, 0)] * len(REGION_ENTRIES),
    )
    calls: list[int] = []

    def resolve(va: int) -> int:
        calls.append(va)
        page = va & ~0xFFF
        base = {0xFFFF_FFFF_8000_0000: page_a, 0xFFFF_FFFF_8000_1000: page_b}[page]
        return base | (va & 0xFFF)

    info = parse_bootinfo_v011(mapper, BOOTINFO_PADDR, resolve_pointer=resolve)
    assert info.memory_regions == EXPECTED_REGIONS
    assert info.memory_regions_paddr == page_a + 0xFE8
    assert calls == [vaddr, 0xFFFF_FFFF_8000_1000]


def test_v011_failing_resolve_pointer_falls_back_to_direct_map() -> None:
    mapper = DictMapper()
    setup_v011(mapper)

    def not_mapped(va: int) -> int:
        raise NotMappedError(va, 1, 0)

    info = parse_bootinfo_v011(mapper, BOOTINFO_PADDR, resolve_pointer=not_mapped)
    assert info.memory_regions == EXPECTED_REGIONS
    assert info.memory_regions_paddr == REGIONS_PADDR


def test_v011_resolve_pointer_to_garbage_falls_back() -> None:
    mapper = DictMapper()
    setup_v011(mapper)
    mapper.write(0x8000, hand_regions_v011([(0, 0x1000, 9, 0)] * len(REGION_ENTRIES)))
    info = parse_bootinfo_v011(mapper, BOOTINFO_PADDR, resolve_pointer=lambda va: 0x8000)
    assert info.memory_regions_paddr == REGIONS_PADDR


def test_v011_identity_when_direct_map_is_outside_ram() -> None:
    mapper = DictMapper()
    # physical_memory_offset is Some, but the pointer is a physical address below it.
    setup_v011(mapper, ptr=REGIONS_PADDR)
    info = parse_bootinfo_v011(mapper, BOOTINFO_PADDR)
    assert info.memory_regions == EXPECTED_REGIONS
    assert info.memory_regions_paddr == REGIONS_PADDR


def test_v011_identity_when_direct_map_is_not_in_ram() -> None:
    mapper = DictMapper()
    # ptr - offset = 0x8000_0000 is beyond RAM; ptr itself is the array.
    setup_v011(mapper, ptr=REGIONS_PADDR, physical_memory_offset=(1 << 64) - 0x8000_0000)
    info = parse_bootinfo_v011(mapper, BOOTINFO_PADDR)
    assert info.memory_regions_paddr == REGIONS_PADDR


def test_v011_no_sane_candidate_names_pointer_and_bootinfo() -> None:
    mapper = DictMapper()
    entries = list(REGION_ENTRIES)
    entries[3] = (0x100000, 0x7FE0000, 9, 0)
    setup_v011(mapper, entries=entries)
    with pytest.raises(InputError) as err:
        parse_bootinfo_v011(mapper, BOOTINFO_PADDR)
    message = str(err.value)
    assert message.startswith("BootInfo v0.11 at 0x1000: ")
    assert f"0x{OFFSET + REGIONS_PADDR:x}" in message
    assert "memory region 3 has kind tag 9" in message
    assert "\n" not in message


def test_v011_region_start_after_end_is_rejected() -> None:
    mapper = DictMapper()
    setup_v011(mapper, entries=[(0x2000, 0x1000, 0, 0)])
    with pytest.raises(InputError, match="memory region 0 starts at 0x2000 after its end 0x1000"):
        parse_bootinfo_v011(mapper, BOOTINFO_PADDR)


def test_v011_pointer_leading_nowhere() -> None:
    mapper = DictMapper()
    setup_v011(mapper, ptr=0xFFFF_FFFF_0000_0000, physical_memory_offset=None)
    with pytest.raises(InputError, match="0xffffffff00000000"):
        parse_bootinfo_v011(mapper, BOOTINFO_PADDR)


def test_v011_too_many_regions() -> None:
    mapper = DictMapper()
    raw = hand_bootinfo_v011(ptr=REGIONS_PADDR, length=4097, physical_memory_offset=OFFSET)
    mapper.write(BOOTINFO_PADDR, bytes(raw))
    with pytest.raises(InputError, match=r"memory_regions\.len is 4097"):
        parse_bootinfo_v011(mapper, BOOTINFO_PADDR)


def test_v011_empty_map() -> None:
    mapper = DictMapper()
    raw = hand_bootinfo_v011(ptr=8, length=0, physical_memory_offset=OFFSET)
    mapper.write(BOOTINFO_PADDR, bytes(raw))
    info = parse_bootinfo_v011(mapper, BOOTINFO_PADDR)
    assert info.memory_regions == ()
    assert info.memory_regions_paddr is None


@pytest.mark.parametrize(("offset", "name"), [(88, "physical_memory_offset"), (24, "framebuffer")])
def test_v011_bad_optional_tag(offset: int, name: str) -> None:
    mapper = DictMapper()
    setup_v011(mapper)
    mapper.write(BOOTINFO_PADDR + offset, struct.pack("<I", 5))
    with pytest.raises(InputError, match=f"at 0x1000: {name} has Optional tag 5"):
        parse_bootinfo_v011(mapper, BOOTINFO_PADDR)


def test_v011_wrong_api_version() -> None:
    mapper = DictMapper()
    setup_v011(mapper, api_version=(0, 10, 0, 0))
    with pytest.raises(InputError, match=r"api_version is 0\.10\.0, not 0\.11\.x"):
        parse_bootinfo_v011(mapper, BOOTINFO_PADDR)


def test_v011_bad_recursive_index() -> None:
    mapper = DictMapper()
    setup_v011(mapper, recursive_index=512)
    with pytest.raises(InputError, match="recursive_index 512"):
        parse_bootinfo_v011(mapper, BOOTINFO_PADDR)


def test_v011_bootinfo_outside_ram() -> None:
    with pytest.raises(GdbextError) as err:
        parse_bootinfo_v011(DictMapper(), 0x4000_0000)
    assert isinstance(err.value, InputError)
    assert "0x40000000" in str(err.value)


def test_v011_builder_matches_reference_offsets() -> None:
    regions = list(EXPECTED_REGIONS)
    raw = build_bootinfo_v011(
        regions,
        physical_memory_offset=OFFSET,
        regions_ptr=OFFSET + REGIONS_PADDR,
        recursive_index=511,
        rsdp_addr=0xE0000,
    )
    assert len(raw) == 232

    def u(fmt: str, off: int) -> int:
        return int(struct.unpack_from(fmt, raw, off)[0])

    assert (u("<H", 0), u("<H", 2), u("<H", 4), u("<B", 6)) == (0, 11, 14, 0)
    assert (u("<Q", 8), u("<Q", 16)) == (OFFSET + REGIONS_PADDR, 5)
    assert u("<I", 24) == 1  # framebuffer None
    assert (u("<I", 88), u("<Q", 96)) == (0, OFFSET)
    assert (u("<I", 104), u("<H", 108)) == (0, 511)
    assert (u("<I", 112), u("<Q", 120)) == (0, 0xE0000)
    assert u("<I", 128) == 1  # tls_template None
    assert u("<I", 160) == 1  # ramdisk_addr None

    assert build_regions_v011(regions) == hand_regions_v011(
        [(s, e, t, p if t >= 2 else 0) for s, e, t, p in REGION_ENTRIES]
    )


def test_v011_builder_round_trip_and_heap() -> None:
    mapper = DictMapper()
    regions = list(EXPECTED_REGIONS)
    mapper.write(
        BOOTINFO_PADDR,
        build_bootinfo_v011(
            regions, physical_memory_offset=OFFSET, regions_ptr=OFFSET + REGIONS_PADDR
        ),
    )
    mapper.write(REGIONS_PADDR, build_regions_v011(regions))
    info = parse_bootinfo(mapper, BOOTINFO_PADDR, "0.11")
    assert info.memory_regions == EXPECTED_REGIONS
    assert info.recursive_index is None and info.rsdp_addr is None
    heap = locate_kernel_heap(info.memory_regions, require_physical_memory_offset(info))
    assert (heap.start, heap.end) == (OFFSET + 0x100000, OFFSET + 0x7FE0000)


def test_v011_builder_none_offset() -> None:
    raw = build_bootinfo_v011([], physical_memory_offset=None, regions_ptr=0)
    assert struct.unpack_from("<I", raw, 88)[0] == 1


@pytest.mark.parametrize("kind", ["InUse", "UnknownUefi", "Usable(3)", "UnknownBios(x)", ""])
def test_v011_builder_rejects_bad_kinds(kind: str) -> None:
    with pytest.raises(ValueError):
        build_regions_v011([MemoryRegion(0, 0x1000, kind)])


def test_v011_builder_kind_payload_forms() -> None:
    raw = build_regions_v011([MemoryRegion(0, 0x1000, "UnknownUefi(0x10)")])
    assert struct.unpack_from("<II", raw, 16) == (2, 16)


# --- Hand-built v0.9 bytes (reference offsets) -----------------------------------------------

V09_ENTRIES = [
    (0x0, 0x1, 10),  # FrameZero
    (0x1, 0x9F, 0),  # Usable
    (0x100, 0x400, 6),  # Kernel
    (0x400, 0x7FE0, 0),  # Usable
    (0x7FE0, 0x8000, 14),  # NonExhaustive
]
V09_EXPECTED = (
    MemoryRegion(0x0, 0x1000, "FrameZero"),
    MemoryRegion(0x1000, 0x9F000, "Usable"),
    MemoryRegion(0x100000, 0x400000, "Kernel"),
    MemoryRegion(0x400000, 0x7FE0000, "Usable"),
    MemoryRegion(0x7FE0000, 0x8000000, "NonExhaustive"),
)
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


# --- Dispatch --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.9", "0.9.33", "v0.9"])
def test_parse_bootinfo_dispatches_v09(version: str) -> None:
    mapper = DictMapper()
    mapper.write(BOOTINFO_PADDR, build_bootinfo_v09(V09_EXPECTED, physical_memory_offset=OFFSET))
    assert parse_bootinfo(mapper, BOOTINFO_PADDR, version).version == "0.9"


@pytest.mark.parametrize("version", ["0.11", "0.11.14", "v0.11.5"])
def test_parse_bootinfo_dispatches_v011(version: str) -> None:
    mapper = DictMapper()
    setup_v011(mapper)
    assert parse_bootinfo(mapper, BOOTINFO_PADDR, version).version == "0.11"


@pytest.mark.parametrize("version", ["0.10", "1.0", "", "0.111"])
def test_parse_bootinfo_rejects_unknown_versions(version: str) -> None:
    with pytest.raises(InputError, match="unsupported bootloader BootInfo version"):
        parse_bootinfo(DictMapper(), BOOTINFO_PADDR, version)
