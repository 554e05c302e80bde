"""The ``BootInfo`` that the rust-osdev ``bootloader`` crate hands a kernel, v0.11 and v0.9.

Layouts are data: the ``struct.Struct`` constants and offset tables below are the one place
that knows them, and both the parsers and the builders (which the simulator uses to put a
``BootInfo`` into simulated RAM) go through them.

- v0.11 (``api/src/info.rs``): ``Optional<T>`` is a ``#[repr(C)]`` enum, a u32 tag (Some = 0,
  None = 1) then ``T`` at its alignment. ``memory_regions`` is a slice whose ``ptr`` is a
  *virtual* address in the kernel's address space.
- v0.9 (``src/bootinfo``): the memory map is inline; which fields follow it depends on the
  cargo features ``recursive_page_table`` and ``map_physical_memory``.

Every parse error is an :class:`~gdbext.errors.InputError` naming the field and the physical
address of the ``BootInfo``.

>>> from gdbext.heap import MemoryRegion
>>> regions = [MemoryRegion(0x100000, 0x800000, "Usable")]
>>> raw = build_bootinfo_v09(regions, physical_memory_offset=0xFFFF800000000000)
>>> len(raw), hex(int.from_bytes(raw[1544:1552], "little"))
(1584, '0xffff800000000000')
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from gdbext.addr import U64_MAX
from gdbext.errors import GdbextError, InputError
from gdbext.geometry import PAGE_SIZE
from gdbext.heap import MemoryRegion
from gdbext.mapper import PhysMapper
from gdbext.units import parse_int, shown

# --- Layouts ---------------------------------------------------------------------------------

U16: Final = struct.Struct("<H")
U32: Final = struct.Struct("<I")
U64: Final = struct.Struct("<Q")

#: ``Optional<T>`` tags (v0.11).
OPTIONAL_SOME: Final = 0
OPTIONAL_NONE: Final = 1

#: ``ApiVersion {u16 major, u16 minor, u16 patch, bool pre_release}``, 8 bytes with padding.
V011_API_VERSION: Final = struct.Struct("<HHHBx")
#: ``MemoryRegions {ptr: *mut MemoryRegion, len: usize}``.
V011_SLICE: Final = struct.Struct("<QQ")
#: ``Optional<u64>``: tag, 4 bytes of padding, value (16 bytes).
V011_OPTIONAL_U64: Final = struct.Struct("<I4xQ")
#: ``Optional<u16>``: tag, value, 2 bytes of padding (8 bytes).
V011_OPTIONAL_U16: Final = struct.Struct("<IH2x")
#: ``MemoryRegion {u64 start, u64 end (exclusive), MemoryRegionKind {u32 tag, u32 payload}}``.
V011_REGION: Final = struct.Struct("<QQII")

#: Offsets of the v0.11 ``BootInfo`` fields (``#[repr(C)]``, 0.11.14+ for the tail).
V011_OFFSETS: Final[Mapping[str, int]] = MappingProxyType(
    {
        "api_version": 0,
        "memory_regions": 8,  # ptr @8, len @16
        "framebuffer": 24,  # Optional<FrameBuffer>, 64 bytes
        "physical_memory_offset": 88,
        "recursive_index": 104,
        "rsdp_addr": 112,
        "tls_template": 128,  # Optional<TlsTemplate>, 32 bytes
        "ramdisk_addr": 160,  # since 0.11.1
        "ramdisk_len": 176,
        "kernel_addr": 184,  # since 0.11.5
        "kernel_len": 192,
        "kernel_image_offset": 200,
        "kernel_stack_bottom": 208,  # since 0.11.14
        "kernel_stack_len": 216,
        "_test_sentinel": 224,
    }
)
#: Size of the 0.11.14+ ``BootInfo``.
V011_SIZE: Final = 232
#: The prefix (``api_version`` through ``rsdp_addr``) that every 0.11.x shares and gdbext reads.
V011_PREFIX_SIZE: Final = V011_OFFSETS["tls_template"]
#: ``Optional`` fields of the prefix, with their layout.
V011_PREFIX_OPTIONALS: Final[Mapping[str, struct.Struct]] = MappingProxyType(
    {
        "framebuffer": U32,  # only the tag is read
        "physical_memory_offset": V011_OPTIONAL_U64,
        "recursive_index": V011_OPTIONAL_U16,
        "rsdp_addr": V011_OPTIONAL_U64,
    }
)
#: ``MemoryRegionKind`` variants by tag; tags 2 and 3 carry a u32 payload.
V011_KINDS: Final = ("Usable", "Bootloader", "UnknownUefi", "UnknownBios")
#: Tags whose payload is meaningful (for the others the payload bytes are garbage).
V011_KINDS_WITH_PAYLOAD: Final = frozenset({2, 3})
#: More regions than this in a v0.11 map means the pointer or the ``BootInfo`` is wrong.
V011_MAX_REGIONS: Final = 4096

#: ``MemoryRegion {FrameRange {u64 start_frame, u64 end_frame (exclusive)}, u32 region_type}``.
V09_REGION: Final = struct.Struct("<QQI4x")
V09_MAX_REGIONS: Final = 64
#: ``MemoryMap.next_entry_index`` (u64), after the 64 entries.
V09_NEXT_ENTRY_INDEX_OFFSET: Final = V09_MAX_REGIONS * V09_REGION.size
#: ``MemoryMap`` size; the feature-dependent fields follow it.
V09_MEMORY_MAP_SIZE: Final = V09_NEXT_ENTRY_INDEX_OFFSET + U64.size
#: ``MemoryRegionType`` variants by value.
V09_REGION_TYPES: Final = (
    "Usable",
    "InUse",
    "Reserved",
    "AcpiReclaimable",
    "AcpiNvs",
    "BadMemory",
    "Kernel",
    "KernelStack",
    "PageTable",
    "Bootloader",
    "FrameZero",
    "Empty",
    "BootInfo",
    "Package",
    "NonExhaustive",
)
#: The region type of unused map entries (``MemoryRegion::empty()``).
V09_EMPTY: Final = V09_REGION_TYPES.index("Empty")
#: The cargo features that change the v0.9 ``BootInfo`` layout.
V09_FEATURES: Final = frozenset({"recursive_page_table", "map_physical_memory"})


@dataclass(frozen=True)
class V09Layout:
    """Where the feature-dependent fields of a v0.9 ``BootInfo`` are (``None``: absent)."""

    recursive_page_table_addr: int | None
    physical_memory_offset: int | None
    size: int


#: v0.9 layouts by feature set.
V09_LAYOUTS: Final[Mapping[frozenset[str], V09Layout]] = MappingProxyType(
    {
        frozenset(): V09Layout(None, None, 1576),
        frozenset({"map_physical_memory"}): V09Layout(None, 1544, 1584),
        frozenset({"recursive_page_table", "map_physical_memory"}): V09Layout(1544, 1552, 1592),
        frozenset({"recursive_page_table"}): V09Layout(1544, None, 1584),
    }
)

#: What ``parse_bootinfo`` accepts as ``version``.
VERSIONS: Final = ("0.11", "0.9")


# --- Parsed form -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BootInfo:
    """What gdbext needs from a ``BootInfo``; ``at`` is its physical address.

    ``memory_regions_paddr`` is where the region array was found (v0.11: after resolving
    ``memory_regions.ptr``; v0.9: ``at``), ``None`` for an empty v0.11 map.
    """

    version: str
    api_version: tuple[int, int, int, bool] | None
    memory_regions: tuple[MemoryRegion, ...]
    physical_memory_offset: int | None
    recursive_index: int | None
    rsdp_addr: int | None
    at: int
    memory_regions_paddr: int | None = None


def require_physical_memory_offset(info: BootInfo) -> int:
    """``info.physical_memory_offset``, or :class:`~gdbext.errors.InputError` if it is None."""
    if info.physical_memory_offset is None:
        raise InputError(
            f"BootInfo at 0x{info.at:x}: physical_memory_offset is None "
            "(the bootloader's map_physical_memory is off); pass --phys-offset"
        )
    return info.physical_memory_offset


# --- Parsers ---------------------------------------------------------------------------------


def parse_bootinfo(
    mapper: PhysMapper,
    at: int,
    version: str = "0.11",
    *,
    resolve_pointer: Callable[[int], int] | None = None,
    features: Iterable[str] = ("map_physical_memory",),
) -> BootInfo:
    """Parse the ``BootInfo`` at physical address ``at`` as ``version`` (``"0.11"``, ``"0.9"``).

    A full crate version such as ``"0.11.14"`` or ``"v0.9.33"`` is accepted too.
    ``resolve_pointer`` applies to v0.11 only, ``features`` to v0.9 only.
    """
    parts = version.strip().removeprefix("v").split(".")
    series = ".".join(parts[:2])
    if series == "0.11":
        return parse_bootinfo_v011(mapper, at, resolve_pointer=resolve_pointer)
    if series == "0.9":
        return parse_bootinfo_v09(mapper, at, features=features)
    raise InputError(f"unsupported bootloader BootInfo version {shown(version)} (use 0.11 or 0.9)")


def parse_bootinfo_v011(
    mapper: PhysMapper, at: int, *, resolve_pointer: Callable[[int], int] | None = None
) -> BootInfo:
    """Parse a v0.11 ``BootInfo`` at physical address ``at``.

    ``memory_regions.ptr`` is virtual. It is resolved with ``resolve_pointer`` (VA -> PA, e.g.
    a page-table walk) if given, else or if that fails, through the direct map
    (``ptr - physical_memory_offset``), else as a physical address. The first candidate whose
    region array looks sane (every ``start <= end``, kind tags 0..3) wins.
    """
    what = f"BootInfo v0.11 at 0x{at:x}"
    data = _read(mapper, at, V011_PREFIX_SIZE, what)
    major, minor, patch, pre_release = V011_API_VERSION.unpack_from(
        data, V011_OFFSETS["api_version"]
    )
    if pre_release > 1:
        raise InputError(f"{what}: api_version.pre_release is 0x{pre_release:x}, not a bool")
    if (major, minor) != (0, 11):
        raise InputError(f"{what}: api_version is {major}.{minor}.{patch}, not 0.11.x")
    for name, layout in V011_PREFIX_OPTIONALS.items():
        tag = layout.unpack_from(data, V011_OFFSETS[name])[0]
        if tag not in (OPTIONAL_SOME, OPTIONAL_NONE):
            raise InputError(f"{what}: {name} has Optional tag {tag} (Some = 0, None = 1)")
    physical_memory_offset = _optional(data, "physical_memory_offset")
    recursive_index = _optional(data, "recursive_index")
    if recursive_index is not None and recursive_index >= 512:
        raise InputError(f"{what}: recursive_index {recursive_index} is not a table index")
    ptr, length = V011_SLICE.unpack_from(data, V011_OFFSETS["memory_regions"])
    regions, regions_paddr = _read_regions_v011(
        mapper, what, ptr, length, physical_memory_offset, resolve_pointer
    )
    return BootInfo(
        version="0.11",
        api_version=(major, minor, patch, bool(pre_release)),
        memory_regions=regions,
        physical_memory_offset=physical_memory_offset,
        recursive_index=recursive_index,
        rsdp_addr=_optional(data, "rsdp_addr"),
        at=at,
        memory_regions_paddr=regions_paddr,
    )


def parse_bootinfo_v09(
    mapper: PhysMapper, at: int, *, features: Iterable[str] = ("map_physical_memory",)
) -> BootInfo:
    """Parse a v0.9 ``BootInfo`` at physical address ``at``, built with cargo ``features``.

    Only ``recursive_page_table`` and ``map_physical_memory`` change the layout; other names
    are refused so that a typo cannot silently pick the wrong one.
    """
    layout = v09_layout(features)
    what = f"BootInfo v0.9 at 0x{at:x}"
    field_offsets = [
        off
        for off in (layout.recursive_page_table_addr, layout.physical_memory_offset)
        if off is not None
    ]
    size = max([V09_MEMORY_MAP_SIZE, *(off + U64.size for off in field_offsets)])
    data = _read(mapper, at, size, what)
    count = U64.unpack_from(data, V09_NEXT_ENTRY_INDEX_OFFSET)[0]
    if count > V09_MAX_REGIONS:
        raise InputError(
            f"{what}: memory_map.next_entry_index is {count}, more than {V09_MAX_REGIONS}"
        )
    regions = []
    for index in range(count):
        start_frame, end_frame, region_type = V09_REGION.unpack_from(data, index * V09_REGION.size)
        if region_type >= len(V09_REGION_TYPES):
            raise InputError(f"{what}: memory region {index} has region_type {region_type}")
        if start_frame > end_frame:
            raise InputError(
                f"{what}: memory region {index} starts at frame 0x{start_frame:x} "
                f"after its end frame 0x{end_frame:x}"
            )
        if end_frame * PAGE_SIZE > U64_MAX + 1:
            raise InputError(
                f"{what}: memory region {index} end frame 0x{end_frame:x} is beyond 64 bits"
            )
        regions.append(
            MemoryRegion(
                start_frame * PAGE_SIZE, end_frame * PAGE_SIZE, V09_REGION_TYPES[region_type]
            )
        )
    recursive_index = None
    if layout.recursive_page_table_addr is not None:
        addr = U64.unpack_from(data, layout.recursive_page_table_addr)[0]
        recursive_index = (addr >> 39) & 0x1FF
        if addr != recursive_table_addr(recursive_index):
            raise InputError(
                f"{what}: recursive_page_table_addr 0x{addr:x} is not the address of a "
                "recursively mapped level-4 table"
            )
    physical_memory_offset = None
    if layout.physical_memory_offset is not None:
        physical_memory_offset = U64.unpack_from(data, layout.physical_memory_offset)[0]
    return BootInfo(
        version="0.9",
        api_version=None,
        memory_regions=tuple(regions),
        physical_memory_offset=physical_memory_offset,
        recursive_index=recursive_index,
        rsdp_addr=None,
        at=at,
        memory_regions_paddr=at,
    )


def v09_layout(features: Iterable[str]) -> V09Layout:
    """The v0.9 layout for a set of cargo features (unknown names: InputError).

    >>> v09_layout(["recursive_page_table", "map_physical_memory"]).physical_memory_offset
    1552
    """
    wanted = frozenset(features)
    unknown = wanted - V09_FEATURES
    if unknown:
        raise InputError(
            f"unknown bootloader v0.9 feature(s) {', '.join(sorted(unknown))} "
            f"(known: {', '.join(sorted(V09_FEATURES))})"
        )
    return V09_LAYOUTS[wanted]


def recursive_table_addr(index: int) -> int:
    """The canonical address of the level-4 table through recursive entry ``index``.

    >>> hex(recursive_table_addr(511))
    '0xfffffffffffff000'
    """
    addr = (index << 39) | (index << 30) | (index << 21) | (index << 12)
    if index >= 256:
        addr |= 0xFFFF << 48
    return addr


# --- Builders (for the simulator) ------------------------------------------------------------


def build_regions_v011(regions: Iterable[MemoryRegion]) -> bytes:
    """The v0.11 ``[MemoryRegion]`` array for ``regions`` (24 bytes each).

    Kinds are ``"Usable"``, ``"Bootloader"``, ``"UnknownUefi(N)"``, ``"UnknownBios(N)"``;
    anything else is a :class:`ValueError`.
    """
    out = bytearray()
    for count, region in enumerate(regions, 1):
        if count > V011_MAX_REGIONS:
            raise ValueError(f"more than {V011_MAX_REGIONS} memory regions")
        tag, payload = _v011_kind_tag(region.kind)
        _check_u64("memory region end", region.end)
        out += V011_REGION.pack(region.start, region.end, tag, payload)
    return bytes(out)


def build_bootinfo_v011(
    regions: Collection[MemoryRegion],
    *,
    physical_memory_offset: int | None,
    regions_ptr: int,
    recursive_index: int | None = None,
    rsdp_addr: int | None = None,
    api_version: tuple[int, int, int, bool] = (0, 11, 14, False),
) -> bytes:
    """A 232-byte 0.11.14+ ``BootInfo`` whose ``memory_regions`` is ``(regions_ptr, len)``.

    The region array itself is not included (see :func:`build_regions_v011`); the caller puts
    it where ``regions_ptr`` (a virtual address) leads. Optionals not given are None.
    """
    _check_u64("regions_ptr", regions_ptr)
    out = bytearray(V011_SIZE)
    major, minor, patch, pre_release = api_version
    V011_API_VERSION.pack_into(out, V011_OFFSETS["api_version"], major, minor, patch, pre_release)
    V011_SLICE.pack_into(out, V011_OFFSETS["memory_regions"], regions_ptr, len(regions))
    for name in ("framebuffer", "tls_template", "ramdisk_addr"):
        U32.pack_into(out, V011_OFFSETS[name], OPTIONAL_NONE)
    if recursive_index is not None and not 0 <= recursive_index < 512:
        raise ValueError(f"recursive_index {recursive_index} is not a table index")
    values = {
        "physical_memory_offset": physical_memory_offset,
        "recursive_index": recursive_index,
        "rsdp_addr": rsdp_addr,
    }
    for name, value in values.items():
        layout = V011_PREFIX_OPTIONALS[name]
        if value is None:
            layout.pack_into(out, V011_OFFSETS[name], OPTIONAL_NONE, 0)
        else:
            _check_u64(name, value)
            layout.pack_into(out, V011_OFFSETS[name], OPTIONAL_SOME, value)
    return bytes(out)


def build_bootinfo_v09(
    regions: Collection[MemoryRegion],
    *,
    physical_memory_offset: int | None,
    features: Iterable[str] = ("map_physical_memory",),
    recursive_page_table_addr: int = 0,
) -> bytes:
    """A v0.9 ``BootInfo`` (memory map inline) for ``features``.

    Regions must be 4 KiB aligned, at most 64, with v0.9 region type names; unused entries are
    written as ``MemoryRegion::empty()``. ``physical_memory_offset`` must be given exactly when
    ``map_physical_memory`` is among ``features``. Violations are :class:`ValueError`.
    """
    layout = v09_layout(features)
    if len(regions) > V09_MAX_REGIONS:
        raise ValueError(f"{len(regions)} regions, v0.9 holds at most {V09_MAX_REGIONS}")
    out = bytearray(layout.size)
    for index in range(V09_MAX_REGIONS):
        V09_REGION.pack_into(out, index * V09_REGION.size, 0, 0, V09_EMPTY)
    for index, region in enumerate(regions):
        if region.start % PAGE_SIZE or region.end % PAGE_SIZE:
            raise ValueError(f"v0.9 memory region {shown(region)} is not 4 KiB aligned")
        if region.kind not in V09_REGION_TYPES:
            raise ValueError(f"{shown(region.kind)} is not a v0.9 MemoryRegionType")
        V09_REGION.pack_into(
            out,
            index * V09_REGION.size,
            region.start // PAGE_SIZE,
            region.end // PAGE_SIZE,
            V09_REGION_TYPES.index(region.kind),
        )
    U64.pack_into(out, V09_NEXT_ENTRY_INDEX_OFFSET, len(regions))
    if layout.recursive_page_table_addr is not None:
        _check_u64("recursive_page_table_addr", recursive_page_table_addr)
        U64.pack_into(out, layout.recursive_page_table_addr, recursive_page_table_addr)
    if (layout.physical_memory_offset is None) != (physical_memory_offset is None):
        raise ValueError(
            "physical_memory_offset must be given exactly when map_physical_memory is a feature"
        )
    if layout.physical_memory_offset is not None and physical_memory_offset is not None:
        _check_u64("physical_memory_offset", physical_memory_offset)
        U64.pack_into(out, layout.physical_memory_offset, physical_memory_offset)
    return bytes(out)


# --- Helpers ---------------------------------------------------------------------------------


class _Rejected(Exception):
    """A candidate location of the v0.11 region array that does not work (``reason``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _read(mapper: PhysMapper, paddr: int, size: int, what: str) -> bytes:
    try:
        data = mapper.read(paddr, size)
    except GdbextError as err:
        raise InputError(f"{what}: {err}") from err
    if len(data) != size:
        raise InputError(f"{what}: read {len(data)} bytes at 0x{paddr:x}, wanted {size}")
    return data


def _optional(data: bytes, name: str) -> int | None:
    """The value of the v0.11 ``Optional`` prefix field ``name`` (tags already checked)."""
    tag, value = V011_PREFIX_OPTIONALS[name].unpack_from(data, V011_OFFSETS[name])
    return int(value) if tag == OPTIONAL_SOME else None


def _read_regions_v011(
    mapper: PhysMapper,
    what: str,
    ptr: int,
    length: int,
    physical_memory_offset: int | None,
    resolve_pointer: Callable[[int], int] | None,
) -> tuple[tuple[MemoryRegion, ...], int | None]:
    """The regions of the slice ``(ptr, length)`` and the physical address they were read at."""
    if length > V011_MAX_REGIONS:
        raise InputError(f"{what}: memory_regions.len is {length}, more than {V011_MAX_REGIONS}")
    if length == 0:
        return (), None
    size = length * V011_REGION.size
    if ptr + size > U64_MAX + 1:
        raise InputError(f"{what}: memory_regions 0x{ptr:x} + {length} regions wraps around")

    candidates: list[tuple[str, Callable[[int], int]]] = []
    if resolve_pointer is not None:
        candidates.append(("resolve_pointer", resolve_pointer))
    if physical_memory_offset:  # an offset of 0 makes the direct map the identity
        offset = physical_memory_offset
        candidates.append(("direct map", lambda vaddr: vaddr - offset))
    candidates.append(("identity", lambda vaddr: vaddr))

    reasons = []
    for name, translate in candidates:
        try:
            paddr, data = _read_virtual(mapper, translate, ptr, size)
            return _decode_regions_v011(data, length), paddr
        except _Rejected as rejected:
            reasons.append(f"{name}: {rejected.reason}")
    raise InputError(
        f"{what}: memory_regions.ptr 0x{ptr:x} (len {length}) leads to no sane region array "
        f"({'; '.join(reasons)})"
    )


def _read_virtual(
    mapper: PhysMapper, translate: Callable[[int], int], vaddr: int, size: int
) -> tuple[int, bytes]:
    """``size`` bytes at ``vaddr``, translating page by page; the first byte's physical address.

    Raises :class:`_Rejected` if a translation or read fails.
    """
    chunks = []
    first: int | None = None
    cursor, end = vaddr, vaddr + size
    while cursor < end:
        chunk = min(end, (cursor | (PAGE_SIZE - 1)) + 1) - cursor
        try:
            paddr = translate(cursor)
            if paddr < 0:
                raise _Rejected(f"0x{cursor:x} is below physical_memory_offset")
            data = mapper.read(paddr, chunk)
        except GdbextError as err:
            raise _Rejected(str(err)) from err
        if len(data) != chunk:
            raise _Rejected(f"short read at 0x{paddr:x}")
        if first is None:
            first = paddr
        chunks.append(data)
        cursor += chunk
    assert first is not None
    return first, b"".join(chunks)


def _decode_regions_v011(data: bytes, length: int) -> tuple[MemoryRegion, ...]:
    """Decode ``length`` v0.11 regions; :class:`_Rejected` unless they look sane."""
    regions = []
    for index, (start, end, tag, payload) in enumerate(V011_REGION.iter_unpack(data)):
        if tag >= len(V011_KINDS):
            raise _Rejected(f"memory region {index} has kind tag {tag}")
        if start > end:
            raise _Rejected(f"memory region {index} starts at 0x{start:x} after its end 0x{end:x}")
        kind = V011_KINDS[tag]
        if tag in V011_KINDS_WITH_PAYLOAD:
            kind = f"{kind}({payload})"
        regions.append(MemoryRegion(start, end, kind))
    assert len(regions) == length
    return tuple(regions)


def _v011_kind_tag(kind: str) -> tuple[int, int]:
    """``"UnknownUefi(7)"`` -> ``(2, 7)``; ``"Usable"`` -> ``(0, 0)``."""
    name, paren, rest = kind.partition("(")
    if name not in V011_KINDS:
        raise ValueError(f"{shown(kind)} is not a v0.11 MemoryRegionKind")
    tag = V011_KINDS.index(name)
    if tag not in V011_KINDS_WITH_PAYLOAD:
        if paren:
            raise ValueError(f"{shown(kind)}: {name} has no payload")
        return tag, 0
    if not paren or not rest.endswith(")"):
        raise ValueError(f"{shown(kind)}: {name} needs a payload, e.g. {name}(7)")
    payload = parse_int(rest[:-1])
    if payload > 0xFFFF_FFFF:
        raise ValueError(f"{shown(kind)}: payload does not fit in 32 bits")
    return tag, payload


def _check_u64(name: str, value: int) -> None:
    if not 0 <= value <= U64_MAX:
        raise ValueError(f"{name} 0x{value:x} does not fit in a u64")
