"""Rule ``pt-writable-alias``: page-table pages writable through a mapping outside the direct
map, recursive entries, the kernel image's static tables; on the real dumps, the tables found
by reading them raw."""

from __future__ import annotations

from typing import Any

import pytest
from support.audit import DIRECT_RW, KERNEL_ROOTS, KERNEL_TEXT, MB, TEXT, VMALLOC, hint
from support.audit import audit_sim as audit
from support.audit import sim_machine as machine
from support.scenario import sized as m

from gdbext.audit.engine import AuditResult
from gdbext.audit.model import Finding, Severity
from gdbext.audit.rules.pt_writable_alias import RULES as PT_WRITABLE
from gdbext.flags import NO_EXECUTE, PRESENT, USER_ACCESSIBLE, WRITABLE
from gdbext.linux.kernelimage import KERNEL_IMAGE_VA
from gdbext.linux.physoffset import find_direct_map_base
from gdbext.mapper import read_u64, write_u64
from gdbext.x86.paging import SIZE_2M, SIZE_4K, X86PageTable
from gdbext_dump.dump import open_dump
from gdbext_sim.scenario import SimMachine

# --- pt-writable-alias ----------------------------------------------------------------------


def tables_of(mc: SimMachine) -> list[int]:
    """The table frames the simulator allocated (the root first), independent of any walk."""
    return sorted(mc.allocator.allocated)


def test_tables_in_the_direct_map_only_pass() -> None:
    mc = machine([DIRECT_RW, KERNEL_TEXT])
    assert all(t < 64 * MB for t in tables_of(mc))  # all of them in the direct map
    assert audit(mc, PT_WRITABLE).findings == []


def test_page_table_mapped_writable_in_vmalloc_space_is_high() -> None:
    mc = machine([DIRECT_RW, KERNEL_TEXT])
    pt = mc.page_table
    text_pt = pt.translate(TEXT).steps[-1].table
    pt.map(VMALLOC, text_pt, SIZE_4K, WRITABLE | NO_EXECUTE, mc.allocator)
    pt.map(VMALLOC + 0x10000, pt.root, SIZE_4K, NO_EXECUTE, mc.allocator)  # read-only: fine
    (f,) = audit(mc, PT_WRITABLE).findings
    assert (f.rule, f.severity, f.vaddr, f.end, f.paddr, f.paddr_end, f.pages) == (
        "pt-writable-alias", Severity.HIGH, VMALLOC, VMALLOC + SIZE_4K, text_pt,
        text_pt + SIZE_4K, 1,
    )  # fmt: skip
    assert f.message == (
        f"1 page-table page (PT 0x{text_pt:x}) writable at 0xffffc90000000000-0xffffc90000001000"
        " (rw- kern), outside the direct map"
    )
    assert f"PT 0x{text_pt:x} of the cr3 table" in f.evidence


def test_page_table_writable_from_user_mode_is_critical() -> None:
    mc = machine([DIRECT_RW, KERNEL_TEXT])
    pt = mc.page_table
    steps = pt.translate(TEXT).steps
    flags = USER_ACCESSIBLE | WRITABLE | NO_EXECUTE
    # Two contiguous tables? Map the PD and the PT of the text, one page each, next to each other.
    pt.map(0x10000000, steps[2].table, SIZE_4K, flags, mc.allocator)
    (f,) = audit(mc, PT_WRITABLE).findings
    assert (f.severity, f.user, f.vaddr, f.paddr) == (
        Severity.CRITICAL, True, 0x10000000, steps[2].table,
    )  # fmt: skip
    assert f.message.startswith(f"1 page-table page (PD 0x{steps[2].table:x}) writable from user")


# Recursive entries: the page tables become data at the entry's addresses.

SELF = 510  # a recursive PML4 slot: 0xffffff0000000000-0xffffff8000000000


def self_map_va(*indices: int) -> int:
    """The canonical virtual address with these PML4, PDPT, PD and PT indices."""
    va = 0
    for i, index in enumerate(indices):
        va |= index << (39 - 9 * i)
    return va | (0xFFFF_0000_0000_0000 if va >> 47 else 0)


def recursive_findings(result: AuditResult) -> list[Finding]:
    return [f for f in result.findings if f.message.startswith("recursive ")]


@pytest.mark.parametrize(
    ("bits", "severity", "access"),
    [
        (PRESENT | WRITABLE, Severity.HIGH, "rwx kern"),
        (PRESENT, Severity.LOW, "r-x kern"),
        (PRESENT | WRITABLE | USER_ACCESSIBLE, Severity.CRITICAL, "rwx user"),
        (PRESENT | WRITABLE | NO_EXECUTE, Severity.HIGH, "rw- kern"),
    ],
)
def test_recursive_pml4_entry_maps_every_table_as_data(
    bits: int, severity: Severity, access: str
) -> None:
    mc = machine([DIRECT_RW, KERNEL_TEXT])
    root = mc.page_table.root
    write_u64(mc.memory, root + 8 * SELF, root | bits)
    tables = tables_of(mc)
    # The MMU's own view: the root at (SELF, SELF, SELF, SELF), the text's page table at
    # (SELF, 511, 510, 8) (the PML4, PDPT and PD indices of 0xffffffff81000000).
    pt = X86PageTable(mc.memory, root)
    assert pt.translate(self_map_va(SELF, SELF, SELF, SELF)).paddr == root
    text_pt = pt.translate(TEXT).steps[-1].table
    assert pt.translate(self_map_va(SELF, 511, 510, 8)).paddr == text_pt
    (f,) = recursive_findings(audit(mc, PT_WRITABLE))
    start = self_map_va(SELF, 0, 0, 0)
    assert (f.severity, f.vaddr, f.end, f.paddr, f.paddr_end, f.pages) == (
        severity, start, start + (1 << 39), root, root + SIZE_4K, len(tables),
    )  # fmt: skip
    assert f.message == (
        f"recursive PML4 entry: {len(tables)} page-table pages mapped as data ({access}) "
        f"at 0x{start:x}-0x{start + (1 << 39):x}"
    )
    assert f.evidence[0] == f"PML4[{SELF}] @0x{root:x} = 0x{root | bits:x}"
    assert f"PML4 0x{root:x}, the table the entry is in" in f.evidence[1]
    listed = f.evidence[2].split(": ", 1)[1].split(", ")
    assert sorted(int(t.split()[1], 16) for t in listed) == tables


def test_recursive_pd_entry_exposes_its_pd_and_page_tables() -> None:
    """A PD entry linking its own PD: the PD is walked as a page table, so the frames its
    entries point to (the text's page table, and the PD itself) are mapped as 4 KiB pages."""
    mc = machine([DIRECT_RW, KERNEL_TEXT])
    pt = mc.page_table
    steps = pt.translate(TEXT).steps
    pd, text_pt = steps[2].table, steps[3].table
    write_u64(mc.memory, pd + 8 * 9, pd | PRESENT | WRITABLE)  # PD[9] -> the PD itself
    base = TEXT + SIZE_2M  # what PD[9] maps
    assert pt.translate(base + 8 * SIZE_4K).paddr == text_pt  # PD[8] as a PTE
    assert pt.translate(base + 9 * SIZE_4K).paddr == pd  # PD[9] as a PTE
    # The text is read-only, and so are the table entries above it: a read-only path, low.
    (f,) = recursive_findings(audit(mc, PT_WRITABLE))
    assert (f.severity, f.vaddr, f.end, f.paddr, f.pages) == (
        Severity.LOW, base, base + SIZE_2M, pd, 2,
    )  # fmt: skip
    assert f.evidence[2] == f"PD[9] @0x{pd:x} = 0x{pd | PRESENT | WRITABLE:x}"
    names = sorted([(pd, f"PD 0x{pd:x}"), (text_pt, f"PT 0x{text_pt:x}")])
    assert f.evidence[-1] == f"page tables mapped as data (r-x kern): {names[0][1]}, {names[1][1]}"


def test_no_recursive_entry_no_recursive_finding() -> None:
    mc = machine([DIRECT_RW, KERNEL_TEXT])
    root = mc.page_table.root
    write_u64(mc.memory, root + 8 * SELF, root)  # not present: nothing walks it
    assert audit(mc, PT_WRITABLE).findings == []


def test_static_tables_in_the_kernel_image_are_info_other_image_addresses_high() -> None:
    # A kernel image mapped linearly at __START_KERNEL_map + PA (text 0x1000000.., and "data"
    # over the top 2 MiB of RAM, where the simulator allocates its tables), as Linux maps its
    # .data/.bss/.brk: the tables there are writable through the image mapping (info). The same
    # root mapped writable elsewhere in the image's 1 GiB, at another offset, is high.
    start_kernel_map = KERNEL_IMAGE_VA.start
    mc = machine(
        [
            DIRECT_RW,
            m(start_kernel_map + 0x1000000, 0x1000000, "2M", 8, "GLOBAL"),
            m(start_kernel_map + 0x3E00000, 0x3E00000, "4K", 512, "WRITABLE", "NO_EXECUTE"),
        ]
    )
    pt = mc.page_table
    pt.map(start_kernel_map + 0x3000_0000, pt.root, SIZE_4K, WRITABLE | NO_EXECUTE, mc.allocator)
    result = audit(mc, PT_WRITABLE)
    info = [f for f in result.findings if f.severity == Severity.INFO]
    high = [f for f in result.findings if f.severity == Severity.HIGH]
    assert len(result.findings) == len(info) + len(high)
    covered = {p for f in info for p in range(f.paddr or 0, f.paddr_end or 0, SIZE_4K)}
    assert covered == {t for t in tables_of(mc) if t >= 0x3E00000}
    assert all(f.vaddr == start_kernel_map + (f.paddr or 0) for f in info)
    assert all("static tables" in f.evidence[-1] for f in info)
    assert [(f.vaddr, f.paddr) for f in high] == [(start_kernel_map + 0x3000_0000, pt.root)]


def _next(mapper: Any, table: int, index: int) -> int:
    return read_u64(mapper, table + 8 * index) & 0x000F_FFFF_FFFF_F000


def _tables_below(mapper: Any, table: int, level: int) -> set[int]:
    """``table`` and every table below it (present non-leaf entries), read raw."""
    found = {table}
    if level > 1:
        for index in range(512):
            entry = read_u64(mapper, table + 8 * index)
            if entry & PRESENT and not (level <= 3 and entry & 0x80):
                found |= _tables_below(mapper, entry & 0x000F_FFFF_FFFF_F000, level - 1)
    return found


@pytest.mark.parametrize("name", ["4level", "kaslr-pti", "la57"])
def test_real_dumps_pt_writable_alias(name: str, kernel_dump: Any) -> None:
    """Only Linux's static tables, each writable through the kernel image mapping (info):
    ``init_top_pgt`` (the root; under PTI its user half too), with LA57 ``level4_kernel_pgt``
    (the root's entry 511), ``level3_kernel_pgt`` (entry 511 of the P4D), ``level2_kernel_pgt``
    and ``level2_fixmap_pgt`` (its entries 510, 511), ``level1_fixmap_pgt`` (the fixmap PD's
    entries 506, 507) in .data; ``espfix_pud_page`` (the P4D's entry 510) and early_ioremap's
    ``bm_pte`` (the fixmap PD's entry 505) in .bss; and the direct map's first tables, allocated
    from .brk (the top-level entry of the direct map's base: its P4D/PUD, PMD and PTEs)."""
    target = open_dump(str(kernel_dump(name)))
    mapper = target.mapper
    root = hint(target, "kernel_root")
    levels = hint(target, "kernel_levels")
    image = KERNEL_IMAGE_VA.start + hint(target, "kernel_offset")
    p4d = _next(mapper, root, 511) if levels == 5 else root
    pud = _next(mapper, p4d, 511)  # level3_kernel_pgt
    kernel_pd, fixmap_pd = _next(mapper, pud, 510), _next(mapper, pud, 511)
    data = {pud, kernel_pd, fixmap_pd, _next(mapper, fixmap_pd, 506), _next(mapper, fixmap_pd, 507)}
    if levels == 5:
        data.add(p4d)
    bss = {_next(mapper, p4d, 510), _next(mapper, fixmap_pd, 505)}
    base = find_direct_map_base(X86PageTable(mapper, root, levels))
    assert base is not None
    direct_top = _next(mapper, root, (base >> (12 + 9 * (levels - 1))) & 511)
    brk = _tables_below(mapper, direct_top, levels - 1)
    for audit_root in KERNEL_ROOTS:
        result = audit(target, PT_WRITABLE, audit_root)
        assert result.ranges() and all(f.severity == Severity.INFO for f in result.ranges())
        frames = {p for f in result.ranges() for p in range(f.paddr or 0, f.paddr_end or 0, 4096)}
        expected = data | bss
        if audit_root.kernel:
            expected |= {root} | ({root | 0x1000} if name == "kaslr-pti" else set())
        assert expected <= frames
        rest = frames - expected
        assert direct_top in rest and rest <= brk
        assert all(f.vaddr == image + (f.paddr or 0) for f in result.ranges())
