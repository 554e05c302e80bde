"""Scenario files: JSON descriptions of a machine whose page tables the simulator builds.

Tables are built through :meth:`gdbext.x86.paging.X86PageTable.map_range`, so a scenario exercises
the engine's own mapping code. The shape::

    {"levels": 4, "ram": "256M", "nxe": true,
     "mappings": [{"vaddr": "0xffff800000000000", "paddr": "0x200000", "size": "2M",
                   "count": 4, "flags": ["WRITABLE", "NO_EXECUTE"]}],
     "bootinfo": {"version": "0.11", "at": "0x1000",
                  "physical_memory_offset": "0xffff800000000000",
                  "regions": [{"start": "0x100000", "end": "0x8000000", "kind": "Usable"}]}}

``size`` is ``4K``, ``2M``, ``1G`` or a byte count; ``count`` maps that many consecutive pages
(default 1); ``flags`` are leaf flags (PRESENT is implied, HUGE_PAGE follows from the size).

Optional keys, for tests of harder cases:

- ``"cpus"``: number of CPUs (default 1), all with the same control registers;
- ``"cr0"``, ``"cr4"``, ``"efer"``: override the control registers the simulator derives;
- ``"max_phys_bits"``: MAXPHYADDR (default 52);
- ``"links"``: ``[{"vaddr": V, "level": L, "count": N, "table_of": W}]`` makes the ``N``
  consecutive level-``L`` entries that map ``V`` onward link the level-``L-1`` table that maps
  ``W`` (shared tables, as Linux's ESPFIX area has);
- ``"recursive_index"``: ``I`` makes top-level entry ``I`` point to the top-level table itself;
- ``"entries"``: ``[{"vaddr": V, "level": L, "value": X}]`` overwrites the raw level-``L`` entry
  that maps ``V`` (malformed tables).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gdbext.bootinfo import build_bootinfo_v011, build_bootinfo_v09, build_regions_v011
from gdbext.cpu import CR0_PG, CR0_WP, CR4_LA57, CR4_PAE, EFER_LMA, EFER_LME, EFER_NXE, CpuState
from gdbext.errors import GdbextError, InputError
from gdbext.flags import PRESENT, parse_flags
from gdbext.geometry import LEAF_LEVEL_OF_SIZE, entry_span, index_shift
from gdbext.heap import MemoryRegion
from gdbext.jsonfile import load_json_file
from gdbext.mapper import read_u64, write_u64
from gdbext.plugin.facts import BootInfoFacts, KernelFacts
from gdbext.plugin.target import Detail, Target
from gdbext.units import format_size, parse_int, parse_size, shown
from gdbext.x86.paging import X86PageTable
from gdbext_sim.elfcore import write_qemu_elf_core
from gdbext_sim.memory import SparsePhysMemory, TopDownFrameAllocator
from gdbext_sim.tlb import SimTlb

#: Most pages one ``mappings`` element may map (64 GiB of 4 KiB pages), and most links one
#: ``links`` element may make: scenarios stay small enough to build in seconds.
MAX_PAGES = 1 << 24
MAX_LINKS = 1 << 16
#: CR0 of a booted x86-64 kernel: PG, AM, WP, NE, ET, MP, PE.
DEFAULT_CR0 = 0x8005_0033
#: CR4: PAE, PGE, OSFXSR, OSXMMEXCPT.
DEFAULT_CR4 = 0x6A0
#: EFER: SCE, LME, LMA (NXE added when the scenario says so).
DEFAULT_EFER = 0x501


@dataclass
class SimMachine:
    """A simulated machine: RAM, a frame allocator, a modelled TLB, CPUs and page tables."""

    memory: SparsePhysMemory
    allocator: TopDownFrameAllocator
    tlb: SimTlb
    page_table: X86PageTable
    cpus: list[CpuState]
    source: str = "<scenario>"
    bootinfo: dict[str, Any] = field(default_factory=dict)

    def to_target(self) -> Target:
        """The machine as a :class:`~gdbext.plugin.target.Target` for the command layer."""
        facts = KernelFacts()
        if self.bootinfo:
            features = self.bootinfo.get("features")
            facts = KernelFacts(
                memmap="bootinfo",
                bootinfo=BootInfoFacts(
                    at=self.bootinfo["at"],
                    version=self.bootinfo["version"],
                    features=None if features is None else tuple(features),
                ),
            )
        return Target(
            backend="sim",
            description=self.source,
            mapper=self.memory,
            cpus=self.cpus,
            ram=self.memory.ram_ranges,
            read_path="in-memory simulator",
            flush_hook=self.tlb,
            frame_allocator=self.allocator,
            details={"table frames": Detail.number(len(self.allocator.allocated))},
            facts=facts,
        )

    def write_core(self, path: str | Path) -> None:
        """Write RAM and CPU state as a QEMU ``dump-guest-memory`` ELF core."""
        write_qemu_elf_core(str(path), self.memory, self.cpus)


def load_scenario(path: str | Path) -> SimMachine:
    """Build the machine a scenario file describes; :class:`InputError` names what is wrong."""
    return build_machine(load_json_file(path, "scenario"), str(path))


class _Doc:
    """Typed access to a scenario document with error messages that name the key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> InputError:
        return InputError(f"{where}: {message}", self.source)

    def int_(self, obj: Mapping[str, Any], key: str, where: str, default: int | None = None) -> int:
        if key not in obj:
            if default is None:
                raise self.fail(where, f"missing {shown(key)}")
            return default
        try:
            value = parse_int(obj[key])
        except (ValueError, TypeError, AttributeError):
            raise self.fail(f"{where}.{key}", f"not a number: {shown(obj[key])}") from None
        if value >= 1 << 64:
            raise self.fail(f"{where}.{key}", f"does not fit in 64 bits: 0x{value:x}")
        return value

    def size(self, obj: Mapping[str, Any], key: str, where: str) -> int:
        if key not in obj:
            raise self.fail(where, f"missing {shown(key)}")
        try:
            return parse_size(obj[key])
        except (ValueError, TypeError):
            raise self.fail(f"{where}.{key}", f"not a size: {shown(obj[key])}") from None

    def list_(self, obj: Mapping[str, Any], key: str) -> Sequence[Any]:
        value = obj.get(key, [])
        if not isinstance(value, list):
            raise self.fail(key, "must be a list")
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.fail(f"{key}[{i}]", "must be an object")
        return value


def build_machine(doc: Any, source: str = "<scenario>") -> SimMachine:
    """Build a :class:`SimMachine` from a parsed scenario document."""
    d = _Doc(source)
    if not isinstance(doc, dict):
        raise d.fail("scenario", "must be a JSON object")
    levels = d.int_(doc, "levels", "scenario", 4)
    if levels not in (4, 5):
        raise d.fail("levels", f"must be 4 or 5, not {levels}")
    ram = d.size(doc, "ram", "scenario") if "ram" in doc else 256 << 20
    if ram < 1 << 20 or ram % 4096 or ram > 1 << 52:
        raise d.fail("ram", f"must be 1M..4P (MAXPHYADDR) and a multiple of 4K, not {ram}")
    nxe = doc.get("nxe", True)
    if not isinstance(nxe, bool):
        raise d.fail("nxe", "must be true or false")
    max_phys_bits = d.int_(doc, "max_phys_bits", "scenario", 52)

    memory = SparsePhysMemory(ram)
    allocator = TopDownFrameAllocator(memory)
    root = allocator.allocate_frame()
    if root is None:
        raise d.fail("ram", "no room for a page table")
    tlb = SimTlb(memory, root, levels)
    try:
        pt = X86PageTable(
            memory,
            root,
            levels,
            nxe=nxe,
            max_phys_bits=max_phys_bits,
            allow_writes=True,
            flush_hook=tlb,
        )
    except ValueError as exc:
        raise d.fail("scenario", str(exc)) from None

    for i, m in enumerate(d.list_(doc, "mappings")):
        where = f"mappings[{i}]"
        page_size = d.size(m, "size", where)
        if page_size not in LEAF_LEVEL_OF_SIZE:
            raise d.fail(f"{where}.size", f"must be 4K, 2M or 1G, not {format_size(page_size)}")
        count = d.int_(m, "count", where, 1)
        if not 1 <= count <= MAX_PAGES:
            raise d.fail(f"{where}.count", f"must be 1..{MAX_PAGES}")
        flag_list = m.get("flags", [])
        if not isinstance(flag_list, list) or not all(isinstance(f, str) for f in flag_list):
            raise d.fail(f"{where}.flags", "must be a list of flag names")
        try:
            flags = parse_flags(flag_list) & ~PRESENT
        except ValueError as exc:
            raise d.fail(f"{where}.flags", str(exc)) from None
        vaddr = d.int_(m, "vaddr", where)
        paddr = d.int_(m, "paddr", where)
        try:
            pt.map_range(vaddr, paddr, page_size * count, page_size, flags, allocator)
        except GdbextError as exc:
            raise d.fail(where, str(exc)) from None

    for i, link in enumerate(d.list_(doc, "links")):
        where = f"links[{i}]"
        try:
            _link(pt, allocator, d, link, where)
        except GdbextError as exc:
            if isinstance(exc, InputError) and exc.path == source:
                raise
            raise d.fail(where, str(exc)) from None

    for i, raw in enumerate(d.list_(doc, "entries")):
        where = f"entries[{i}]"
        slot = _slot(pt, d, d.int_(raw, "vaddr", where), d.int_(raw, "level", where), where)
        write_u64(memory, slot, d.int_(raw, "value", where))

    if "recursive_index" in doc:
        index = d.int_(doc, "recursive_index", "scenario")
        if not 0 <= index < 512:
            raise d.fail("recursive_index", "must be 0..511")
        write_u64(memory, root + 8 * index, root | 0x3)

    cr0 = d.int_(doc, "cr0", "scenario", DEFAULT_CR0 | CR0_PG | CR0_WP)
    cr4 = d.int_(doc, "cr4", "scenario", DEFAULT_CR4 | CR4_PAE | (CR4_LA57 if levels == 5 else 0))
    efer = d.int_(
        doc, "efer", "scenario", DEFAULT_EFER | EFER_LME | EFER_LMA | (EFER_NXE if nxe else 0)
    )
    ncpus = d.int_(doc, "cpus", "scenario", 1)
    if not 1 <= ncpus <= 64:
        raise d.fail("cpus", "must be 1..64")
    cpus = [
        CpuState(cr0=cr0, cr3=root, cr4=cr4, efer=efer, max_phys_bits=max_phys_bits)
        for _ in range(ncpus)
    ]

    machine = SimMachine(memory, allocator, tlb, pt, cpus, source)
    if "bootinfo" in doc:
        machine.bootinfo = _write_bootinfo(memory, d, doc["bootinfo"])
    return machine


def _slot(pt: X86PageTable, d: _Doc, vaddr: int, level: int, where: str) -> int:
    """Physical address of the level-``level`` entry that maps ``vaddr`` (tables must exist)."""
    if not 1 <= level <= pt.levels:
        raise d.fail(f"{where}.level", f"must be 1..{pt.levels}")
    table = pt.root
    for lvl in range(pt.levels, level, -1):
        entry = read_u64(pt.mapper, table + 8 * ((vaddr >> index_shift(lvl)) & 0x1FF))
        if not entry & PRESENT:
            raise d.fail(where, f"no table maps 0x{vaddr:x} at level {lvl - 1}")
        table = entry & pt.addr_mask
    return table + 8 * ((vaddr >> index_shift(level)) & 0x1FF)


def _link(
    pt: X86PageTable,
    allocator: TopDownFrameAllocator,
    d: _Doc,
    link: Mapping[str, Any],
    where: str,
) -> None:
    level = d.int_(link, "level", where)
    if not 2 <= level <= pt.levels - 1:
        raise d.fail(f"{where}.level", f"must be 2..{pt.levels - 1}")
    target_slot = _slot(pt, d, d.int_(link, "table_of", where), level, where)
    target_entry = read_u64(pt.mapper, target_slot)
    if not target_entry & PRESENT:
        raise d.fail(f"{where}.table_of", "no table is linked there")
    vaddr = d.int_(link, "vaddr", where)
    count = d.int_(link, "count", where, 1)
    if not 1 <= count <= MAX_LINKS:
        raise d.fail(f"{where}.count", f"must be 1..{MAX_LINKS}")
    span = entry_span(level)
    for k in range(count):
        va = vaddr + k * span
        pt.link_table(va, level, target_entry & pt.addr_mask, target_entry & 0x7, allocator)


def _write_bootinfo(memory: SparsePhysMemory, d: _Doc, spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise d.fail("bootinfo", "must be an object")
    version = str(spec.get("version", "0.11"))
    at = d.int_(spec, "at", "bootinfo")
    offset = (
        d.int_(spec, "physical_memory_offset", "bootinfo")
        if (spec.get("physical_memory_offset") is not None)
        else None
    )
    regions: list[MemoryRegion] = []
    for i, r in enumerate(d.list_(spec, "regions")):
        where = f"bootinfo.regions[{i}]"
        kind = r.get("kind", "Usable")
        if not isinstance(kind, str):
            raise d.fail(f"{where}.kind", "must be a string")
        try:
            regions.append(MemoryRegion(d.int_(r, "start", where), d.int_(r, "end", where), kind))
        except ValueError as exc:
            raise d.fail(where, str(exc)) from None
    features: list[str] | None = None
    try:
        if version == "0.11":
            blob = build_bootinfo_v011(regions, physical_memory_offset=offset, regions_ptr=0)
            regions_at = at + ((len(blob) + 7) & ~7)
            ptr = regions_at + (offset or 0)
            blob = build_bootinfo_v011(regions, physical_memory_offset=offset, regions_ptr=ptr)
            memory.write(at, blob)
            memory.write(regions_at, build_regions_v011(regions))
        elif version == "0.9":
            raw_features = spec.get("features", ["map_physical_memory"])
            if not isinstance(raw_features, list):
                raise d.fail("bootinfo.features", "must be a list")
            features = [str(f) for f in raw_features]
            memory.write(
                at,
                build_bootinfo_v09(
                    regions, physical_memory_offset=offset, features=tuple(features)
                ),
            )
        else:
            raise d.fail("bootinfo.version", f"must be 0.11 or 0.9, not {shown(version)}")
    except ValueError as exc:
        raise d.fail("bootinfo", str(exc)) from None
    except GdbextError as exc:
        if isinstance(exc, InputError) and exc.path == d.source:
            raise
        raise d.fail("bootinfo", str(exc)) from None
    return {"version": version, "at": at, "features": features}
