"""Rule ``heap-contract``: simulated seed kernels whose heap keeps or breaks the contract, the
CLI's heap options, and the committed real dumps (Linux, which never promised it) explained.

The seed's heap is the largest ``Usable`` region of the memory map moved up by
``physical_memory_offset`` (here 0x1000000-0x2000000 seen at 0xffff888000000000): it must be
mapped, writable and no-execute, and its frames mapped nowhere else but the direct map.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from depth import kernels
from support.paths import ROOT
from support.scenario import sized as m

from gdbext import cli
from gdbext.addr import AddrRange
from gdbext.audit.engine import AuditResult, run_audit
from gdbext.audit.model import Severity
from gdbext.audit.options import AuditOptions
from gdbext.audit.rules.heap_contract import RULES
from gdbext.frontend.commands import RootOptions
from gdbext.frontend.heap import HeapOptions
from gdbext.linux.physoffset import find_direct_map_base
from gdbext.plugin.host import Host
from gdbext.plugin.target import Target
from gdbext.x86.paging import SIZE_4K, X86PageTable
from gdbext_dump.dump import open_dump
from gdbext_sim.scenario import SimMachine, build_machine

DIRECT = 0xFFFF_8880_0000_0000
VMALLOC = 0xFFFF_C900_0000_0000
ESPFIX = 0xFFFF_FF00_0000_0000
HEAP = AddrRange(DIRECT + 0x1000000, DIRECT + 0x2000000)
BOOTINFO = HeapOptions(memmap="bootinfo", at=0x1000)


RW_NX = ("WRITABLE", "NO_EXECUTE")


def direct(*holes: tuple[int, int, tuple[str, ...] | None]) -> list[dict[str, Any]]:
    """64 MiB of direct map in 2 MiB pages, writable and no-execute, except the 2 MiB blocks
    named in ``holes`` (paddr, blocks, flags): other flags, or (``None``) not mapped."""
    special = {pa + k * 0x200000: flags for pa, n, flags in holes for k in range(n)}
    out = []
    for pa in range(0, 64 << 20, 0x200000):
        flags = special.get(pa, RW_NX)
        if flags is not None:
            out.append(m(DIRECT + pa, pa, "2M", 1, *flags))
    return out


def machine(mappings: Sequence[dict[str, Any]], **extra: Any) -> SimMachine:
    return build_machine(
        {
            "levels": 4,
            "ram": "64M",
            "mappings": list(mappings),
            "bootinfo": {
                "version": "0.11",
                "at": "0x1000",
                "physical_memory_offset": hex(DIRECT),
                "regions": [
                    {"start": "0x0", "end": "0x100000", "kind": "Bootloader"},
                    {"start": "0x100000", "end": "0x800000", "kind": "Usable"},
                    {"start": "0x800000", "end": "0x1000000", "kind": "Bootloader"},
                    {"start": "0x1000000", "end": "0x2000000", "kind": "Usable"},
                ],
            },
            **extra,
        }
    )


def audit(
    target: Target | SimMachine,
    heap: HeapOptions | None = BOOTINFO,
    root: RootOptions | None = None,
) -> AuditResult:
    if isinstance(target, SimMachine):
        target = target.to_target()
    return run_audit(target, AuditOptions(root=root or RootOptions(), heap=heap), RULES)


def frames(findings: Sequence[Any]) -> set[int]:
    return {p for f in findings for p in range(f.paddr, f.paddr_end, SIZE_4K)}


# --- must not trigger -----------------------------------------------------------------------


def test_a_heap_that_keeps_the_contract() -> None:
    # Frames outside the heap may be mapped anywhere (the tables live at the top of RAM, the
    # "kernel" at 0x400000 is mapped twice): only the heap's frames are the contract's business.
    mc = machine(
        [
            *direct(),
            m(0xFFFF_FFFF_8040_0000, 0x400000, "4K", 16, "GLOBAL"),
            m(VMALLOC, 0x2000000, "4K", 4, *RW_NX),  # just past the heap's end
            m(VMALLOC + 0x10000, 0xFFF000, "4K", 1, *RW_NX),  # just before its start
        ]
    )
    result = audit(mc)
    assert result.rules_run == ["heap-contract"] and result.findings == []


def test_without_heap_options_the_rule_is_skipped() -> None:
    result = audit(machine(direct()), heap=None)
    assert result.rules_run == []
    assert "--memmap" in result.skipped["heap-contract"]


# --- must trigger ---------------------------------------------------------------------------


def test_executable_heap() -> None:
    result = audit(machine(direct((0x1200000, 1, ("WRITABLE",)))))
    (f,) = result.findings
    assert (f.severity, f.vaddr, f.end, f.paddr, f.paddr_end) == (
        Severity.HIGH, DIRECT + 0x1200000, DIRECT + 0x1400000, 0x1200000, 0x1400000,
    )  # fmt: skip
    assert (f.user, f.writable, f.executable) == (False, True, True)
    assert f.message == (
        "heap 0xffff888001000000-0xffff888002000000: 0xffff888001200000-0xffff888001400000 "
        "is executable (rwx kern)"
    )


def test_read_only_heap() -> None:
    (f,) = audit(machine(direct((0x1800000, 2, ("NO_EXECUTE",))))).findings
    assert (f.vaddr, f.end, f.writable, f.executable) == (
        DIRECT + 0x1800000, DIRECT + 0x1C00000, False, False,
    )  # fmt: skip
    assert f.message.endswith("0xffff888001800000-0xffff888001c00000 is not writable (r-- kern)")


def test_partially_unmapped_heap() -> None:
    result = audit(machine(direct((0x1400000, 1, None), (0x1E00000, 1, None))))
    holes = [(f.vaddr, f.end, f.pages) for f in result.findings]
    assert holes == [
        (DIRECT + 0x1400000, DIRECT + 0x1600000, 512),
        (DIRECT + 0x1E00000, DIRECT + 0x2000000, 512),
    ]
    assert all(
        f.severity == Severity.HIGH and "is not mapped" in f.message for f in result.findings
    )
    # The evidence is the walk's own answer for the first page of the hole.
    assert result.findings[0].evidence == (
        "0xffff888001400000: 0xffff888001400000 is not mapped: its PD entry is not present "
        "(value 0x0)",
    )


def test_heap_frames_mapped_elsewhere() -> None:
    mc = machine(
        [
            *direct(),
            m(VMALLOC, 0x1234000, "4K", 2, *RW_NX),  # writable alias: high
            m(ESPFIX, 0x1F00000, "4K", 1, "NO_EXECUTE"),  # read-only alias, linked 64 times
        ],
        links=[{"vaddr": hex(ESPFIX + 0x200000), "level": 2, "count": 63, "table_of": hex(ESPFIX)}],
    )
    result = audit(mc)
    assert [(f.severity, f.vaddr, f.paddr, f.paddr_end, f.pages) for f in result.findings] == [
        (Severity.HIGH, VMALLOC, 0x1234000, 0x1236000, 2),
        (Severity.MEDIUM, ESPFIX, 0x1F00000, 0x1F01000, 64),
    ]
    high, medium = result.findings
    assert high.message == (
        "heap frames 0x1234000-0x1236000 (heap 0xffff888001234000-0xffff888001236000) are also "
        "mapped at 0xffffc90000000000-0xffffc90000002000 (rw- kern)"
    )
    assert medium.message == (
        "heap frames 0x1f00000-0x1f01000 (heap 0xffff888001f00000-0xffff888001f01000) are also "
        "mapped at 0xffffff0000000000-0xffffff0000001000 and 63 more mappings up to "
        "0xffffff0007e01000 (r-- kern)"
    )


def test_other_mappings_that_continue_each_other_are_one_finding() -> None:
    """A 2 MiB page and then 4 KiB pages, contiguous in VA and frames with the same
    permissions: two runs of the walk, one other mapping of the heap (one finding)."""
    mc = machine([*direct(), m(VMALLOC, 0x1000000, "2M", 1, *RW_NX),
                  m(VMALLOC + 0x200000, 0x1200000, "4K", 4, *RW_NX)])  # fmt: skip
    (f,) = audit(mc).findings
    assert (f.severity, f.vaddr, f.end, f.paddr, f.paddr_end, f.pages) == (
        Severity.HIGH, VMALLOC, VMALLOC + 0x204000, 0x1000000, 0x1204000, 0x204,
    )  # fmt: skip


def test_under_pti_the_heap_is_the_kernel_pgds_whichever_half_cr3_holds(tmp_path: Path) -> None:
    """The user PGD maps no heap (PTI keeps the direct map out of it): the heap is looked up
    in the kernel PGD, also when CR3 holds the user PGD; its frames are looked for in both."""
    from support.pti import DIRECT as PTI_DIRECT
    from support.pti import KERNEL_PGD, USER_PGD, build_pti_machine

    regions = tmp_path / "regions.json"
    regions.write_text(json.dumps([{"start": "0x700000", "end": "0x800000", "kind": "Usable"}]))
    options = HeapOptions(memmap="json", json_path=str(regions), phys_offset=PTI_DIRECT[4])
    pti = build_pti_machine(4)
    for cr3 in (KERNEL_PGD, USER_PGD):
        result = audit(pti.target(cr3), options)
        assert result.rules_run == ["heap-contract"] and result.findings == [], cr3
    # A heap frame mapped again in the user PGD only (in a top-level entry the PTI pair
    # shares, the direct map's, at another offset): found from either half.
    other = PTI_DIRECT[4] + 0x1000_0000
    pti.map_user_pgd(other, 0x7F0000, SIZE_4K, SIZE_4K, 0x2)
    for cr3 in (KERNEL_PGD, USER_PGD):
        (f,) = audit(pti.target(cr3), options).findings
        assert (f.root, f.vaddr, f.paddr, f.severity) == ("user", other, 0x7F0000, Severity.HIGH)


def test_executable_alias_of_a_heap_frame_in_user_space() -> None:
    mc = machine([*direct(), m(0x400000, 0x1800000, "4K", 1, "USER_ACCESSIBLE")])
    (f,) = audit(mc).findings
    assert (f.severity, f.vaddr, f.user, f.executable) == (Severity.HIGH, 0x400000, True, True)


def test_without_nxe_the_whole_heap_is_executable() -> None:
    mc = machine([m(DIRECT, 0, "2M", 32, "WRITABLE")], nxe=False)
    (f,) = audit(mc).findings
    assert (f.vaddr, f.end, f.paddr, f.paddr_end, f.executable) == (
        HEAP.start, HEAP.end, 0x1000000, 0x2000000, True,
    )  # fmt: skip


# --- heap options as the heap command takes them --------------------------------------------


def test_json_memory_map_and_explicit_offset(tmp_path: Path) -> None:
    regions = tmp_path / "regions.json"
    regions.write_text(json.dumps([{"start": "0x3000000", "end": "0x3400000", "kind": "Usable"}]))
    mc = machine(direct((0x3200000, 1, ("WRITABLE",))))
    options = HeapOptions(memmap="json", json_path=str(regions), phys_offset=DIRECT)
    (f,) = audit(mc, options).findings
    assert (f.vaddr, f.end) == (DIRECT + 0x3200000, DIRECT + 0x3400000)
    assert f.message.startswith("heap 0xffff888003000000-0xffff888003400000: ")


def test_command_line_heap_options(tmp_path: Path) -> None:
    scenario = tmp_path / "s.json"
    doc = {"levels": 4, "ram": "64M", "mappings": direct((0x1200000, 1, ("WRITABLE",)))}
    scenario.write_text(json.dumps(doc))
    regions = json.dumps([{"start": "0x1000000", "end": "0x2000000", "kind": "Usable"}])
    out = io.StringIO()
    argv = ["audit", "--backend", "sim", "--scenario", str(scenario), "--rules", "heap-contract",
            "--memmap", "json", regions, "--phys-offset", hex(DIRECT), "--json"]  # fmt: skip
    assert cli.run(argv, Host.create(), out) == 0
    (f,) = json.loads(out.getvalue())["findings"]
    assert (f["rule"], f["vaddr"], f["end"], f["executable"]) == (
        "heap-contract", hex(DIRECT + 0x1200000), hex(DIRECT + 0x1400000), True,
    )  # fmt: skip


def test_demo_scenario() -> None:
    """demo.json's heap (BootInfo at 0x1000: Usable 0x1400000-0x7fe0000 through the direct
    map) is mapped, writable and no-execute; its ESPFIX-like page 0x2000000 (read-only, the
    one page of a table linked 64 times, and once more at +0x10000) is the one other mapping."""
    from gdbext_sim.scenario import load_scenario

    mc = load_scenario(ROOT / "fixtures/scenarios/demo.json")
    (f,) = audit(mc, HeapOptions()).findings  # the BootInfo from the scenario's facts
    assert (f.severity, f.vaddr, f.paddr, f.paddr_end, f.pages) == (
        Severity.MEDIUM, ESPFIX, 0x2000000, 0x2001000, 128,
    )  # fmt: skip


# --- the committed real dumps ---------------------------------------------------------------


def _pages(pt: X86PageTable, window: AddrRange | None = None) -> list[tuple[int, int, Any]]:
    """(VA, PA, leaf) of every 4 KiB page, aliases expanded: the page-by-page reference."""
    return [
        (leaf.vaddr + off, leaf.paddr + off, leaf)
        for leaf in pt.iter_mappings(window)
        for off in range(0, leaf.page_size, SIZE_4K)
    ]


@pytest.mark.parametrize("name", kernels())
def test_real_dumps(name: str, kernel_dump: Any) -> None:
    """Linux never promised the seed's contract, and with ``--memmap e820`` (the heap: the
    largest usable e820 region, 0x100000-0x7fe0000, through the direct map) the audit says how
    it is broken, which a page-by-page reference on the kernel's own tables confirms:

    - no hole: the direct map maps all RAM;
    - the direct map of the kernel's text and read-only data is read-only (Linux keeps the
      direct map's alias of those as read-only as the image mapping);
    - the frames are mapped elsewhere: the kernel image (at __START_KERNEL_map), vmalloc'd
      memory (stacks, modules), the fixmap and cpu_entry_area, ESPFIX's stack page (read-only,
      16,384 mappings: one finding), and under PTI the user PGD's clones.
    """
    target = open_dump(str(kernel_dump(name)))
    root = RootOptions(kernel=True)
    result = audit(target, HeapOptions(memmap="e820"), root)
    root_table, levels = target.facts.kernel_root, target.facts.kernel_levels
    assert isinstance(root_table, int) and isinstance(levels, int)
    pt = X86PageTable(target.mapper, root_table, levels)
    offset = find_direct_map_base(pt)
    assert offset is not None
    heap = AddrRange(offset + 0x100000, offset + 0x7FE0000)
    assert not [f for f in result.ranges() if "is not mapped" in f.message]
    perm = [f for f in result.ranges() if f.message.startswith("heap 0x")]
    assert all(f.message.startswith(f"heap 0x{heap.start:x}-0x{heap.end:x}: ") for f in perm)
    heap_pages = _pages(pt, heap)
    assert frames(perm) == {
        pa for _, pa, leaf in heap_pages if not leaf.writable or leaf.executable
    }
    # Other mappings, page by page, in the kernel PGD (and the user PGD under PTI).
    heap_frames = {pa for _, pa, _ in heap_pages}
    roots = [pt] + (
        [X86PageTable(target.mapper, pt.root | 0x1000, 4)] if name == "kaslr-pti" else []
    )
    others = {
        (view_root.root, pa)
        for view_root in roots
        for va, pa, _ in _pages(view_root)
        if pa in heap_frames and va - pa != offset
    }
    found = {
        (pt.root if f.root == "kernel" else pt.root | 0x1000, p)
        for f in result.ranges()
        if not f.message.startswith("heap 0x")
        for p in range(f.paddr or 0, f.paddr_end or 0, SIZE_4K)
    }
    assert found == others
    espfix = [f for f in result.ranges() if "more mappings" in f.message]
    assert espfix and all(f.severity == Severity.MEDIUM and not f.writable for f in espfix)
    image = [f for f in result.ranges() if (f.vaddr or 0) >= 0xFFFF_FFFF_8000_0000]
    assert any(f.executable and f.severity == Severity.HIGH for f in image)
