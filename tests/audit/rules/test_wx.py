"""Rule ``wx`` on hand-built simulated machines: the count Linux's W+X check prints, and the
W+X ranges with their evidence.

Every expected value is computed here independently of the audit: page counts from the
scenario's own numbers, or by brute force over :meth:`X86PageTable.iter_mappings` (one
mapping per leaf, every alias expanded, effective permissions per path), never from the
audit's spans.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.audit import (
    HOLE_4,
    NX,
    TEXT_VA,
    G,
    U,
    W,
    audit,
    machine,
    pd_entry_slot,
    two_roots,
    without_efer,
)
from support.pti import KERNEL_PGD, USER_PGD, VMALLOC, build_pti_machine
from support.scenario import mapping as m

from gdbext import cli
from gdbext.addr import AddrRange
from gdbext.audit.context import AuditContext, LeafSpan
from gdbext.audit.engine import AuditResult
from gdbext.audit.model import Severity
from gdbext.audit.options import AuditOptions
from gdbext.audit.rules.wx import verdict_line
from gdbext.cpu import (
    CR0_PG,
    CR0_WP,
    CR4_PAE,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
    CpuState,
)
from gdbext.flags import (
    ACCESSED_DIRTY,
    GLOBAL,
    HUGE_PAGE,
    NO_EXECUTE,
    PRESENT,
    USER_ACCESSIBLE,
    WRITABLE,
)
from gdbext.frontend.commands import RootOptions
from gdbext.geometry import entry_span
from gdbext.mapper import read_u64, write_u64
from gdbext.plugin.host import Host
from gdbext.plugin.target import Target
from gdbext.x86.paging import SIZE_2M, SIZE_4K, X86PageTable
from gdbext.x86.records import LeafRun
from gdbext_sim.memory import SparsePhysMemory, TopDownFrameAllocator

PASSED = "x86/mm: Checked W+X mappings: passed, no W+X pages found."
CHECKING_USER = "x86/mm: Checking user space page tables"


def brute_wx(pt: X86PageTable, skip: AddrRange | None = HOLE_4) -> int:
    """W+X 4 KiB pages, one mapping per leaf, every alias expanded."""
    return sum(
        m.page_size // SIZE_4K
        for m in pt.iter_mappings()
        if m.writable and m.executable and (skip is None or m.vaddr not in skip)
    )


#: (virtual address, bytes, W+X, mapped by the MMU, a leaf) of one of ptdump's notes.
Note = tuple[int, int, bool, bool, bool]


def ptdump_notes(pt: X86PageTable, indices: Sequence[int]) -> list[Note]:
    """Linux 6.1's W+X check replayed: the notes ``note_page`` gets, in walk order, as
    ``mm/pagewalk.c`` meets the entries with ptdump's callbacks, every path expanded (no
    memo), for the top-level entries ``indices``. Holes are noted (never W+X); every PTE of a
    descended table is noted; a PMD with PSE, and a PUD with PRESENT and PSE, are leaves; the
    walker descends into top-level entries that are not none, present PUDs and PMDs with
    PRESENT or GLOBAL (PROTNONE); anything else is not noted."""
    mapper, levels = pt.mapper, pt.levels
    notes: list[Note] = []

    def walk(table: int, level: int, base: int, rw: bool, nx: bool, mapped: bool) -> None:
        span = entry_span(level)
        for i in range(512):
            if level == levels and i not in indices:
                continue
            e = read_u64(mapper, table + 8 * i)
            va = pt.geometry.canonicalize(i * span) if level == levels else base + i * span
            e_rw, e_nx = rw and bool(e & WRITABLE), nx or bool(e & NO_EXECUTE)
            e_mapped = mapped and bool(e & PRESENT)
            if level == 1:
                notes.append((va, span, e_rw and not e_nx, e_mapped, True))
            elif not (e if level == levels == 5 else e & ~ACCESSED_DIRTY):
                notes.append((va, span, False, False, False))
            elif (level == 3 and e & PRESENT and e & HUGE_PAGE) or (level == 2 and e & HUGE_PAGE):
                notes.append((va, span, e_rw and not e_nx, e_mapped, True))
            elif level >= 4 or e & (PRESENT | (GLOBAL if level == 2 else 0)):
                walk(e & 0x000F_FFFF_FFFF_F000, level - 1, va, e_rw, e_nx, e_mapped)

    walk(pt.root, levels, 0, True, False, True)
    return notes


def ptdump_count(pt: X86PageTable) -> int:
    """The number the kernel prints: each note's W+X-ness times the bytes up to the next note
    (the next series' start; what is not noted joins the series before it), over the two
    walked ranges (the non-canonical gap and the guard hole join the lower half's last series),
    the last one up to 2^64."""
    notes = ptdump_notes(pt, [*range(256), *range(272, 512)])
    ends = [n[0] for n in notes[1:]] + [1 << 64]
    return sum(end - va for (va, _, wx, _, _), end in zip(notes, ends, strict=True) if wx) // 4096


def not_present_wx(pt: X86PageTable) -> int:
    """4 KiB pages of W+X leaf notes the MMU does not map, over the whole address space."""
    return sum(size for _, size, wx, mapped, leaf in ptdump_notes(pt, range(512))
               if wx and leaf and not mapped) // 4096  # fmt: skip


# --- wx -----------------------------------------------------------------------------------------

WX_MAPPINGS = [
    m(0xFFFF_FFFF_8100_0000, 0x100_0000, 3, W),  # 3 kernel pages W+X
    m(0xFFFF_FFFF_8120_0000, 0x120_0000, 4),  # read-only, executable
    m(0xFFFF_FFFF_8200_0000, 0x200_0000, 1, W, size="2M"),  # 512 pages W+X
    m(0x40_0000, 0x300_0000, 2, U, W),  # 2 user pages W+X
    m(0xFFFF_8880_0000_0000, 0, 4, W, NX, size="2M"),  # direct map: W, NX
    m(0xFFFF_C900_0000_0000, 0x400_0000, 1, W),  # 1 page W+X, its PT linked 5 more times
    m(0xFFFF_8000_0000_0000, 0x500_0000, 7, W),  # 7 pages W+X in the guard hole
]
WX_LINKS = [
    {"vaddr": "0xffffc90000200000", "level": 2, "count": 5, "table_of": "0xffffc90000000000"}
]


def wx_target() -> Target:
    return machine(WX_MAPPINGS, links=WX_LINKS)


def test_wx_counts_as_the_kernel_does() -> None:
    target = wx_target()
    result = audit(target, "wx")
    # 3 + 512 + 2 + 6 (one page and five aliases of its table); the guard hole's 7 do not count.
    assert result.summary["wx"] == [verdict_line(523)]
    assert verdict_line(523) == "x86/mm: Checked W+X mappings: FAILED, 523 W+X pages found."
    pt = X86PageTable.from_cpu(target.mapper, target.cpus[0])
    assert brute_wx(pt) == 523
    # Findings: every W+X range, the guard hole's too (saying so), every page counted.
    by_va = {f.vaddr: f for f in result.findings}
    assert sum(f.pages for f in result.findings) == brute_wx(pt, skip=None) == 530
    text = by_va[0xFFFF_FFFF_8100_0000]
    assert (text.end, text.paddr, text.paddr_end, text.pages) == (
        0xFFFF_FFFF_8100_3000,
        0x100_0000,
        0x100_3000,
        3,
    )
    assert (text.user, text.writable, text.executable, text.severity) == (
        False,
        True,
        True,
        Severity.HIGH,
    )
    assert text.message == "3 kernel pages writable and executable"
    steps = pt.translate(0xFFFF_FFFF_8100_0000).steps
    assert text.evidence == tuple(
        f"{name}[{s.index}] @0x{s.table:x} = 0x{s.entry:x}"
        for name, s in zip(("PML4", "PDPT", "PD", "PT"), steps, strict=True)
    )
    assert by_va[0x40_0000].user is True and by_va[0x40_0000].pages == 2
    alias = by_va[0xFFFF_C900_0020_0000]
    assert alias.pages == 5 and alias.end == 0xFFFF_C900_00A0_1000
    assert any("mapped 5 times, every 0x200000 bytes" in e for e in alias.evidence)
    hole = by_va[0xFFFF_8000_0000_0000]
    assert hole.pages == 7 and any("guard hole" in e for e in hole.evidence)
    assert 0xFFFF_FFFF_8120_0000 not in by_va and 0xFFFF_8880_0000_0000 not in by_va


def test_wx_alias_through_a_read_only_link_is_not_wx() -> None:
    target = wx_target()
    pt = X86PageTable.from_cpu(target.mapper, target.cpus[0])
    slot = pd_entry_slot(pt, 0xFFFF_C900_0040_0000)  # the second of the five links
    write_u64(target.mapper, slot, read_u64(target.mapper, slot) & ~WRITABLE)
    assert brute_wx(pt) == 522
    result = audit(target, "wx")
    assert result.summary["wx"] == [verdict_line(522)]
    assert sum(f.pages for f in result.findings) == 529


def test_wx_nx_in_a_parent_entry_makes_the_leaves_nx() -> None:
    target = machine([m(0xFFFF_C900_4000_0000, 0x100_0000, 8, W)])
    pt = X86PageTable.from_cpu(target.mapper, target.cpus[0])
    assert audit(target, "wx").summary["wx"] == [verdict_line(8)]
    slot = pd_entry_slot(pt, 0xFFFF_C900_4000_0000)
    write_u64(target.mapper, slot, read_u64(target.mapper, slot) | NO_EXECUTE)
    result = audit(target, "wx")
    assert result.summary["wx"] == [PASSED] and result.findings == []


# Not-present entries: Linux 6.1's check counts leaf entries by their flags, present or not.


def text_with(entries: list[dict[str, object]]) -> Target:
    """Kernel text (8 read-only, executable pages), data after it in the same page table
    (writable, no-execute: the path to the table allows writes, as Linux's table entries do),
    and raw ``entries`` written over them."""
    maps = [m(TEXT_VA, 0x100_0000, 8), m(TEXT_VA + 0x10000, 0x101_0000, 4, W, NX)]
    return machine(maps, entries=entries)


def pte(vaddr: int, value: int, level: int = 1) -> dict[str, object]:
    return {"vaddr": hex(vaddr), "level": level, "value": hex(value)}


def wx_summary(result: AuditResult) -> tuple[list[str], list[object]]:
    return result.summary["wx"], result.summary["wx_pages"]  # type: ignore[return-value]


def test_wx_not_present_writable_entry_without_nx_counts() -> None:
    # PRESENT cleared, RW kept (set_memory_np on a freed page): the MMU maps nothing there,
    # the kernel's check counts the page.
    target = text_with([pte(TEXT_VA + 0x4000, 0x100_4000 | WRITABLE)])
    result = audit(target, "wx")
    assert wx_summary(result) == (
        [verdict_line(1)],
        [{"present": 0, "not_present": 1, "not_noted": 0}],
    )
    (f,) = result.findings
    assert (f.severity, f.vaddr, f.end, f.paddr, f.paddr_end, f.pages) == (
        Severity.LOW, TEXT_VA + 0x4000, TEXT_VA + 0x5000, 0x100_4000, 0x100_5000, 1
    )  # fmt: skip
    assert "not present" in f.message and f.writable and f.executable and not f.user
    assert f.evidence[3] == f"PT[4] @0x{_pt_of(target, TEXT_VA):x} = 0x{0x100_4000 | WRITABLE:x}"
    assert "not present" in f.evidence[4] and "never tests PRESENT" in f.evidence[4]


def _pt_of(target: Target, vaddr: int) -> int:
    pt = X86PageTable.from_cpu(target.mapper, target.cpus[0])
    return pt.translate(vaddr).steps[-1].table


@pytest.mark.parametrize(
    "value",
    [
        0,  # a zero entry: a hole
        int(ACCESSED_DIRTY),  # no RW
        0x100_4000 | WRITABLE | NO_EXECUTE,  # NX on the entry
        0x100_4000,  # read-only
    ],
)
def test_wx_not_present_entries_that_do_not_count(value: int) -> None:
    result = audit(text_with([pte(TEXT_VA + 0x4000, value)]), "wx")
    assert wx_summary(result)[0] == [PASSED] and result.findings == []


def test_wx_not_present_entry_below_an_nx_path_does_not_count() -> None:
    target = text_with([pte(TEXT_VA + 0x4000, 0x100_4000 | WRITABLE)])
    assert audit(target, "wx").summary["wx"] == [verdict_line(1)]
    pt = X86PageTable.from_cpu(target.mapper, target.cpus[0])
    slot = pd_entry_slot(pt, TEXT_VA)
    write_u64(target.mapper, slot, read_u64(target.mapper, slot) | NO_EXECUTE)
    result = audit(target, "wx")
    assert result.summary["wx"] == [PASSED] and result.findings == []


def test_wx_not_present_large_pages() -> None:
    """A PMD entry with PSE counts whether present or not (pmd_leaf tests PSE only); a PUD
    entry needs PRESENT and PSE to be a leaf (pud_leaf), else it is not noted at all."""
    vm = 0xFFFF_C900_0000_0000
    base = [m(vm, 0x200_0000, 1, W, NX, size="2M")]  # the PD and PDPT exist, writable
    pmd = pte(vm + SIZE_2M, 0x220_0000 | HUGE_PAGE | WRITABLE, level=2)
    result = audit(machine(base, entries=[pmd]), "wx")
    assert wx_summary(result) == (
        [verdict_line(512)],
        [{"present": 0, "not_present": 512, "not_noted": 0}],
    )
    assert [(f.severity, f.vaddr, f.pages) for f in result.findings] == [
        (Severity.LOW, vm + SIZE_2M, 512)
    ]
    pud = pte(vm + (1 << 30), 0x4000_0000 | HUGE_PAGE | WRITABLE, level=3)
    result = audit(machine(base, entries=[pud]), "wx")
    assert result.summary["wx"] == [PASSED] and result.findings == []


def test_wx_entry_not_noted_joins_the_series_before_it() -> None:
    """A PMD entry that is neither none, a leaf nor present is not noted: its 2 MiB join the
    series before it, W+X here (a present W+X 2 MiB page)."""
    vm = 0xFFFF_C900_0000_0000
    maps = [m(vm, 0x200_0000, 1, W, size="2M")]
    skipped = pte(vm + SIZE_2M, 0x220_0000 | WRITABLE, level=2)
    result = audit(machine(maps, entries=[skipped]), "wx")
    assert wx_summary(result) == (
        [verdict_line(1024)],
        [{"present": 512, "not_present": 0, "not_noted": 512}],
    )
    # After a series that is not W+X, the same entry adds nothing.
    maps = [m(vm, 0x200_0000, 1, W, NX, size="2M")]
    assert audit(machine(maps, entries=[skipped]), "wx").summary["wx"] == [PASSED]


def test_wx_pmd_protnone_is_descended_its_ptes_count_as_not_present() -> None:
    """pmd_present() is PRESENT or PROTNONE (GLOBAL): the walker descends into a not-present
    PMD entry with GLOBAL, and the PTEs below count; the MMU maps none of them."""
    vm = 0xFFFF_C900_0000_0000
    target = machine([m(vm, 0x200_0000, 3, W)])  # 3 W+X pages in one page table
    pt = X86PageTable.from_cpu(target.mapper, target.cpus[0])
    slot = pd_entry_slot(pt, vm)
    entry = read_u64(target.mapper, slot)
    write_u64(target.mapper, slot, (entry & ~PRESENT) | GLOBAL)
    result = audit(target, "wx")
    assert wx_summary(result) == (
        [verdict_line(3)],
        [{"present": 0, "not_present": 3, "not_noted": 0}],
    )
    assert [(f.severity, f.vaddr, f.pages) for f in result.findings] == [(Severity.LOW, vm, 3)]
    write_u64(target.mapper, slot, entry & ~PRESENT)  # without GLOBAL: not noted, nothing
    assert audit(target, "wx").summary["wx"] == [PASSED]


def test_wx_passes_on_wx_free_tables() -> None:
    mappings = [
        m(0x40_0000, 0x100_0000, 4, U),
        m(0x60_0000, 0x110_0000, 4, U, W, NX),
        m(0xFFFF_8880_0000_0000, 0, 8, W, NX, size="2M"),
        m(0xFFFF_FFFF_8100_0000, 0x100_0000, 16, G),
    ]
    result = audit(machine(mappings), "wx")
    assert result.summary["wx"] == [PASSED]
    assert result.findings == []


def test_wx_under_pti_gives_the_kernels_two_verdicts() -> None:
    mach = build_pti_machine()
    vmalloc = VMALLOC[4] + 0x1000_0000
    modules = 0xFFFF_FFFF_C000_0000
    mach.map_kernel(vmalloc, 0x1A0_0000, 3 * SIZE_4K, SIZE_4K, WRITABLE)
    mach.map_user_pgd(modules, 0x1C0_0000, SIZE_2M, SIZE_2M, WRITABLE)
    for cr3 in (KERNEL_PGD, USER_PGD):
        result = audit(mach.target(cr3), "wx")
        assert result.summary["wx"] == [verdict_line(3), CHECKING_USER, verdict_line(512)]
        roots = {(f.root, f.vaddr, f.pages) for f in result.findings}
        assert roots == {("kernel", vmalloc, 3), ("user", modules, 512)}
    assert brute_wx(X86PageTable(mach.memory, KERNEL_PGD)) == 3
    assert brute_wx(X86PageTable(mach.memory, USER_PGD)) == 512


def test_wx_under_pti_without_nx_checks_the_kernel_pgd_only() -> None:
    # ptdump_walk_user_pgd_level_checkwx returns early without NX: one line.
    mach = build_pti_machine(nxe=False)
    result = audit(mach.target(), "wx")
    pages = brute_wx(X86PageTable(mach.memory, KERNEL_PGD, nxe=False))
    # The user stack is the last page of the lower half (0x7ffffffff000), W+X without NX: the
    # kernel's series runs on across the non-canonical gap and the guard hole up to the first
    # note of its second range (Linux itself never maps that page: TASK_SIZE ends before it).
    gap = (HOLE_4.end - (1 << 47)) // SIZE_4K
    assert pages > 0 and result.summary["wx"] == [verdict_line(pages + gap)]
    assert result.summary["wx_pages"] == [{"present": pages, "not_present": 0, "not_noted": gap}]
    # The findings still cover both halves.
    assert {f.root for f in result.findings} == {"kernel", "user"}


def test_wx_under_pti_with_efer_unknown_infers_nx_from_the_tables() -> None:
    """QEMU's ELF dumps have no EFER: the user PGD's check runs only if the tables use NX."""
    with_nx = build_pti_machine()
    result = audit(without_efer(with_nx.target()), "wx")
    assert result.summary["nxe"] == "inferred on: NX bits in use"
    assert result.summary["wx"] == [PASSED, CHECKING_USER, PASSED]
    no_nx = build_pti_machine(nxe=False)
    known = audit(no_nx.target(), "wx")
    result = audit(without_efer(no_nx.target()), "wx")
    assert result.summary["nxe"] == "inferred off: no entry uses NX"
    wx = known.summary["wx"]
    assert isinstance(wx, list) and len(wx) == 1 and result.summary["wx"] == wx
    out = io.StringIO()
    cli.run(["audit", "--rules", "wx"], Host.create(), out, target=without_efer(no_nx.target()))
    lines = out.getvalue().splitlines()
    verdict = lines.index(wx[0])
    assert lines[verdict - 1] == "EFER.NXE inferred off: no entry uses NX (EFER unknown)"


def test_wx_without_pti_one_verdict() -> None:
    mach = build_pti_machine(pti=False)
    result = audit(mach.target(), "wx")
    assert result.summary["wx"] == [PASSED]


def test_wx_verdict_counts_the_kernels_own_tables() -> None:
    target, kernel_root, process_root = two_roots()
    result = audit(target, "wx")
    # The kernel checks init_mm: 2 kernel pages and its own user page, not the process's 5.
    assert brute_wx(X86PageTable(target.mapper, kernel_root)) == 3
    assert result.summary["wx"] == [verdict_line(3)]
    assert result.summary["wx_roots"] == [f"0x{kernel_root:x}"]
    # The findings are the audited table's: the process's.
    assert sorted((f.vaddr, f.pages) for f in result.findings) == [
        (0x40_0000, 5),
        (0xFFFF_FFFF_8100_0000, 2),
    ]
    # A root option audits that table, and the verdict is its own.
    chosen = audit(target, "wx", root=RootOptions(cr3=process_root))
    assert chosen.summary["wx"] == [verdict_line(7)]
    assert chosen.summary["wx_roots"] == [f"0x{process_root:x}"]


def test_wx_links_merged_across_a_table_boundary_count_once_per_table() -> None:
    """Links to one table in the last entry of a PD and the first of the next are reported as
    one collapsed alias; when the first PD is itself linked again, only its own link repeats."""
    memory = SparsePhysMemory(64 << 20)
    alloc = TopDownFrameAllocator(memory)
    root = alloc.allocate_frame()
    assert root is not None
    pt = X86PageTable(memory, root, allow_writes=True)
    base, gib = 0xFFFF_C900_0000_0000, 1 << 30
    pt.map_range(base, 0x10_0000, SIZE_4K, SIZE_4K, WRITABLE, alloc)
    table = {s.level: s for s in pt.translate(base).steps}[2].entry & pt.addr_mask
    pt.link_table(base + gib + 511 * SIZE_2M, 2, table, WRITABLE, alloc)  # PD X, last entry
    pt.link_table(base + 2 * gib, 2, table, WRITABLE, alloc)  # PD Y, first entry
    last = base + gib + 511 * SIZE_2M
    pd_x = {s.level: s for s in pt.translate(last).steps}[3].entry & pt.addr_mask
    pt.link_table(base + 5 * gib, 3, pd_x, WRITABLE, alloc)  # X again
    cpu = CpuState(cr0=CR0_PG | CR0_WP, cr3=root, cr4=CR4_PAE, efer=EFER_LMA | EFER_NXE)
    target = Target("sim", "merged links", memory, [cpu], ram=memory.ram_ranges)
    assert brute_wx(pt) == 4
    result = audit(target, "wx")
    assert result.summary["wx"] == [verdict_line(4)]
    assert sum(f.pages for f in result.findings) == 4


# Random machines: the verdict equals a brute-force count over every leaf, aliases expanded.

KERNEL_BASE = 0xFFFF_C900_0000_0000
USER_BASE = 0x10_0000_0000
REGION = 1 << 30  # each mapping or link in its own GiB


@st.composite
def machines(draw: st.DrawFn) -> tuple[Target, X86PageTable]:
    nxe = draw(st.booleans())
    memory = SparsePhysMemory(256 << 20)
    alloc = TopDownFrameAllocator(memory)
    root = alloc.allocate_frame()
    assert root is not None
    pt = X86PageTable(memory, root, nxe=nxe, allow_writes=True)
    n = draw(st.integers(1, 6))
    tables: list[tuple[int, int]] = []  # (vaddr of a 4 KiB mapping, level of its PT's parent)
    for i in range(n):
        user = draw(st.booleans())
        base = (USER_BASE if user else KERNEL_BASE) + i * REGION
        if draw(st.integers(0, 5)) == 0:
            base = HOLE_4.start + i * REGION  # the guard hole
            user = False
        size = draw(st.sampled_from([SIZE_4K, SIZE_2M]))
        count = draw(st.integers(1, 6))
        bits = draw(st.sampled_from([0, WRITABLE, NO_EXECUTE, WRITABLE | NO_EXECUTE]))
        if not nxe:
            bits &= ~NO_EXECUTE
        bits |= GLOBAL if draw(st.booleans()) else 0
        offset = draw(st.integers(0, 3)) * size
        pt.map_range(
            base + offset, 0x100_0000 + i * 0x80_0000, count * size, size,
            bits | (USER_ACCESSIBLE if user else 0), alloc,
        )  # fmt: skip
        tables.append((base + offset, 3))  # its PD, linked as a PDPT entry
        if size == SIZE_4K:
            tables.append((base + offset, 2))  # its PT, linked as a PD entry
    for j in range(draw(st.integers(0, 3))):
        if not tables:
            break
        vaddr, level = draw(st.sampled_from(tables))
        table = {s.level: s for s in pt.translate(vaddr).steps}[level].entry & pt.addr_mask
        link_flags = draw(st.sampled_from([0, WRITABLE, USER_ACCESSIBLE | WRITABLE]))
        if nxe and draw(st.booleans()):
            link_flags |= NO_EXECUTE
        count = draw(st.integers(1, 4))
        base = KERNEL_BASE + (16 + 4 * j) * REGION
        for k in range(count):
            pt.link_table(base + k * entry_span(level), level, table, link_flags, alloc)
    # Raw entries over the tables: not present (counted by their flags), not noted, PROTNONE.
    slots = []
    for vaddr, level in tables:
        steps = {s.level: s for s in pt.translate(vaddr).steps}
        slots.append((steps[level - 1].table, level - 1, steps[level - 1].index))
    page_tables = [t for t, lvl, _ in slots if lvl == 1]
    nx = NO_EXECUTE if nxe else 0
    for _ in range(draw(st.integers(0, 4)) if slots else 0):
        table, level, near = draw(st.sampled_from(slots))
        # Anywhere in the table, or just after the mapping (to follow a W+X series).
        after = [(near + k) % 512 for k in range(1, 9)]
        index = draw(st.integers(0, 511) | st.sampled_from([*after, 0, 511]))
        if level == 1:
            bits = draw(
                st.sampled_from(
                    [
                        0,
                        ACCESSED_DIRTY,
                        WRITABLE,
                        WRITABLE | nx,
                        WRITABLE | USER_ACCESSIBLE,
                        PRESENT | WRITABLE,
                    ]
                )
            )
            value = bits and bits | (0x100_0000 + index * SIZE_4K)
        else:
            bits = draw(
                st.sampled_from(
                    [
                        0,
                        HUGE_PAGE | WRITABLE,
                        HUGE_PAGE | WRITABLE | nx,
                        HUGE_PAGE | PRESENT | WRITABLE,
                        WRITABLE,
                        WRITABLE,
                        GLOBAL | WRITABLE,
                    ]
                )
            )
            if bits & HUGE_PAGE:
                value = bits | draw(st.integers(1, 100)) * SIZE_2M
            elif bits & GLOBAL:
                target_table = draw(st.sampled_from(page_tables)) if page_tables else root
                value = bits | target_table
            else:
                value = bits and bits | 0x300_0000
        write_u64(memory, table + 8 * index, value)  # fmt: skip
    efer = EFER_LME | EFER_LMA | (EFER_NXE if nxe else 0)
    cpu = CpuState(cr0=CR0_PG | CR0_WP, cr3=root, cr4=CR4_PAE, efer=efer)
    target = Target("sim", "random", memory, [cpu], ram=memory.ram_ranges)
    return target, X86PageTable(memory, root, nxe=nxe)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(machines())
def test_wx_count_equals_brute_force(case: tuple[Target, X86PageTable]) -> None:
    """The verdict equals the kernel's check replayed note by note; its present part (and
    the high findings) a brute-force count over every leaf the MMU maps, aliases expanded;
    the low findings the not-present entries the check counts."""
    target, pt = case
    result = audit(target, "wx")
    assert result.summary["wx"] == [verdict_line(ptdump_count(pt))]
    parts = result.summary["wx_pages"]
    assert isinstance(parts, list) and parts[0]["present"] == brute_wx(pt)
    high = [f for f in result.findings if f.severity == Severity.HIGH]
    low = [f for f in result.findings if f.severity == Severity.LOW]
    assert len(high) + len(low) == len(result.findings)
    assert sum(f.pages for f in high) == brute_wx(pt, skip=None)
    assert sum(f.pages for f in low) == not_present_wx(pt)
    for f in low:
        assert f.vaddr is not None and pt.try_translate(f.vaddr) is None
    # Every page of the findings is W+X by the MMU's walk (first and last page of each copy).
    for f in high:
        assert f.vaddr is not None and f.end is not None
        for vaddr in (f.vaddr, f.end - SIZE_4K):
            t = pt.translate(vaddr)
            assert t.writable and t.executable


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(machines(), st.integers(0, 1 << 64), st.integers(0, 1 << 64))
def test_span_pages_in_equals_the_expanded_copies(
    case: tuple[Target, X86PageTable], a: int, b: int
) -> None:
    target, pt = case
    lo, hi = min(a, b), max(a, b)
    ctx = AuditContext(target, AuditOptions())
    got = sum(s.pages_in(lo, hi) for s in ctx.main.spans)
    want = sum(
        max(0, min(hi, mp.vaddr + mp.page_size) - max(lo, mp.vaddr)) // SIZE_4K
        for mp in pt.iter_mappings()
    )
    assert got == want
    assert sum(s.pages for s in ctx.main.spans) == sum(
        mp.page_size // SIZE_4K for mp in pt.iter_mappings()
    )
    wx = [s for s in ctx.main.spans if s.run.writable and s.run.executable]
    assert sum(s.pages for s in wx) == brute_wx(pt, skip=None)


def test_span_pages_in_of_nested_repetitions() -> None:
    run = LeafRun(0x1000, 0x9000, 2, SIZE_4K, 0x9003, False, True, True)
    span = LeafSpan(run, ((3, 0x10000), (4, 0x100000)))
    starts = [0x1000 + i * 0x10000 + j * 0x100000 for i in range(3) for j in range(4)]
    assert list(span.starts()) == sorted(starts)
    for lo, hi in [(0, 1 << 30), (0x12000, 0x301000), (0x1000, 0x2000), (0x2800, 0x111800)]:
        want = sum(max(0, min(hi, s + 0x2000) - max(lo, s)) for s in starts) // SIZE_4K
        assert span.pages_in(lo, hi) == want, (hex(lo), hex(hi))
