"""Rule ``reserved-bits``: entries with reserved bits set or NX without NXE, and leaves outside
RAM mapped with a memory type (device memory), on scenarios and on the real dumps, whose
leaves outside QEMU's RAM come from QEMU's ``info tlb``."""

from __future__ import annotations

import dataclasses

import pytest
from depth import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from support.audit import (
    INFO,
    NAMES,
    RESERVED,
    DumpFactory,
    H,
    L,
    M,
    brief,
    golden,
    mapping,
    scenario,
)
from support.audit import audit_rule as audit
from support.paths import SCENARIOS
from support.pti import (
    USER_PGD,
    build_pti_machine,
)

from gdbext.addr import AddrRange
from gdbext.audit.rules.reserved_bits import PCD, PWT, outside
from gdbext.frontend.commands import RootOptions
from gdbext.linux.layout import CPU_ENTRY_AREA_BASE
from gdbext.mapper import write_u64
from gdbext.x86.paging import SIZE_4K
from gdbext_dump.dump import open_dump
from gdbext_sim.scenario import build_machine, load_scenario

# --- reserved-bits ---------------------------------------------------------------------------


def test_reserved_bits_scenario() -> None:
    result = audit(scenario("reserved"), RESERVED)
    assert [brief(f) for f in result.findings] == [
        # Address bit 40 (MAXPHYADDR 39) in one 2 MiB leaf, then in three consecutive ones.
        (H, "cr3", 0xFFFF888000800000, 0xFFFF888000A00000, None, None, 512, None, None, None),
        (H, "cr3", 0xFFFF888001000000, 0xFFFF888001600000, None, None, 1536, None, None, None),
        # Bit 13 of a 2 MiB leaf.
        (H, "cr3", 0xFFFF888002000000, 0xFFFF888002200000, None, None, 512, None, None, None),
        # PS in a PML4 entry: 512 GiB unreachable.
        (H, "cr3", 0xFFFFA00000000000, 0xFFFFA08000000000, None, None, 1 << 27, None, None,
         None),
        # A PD entry linking a table at 1 GiB, beyond 256 MiB of RAM.
        (H, "cr3", 0xFFFFB00000000000, 0xFFFFB00000200000, None, None, 512, None, None, None),
        # An executable page at 768 MiB.
        (M, "cr3", 0xFFFFFFFFC0000000, 0xFFFFFFFFC0001000, 0x30000000, 0x30001000, 1, False,
         False, True),
        # Write-back pages outside RAM: 2 at 512 MiB; one at 0x50000000 whose PT is linked
        # under 3 more PD entries (its copies: one span, 3 pages).
        (L, "cr3", 0xFFFFC90000000000, 0xFFFFC90000002000, 0x20000000, 0x20002000, 2, False,
         True, False),
        (L, "cr3", 0xFFFFD00000000000, 0xFFFFD00000001000, 0x50000000, 0x50001000, 1, False,
         True, False),
        (L, "cr3", 0xFFFFD00000200000, 0xFFFFD00000601000, 0x50000000, 0x50001000, 3, False,
         True, False),
        # The local APIC, PCD|PWT.
        (INFO, "cr3", 0xFFFFFFFFFF5FD000, 0xFFFFFFFFFF5FE000, 0xFEE00000, 0xFEE01000, 1, False,
         True, False),
    ]  # fmt: skip
    messages = [f.message for f in result.findings]
    assert "(address bits at or above MAXPHYADDR 39)" in messages[0]
    assert messages[1].startswith("3 PD entries with reserved bits 0x10000000000 set")
    assert "(reserved low bits of a large page)" in messages[2]
    assert messages[3].startswith("1 PML4 entry with PS (HUGE_PAGE) set")
    assert "a table outside RAM (0x40000000)" in messages[4]
    assert messages[9].endswith("local APIC device memory, mapped uncached")
    # Evidence of a faulting entry: the path read again, ending with the entry itself.
    assert result.findings[1].evidence[-2].endswith("= 0x80000100010000e3")
    assert result.findings[1].evidence[-1].startswith("entries 8..10 of table 0x")
    assert result.findings[3].evidence == (f"PML4[320] @0x{result.root:x} = 0x80000000000000e3",)


def test_reserved_bits_nx_without_nxe() -> None:
    machine = build_machine(
        {
            "nxe": False,
            "mappings": [mapping(0xFFFF888000000000, 0x5000, "4K", ["WRITABLE"], 2)],
            "entries": [{"vaddr": "0xffff888000001000", "level": 1, "value": "0x8000000000006003"}],
        }
    )
    (f,) = audit(machine.to_target(), RESERVED).findings
    assert brief(f)[:7] == (H, "cr3", 0xFFFF888000001000, 0xFFFF888000002000, None, None, 1)
    assert "(NX without EFER.NXE)" in f.message and f.message.startswith("1 PT entry")


def test_reserved_bits_memory_type_of_leaves_outside_ram() -> None:
    """Outside RAM, the memory type decides: write-back (PAT entry 0, or 4 with the PAT bit) is
    low, any other (PWT, PCD or both: WC/WT, UC-, UC) info. A PWT-only mapping once passed for
    write-back in no test."""
    base, frame = 0xFFFF_C900_0000_0000, 0x2000_0000  # frames past 256 MiB of RAM
    pat_4k = 1 << 7
    bits = [0, PWT, PCD, PWT | PCD, pat_4k]
    flags = ["WRITABLE", "NO_EXECUTE"]
    mappings = [mapping(base + 2 * i * 0x1000, frame + i * 0x1000, "4K", flags) for i in range(5)]
    machine = build_machine({"mappings": mappings})
    pt = machine.page_table
    for i, extra in enumerate(bits):
        step = pt.translate(base + 2 * i * 0x1000).steps[-1]
        write_u64(machine.memory, step.table + 8 * step.index, step.entry | extra)
    found = audit(machine.to_target(), RESERVED).findings
    assert [(f.vaddr, f.severity) for f in sorted(found, key=lambda f: f.vaddr or 0)] == [
        (base, L), (base + 0x2000, INFO), (base + 0x4000, INFO), (base + 0x6000, INFO),
        (base + 0x8000, L),
    ]  # fmt: skip
    by_va = {f.vaddr: f for f in found}
    assert "memory type: PWT=1 PCD=0 PAT=0 (not write-back)" in by_va[base + 0x2000].evidence
    assert "memory type: PWT=0 PCD=0 PAT=1 (write-back)" in by_va[base + 0x8000].evidence


def test_reserved_bits_consecutive_entries_with_other_bits_are_other_findings() -> None:
    """Neighbouring faulting entries group only when the same bits are set."""
    machine = build_machine(
        {
            "max_phys_bits": 39,
            "mappings": [mapping(0xFFFF888000000000, 0, "2M", ["WRITABLE", "NO_EXECUTE"], 3)],
            "entries": [
                {"vaddr": "0xffff888000000000", "level": 2, "value": "0x80000100000000e3"},
                {"vaddr": "0xffff888000200000", "level": 2, "value": "0x80000100002000e3"},
                {"vaddr": "0xffff888000400000", "level": 2, "value": "0x80000000004020e3"},
            ],
        }
    )
    found = audit(machine.to_target(), RESERVED).findings
    assert [(f.vaddr, f.end, f.pages) for f in found] == [
        (0xFFFF888000000000, 0xFFFF888000400000, 1024),
        (0xFFFF888000400000, 0xFFFF888000600000, 512),
    ]
    assert found[0].message.startswith("2 PD entries with reserved bits 0x10000000000 set")
    assert found[1].message.startswith("1 PD entry with reserved bits 0x2000 set")


def test_reserved_bits_finds_nothing_in_a_clean_address_space() -> None:
    assert audit(scenario("clean"), RESERVED).findings == []
    assert audit(scenario("user-kernel"), RESERVED).findings == []


def test_reserved_bits_demo_maps_device_memory() -> None:
    """demo.json maps 1 GiB at 0x40000000 (beyond its 256 MiB of RAM) NO_CACHE: info."""
    demo = load_scenario(SCENARIOS / "demo.json").to_target()
    (f,) = audit(demo, RESERVED).findings
    assert brief(f) == (
        INFO, "cr3", 0xFFFFC90000000000, 0xFFFFC90040000000, 0x40000000, 0x80000000, 1 << 18,
        False, True, False,
    )  # fmt: skip


def test_reserved_bits_with_a_pc_memory_map() -> None:
    """RAM with the legacy hole (0xa0000-0xfffff) and without the page-table root's frame (a
    live target's memory tree, say): the direct map over the hole is info, the root high."""
    machine = build_machine(
        {"mappings": [mapping(0xFFFF888000000000, 0, "4K", ["WRITABLE", "NO_EXECUTE"], 512)]}
    )
    root = machine.page_table.root
    ram = [AddrRange(0, 0xA0000), AddrRange(0x100000, root), AddrRange(root + 0x1000, 256 << 20)]
    target = dataclasses.replace(machine.to_target(), ram=ram)
    found = audit(target, RESERVED).findings
    assert [brief(f) for f in found] == [
        (H, "cr3", None, None, root, root + 0x1000, 0, None, None, None),
        (INFO, "cr3", 0xFFFF8880000A0000, 0xFFFF888000100000, 0xA0000, 0x100000, 96, False, True,
         False),
    ]  # fmt: skip
    assert found[0].message == f"PML4 table at 0x{root:x} lies outside RAM: the MMU reads " + (
        "entries from non-RAM"
    )
    assert "legacy ISA range" in found[1].message


def test_reserved_bits_under_pti_reports_shared_tables_once() -> None:
    m = build_pti_machine(4)
    assert audit(m.target(), RESERVED).findings == []
    # A reserved bit in a cpu_entry_area PT entry: the table is shared by both PGDs.
    pt = m.kernel.translate(CPU_ENTRY_AREA_BASE).steps[-1]
    write_u64(m.memory, pt.table + 8 * pt.index, pt.entry | (1 << 51))
    target = m.target()
    target.cpus = [dataclasses.replace(target.cpus[0], max_phys_bits=46)]
    (f,) = audit(target, RESERVED).findings
    assert (f.severity, f.root, f.vaddr) == (H, "kernel", CPU_ENTRY_AREA_BASE)
    assert f.evidence[-1] == f"the same through the user table 0x{USER_PGD:x} (shared tables)"


@settings(max_examples=examples(200), deadline=None)
@given(
    ram=st.lists(st.tuples(st.integers(0, 60), st.integers(1, 8)), max_size=6),
    query=st.tuples(st.integers(0, 60), st.integers(1, 20)),
)
def test_outside_against_pages(ram: list[tuple[int, int]], query: tuple[int, int]) -> None:
    pages: set[int] = set()
    for start, n in ram:
        pages |= set(range(start, start + n))
    merged: list[AddrRange] = []
    for p in sorted(pages):
        if merged and merged[-1].end == p * SIZE_4K:
            merged[-1] = AddrRange(merged[-1].start, (p + 1) * SIZE_4K)
        else:
            merged.append(AddrRange(p * SIZE_4K, (p + 1) * SIZE_4K))
    qs, qn = query
    got = outside(qs * SIZE_4K, (qs + qn) * SIZE_4K, merged)
    assert [v // SIZE_4K for lo, hi in got for v in range(lo, hi, SIZE_4K)] == [
        p for p in range(qs, qs + qn) if p not in pages
    ]


#: QEMU's RAM for ``-m 128M`` on a PC: [0, 128 MiB) less the VGA window (qemu-config.txt).
QEMU_RAM = [(0, 0xA0000), (0xC0000, 128 << 20)]


@pytest.mark.parametrize("name", NAMES)
def test_real_reserved_bits_is_device_memory_only(kernel_dump: DumpFactory, name: str) -> None:
    """Every finding is info, and they cover exactly the leaves of QEMU's ``info tlb`` (the
    kernel's root) whose frames are not QEMU's RAM: 32 direct-map pages over the VGA window,
    the HPET twice, the I/O APIC and the local APIC."""
    target = open_dump(str(kernel_dump(name)))
    result = audit(target, RESERVED, RootOptions(kernel=True))
    assert {f.severity for f in result.ranges()} == {INFO}
    not_ram = sorted(
        (v, p)
        for v, p, _ in golden(name, "info-tlb-kernel")
        if not any(lo <= p < hi for lo, hi in QEMU_RAM)
    )
    assert len(not_ram) == 36
    got = sorted(
        (v, f.paddr + (v - f.vaddr))
        for f in result.ranges()
        if f.vaddr is not None and f.end is not None and f.paddr is not None
        for v in range(f.vaddr, f.end, SIZE_4K)
    )
    assert got == not_ram
    assert sorted(f.message.split(": ", 1)[1] for f in result.ranges()) == [
        "HPET device memory, mapped uncached",
        "HPET device memory, mapped uncached",
        "I/O APIC device memory, mapped uncached",
        "local APIC device memory, mapped uncached",
        "the legacy ISA range (the direct map covers the first 1 MiB)",
    ]
