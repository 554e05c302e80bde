"""Tests of gdbext.bootinfo: BootInfo v0.11 of the rust-osdev bootloader crate, and the dispatch
by version (v0.9 in ``test_bootinfo_v09.py``).

Byte layouts are built by hand here from the offsets of the reference (dump-formats.md 5.2),
not only through gdbext's own builders.
"""

from __future__ import annotations

import struct

import pytest
from support.bootinfo import BOOTINFO_PADDR, GARBAGE, OFFSET, V09_EXPECTED, DictMapper

from gdbext.bootinfo import (
    BootInfo,
    build_bootinfo_v011,
    build_bootinfo_v09,
    build_regions_v011,
    parse_bootinfo,
    parse_bootinfo_v011,
    require_physical_memory_offset,
)
from gdbext.errors import GdbextError, InputError, NotMappedError
from gdbext.heap import MemoryRegion, locate_kernel_heap

REGIONS_PADDR = 0x3000


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
