"""The rules ``wx``, ``cpu-hardening`` and ``global-user`` on hand-built simulated machines.

Every expected value is computed here independently of the audit: page counts from the
scenario's own numbers, or by brute force over :meth:`X86PageTable.iter_mappings` (one
mapping per leaf, every alias expanded, effective permissions per path), never from the
audit's spans.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_audit_pti import KERNEL_PGD, USER_PGD, VMALLOC, build_pti_machine

from gdbext.addr import AddrRange
from gdbext.audit.context import AuditContext, LeafSpan
from gdbext.audit.engine import AuditOptions, AuditResult, run_audit
from gdbext.audit.model import Severity
from gdbext.audit.rules.wx import verdict_line, wx_pages
from gdbext.commands import RootOptions
from gdbext.cpu import (
    CR0_PG,
    CR0_WP,
    CR4_PAE,
    CR4_SMAP,
    CR4_SMEP,
    EFER_LMA,
    EFER_LME,
    EFER_NXE,
    CpuState,
)
from gdbext.flags import GLOBAL, NO_EXECUTE, USER_ACCESSIBLE, WRITABLE
from gdbext.geometry import entry_span
from gdbext.host import Host
from gdbext.mapper import read_u64, write_u64
from gdbext.paging import SIZE_2M, SIZE_4K, LeafRun, X86PageTable
from gdbext.target import Target
from gdbext_sim.memory import SparsePhysMemory, TopDownFrameAllocator
from gdbext_sim.scenario import build_machine

RULES = Host.create().audit_rules()
PASSED = "x86/mm: Checked W+X mappings: passed, no W+X pages found."
CHECKING_USER = "x86/mm: Checking user space page tables"
#: Linux's guard hole with 4-level paging: 16 PML4 entries from the start of the kernel half.
HOLE_4 = AddrRange(0xFFFF_8000_0000_0000, 0xFFFF_8800_0000_0000)


def audit(target: Target, *rules: str, root: RootOptions | None = None) -> AuditResult:
    options = AuditOptions(root=root or RootOptions(), rules=rules or None)
    return run_audit(target, options, RULES)


def brute_wx(pt: X86PageTable, skip: AddrRange | None = HOLE_4) -> int:
    """W+X 4 KiB pages, one mapping per leaf, every alias expanded."""
    return sum(
        m.page_size // SIZE_4K
        for m in pt.iter_mappings()
        if m.writable and m.executable and (skip is None or m.vaddr not in skip)
    )


def flags(*names: str) -> list[str]:
    return list(names)


W, U, G, NX = "WRITABLE", "USER_ACCESSIBLE", "GLOBAL", "NO_EXECUTE"


def machine(mappings: list[dict[str, object]], **doc: object) -> Target:
    return build_machine({"levels": 4, "ram": "256M", "mappings": mappings, **doc}).to_target()


def m(vaddr: int, paddr: int, count: int, *names: str, size: str = "4K") -> dict[str, object]:
    return {
        "vaddr": hex(vaddr),
        "paddr": hex(paddr),
        "size": size,
        "count": count,
        "flags": list(names),
    }


def pd_entry_slot(pt: X86PageTable, vaddr: int) -> int:
    """Physical address of the PD (level 2) entry that maps ``vaddr``."""
    steps = {s.level: s for s in pt.translate(vaddr).steps}
    return steps[2].table + 8 * steps[2].index


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


def test_wx_without_nxe_every_writable_page_is_wx() -> None:
    mappings = [
        m(0xFFFF_8880_0000_0000, 0, 2, W, size="2M"),
        m(0xFFFF_FFFF_8100_0000, 0x100_0000, 4),
    ]
    target = machine(mappings, nxe=False)
    result = audit(target, "wx")
    assert result.summary["wx"] == [verdict_line(1024)]
    assert [f.pages for f in result.findings] == [1024]


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
    assert pages > 0 and result.summary["wx"] == [verdict_line(pages)]
    # The findings still cover both halves.
    assert {f.root for f in result.findings} == {"kernel", "user"}


def test_wx_without_pti_one_verdict() -> None:
    mach = build_pti_machine(pti=False)
    result = audit(mach.target(), "wx")
    assert result.summary["wx"] == [PASSED]


def two_roots() -> tuple[Target, int, int]:
    """A CPU on a process's PGD whose kernel half is the kernel's (``kernel_root`` hint): the
    kernel half has 2 W+X pages, the process's user half 5 more, the kernel's user half 1."""
    memory = SparsePhysMemory(64 << 20)
    alloc = TopDownFrameAllocator(memory)
    kernel_root = alloc.allocate_frame()
    process_root = alloc.allocate_frame()
    assert kernel_root is not None and process_root is not None
    kernel = X86PageTable(memory, kernel_root, allow_writes=True)
    process = X86PageTable(memory, process_root, allow_writes=True)
    kernel.map_range(0xFFFF_FFFF_8100_0000, 0x100_0000, 2 * SIZE_4K, SIZE_4K, WRITABLE, alloc)
    kernel.map_range(0xFFFF_8880_0000_0000, 0, 4 * SIZE_2M, SIZE_2M, WRITABLE | NO_EXECUTE, alloc)
    for i in range(256, 512):
        write_u64(memory, process_root + 8 * i, read_u64(memory, kernel_root + 8 * i))
    process.map_range(
        0x40_0000, 0x200_0000, 5 * SIZE_4K, SIZE_4K, WRITABLE | USER_ACCESSIBLE, alloc
    )
    kernel.map_range(0x80_0000, 0x300_0000, SIZE_4K, SIZE_4K, WRITABLE, alloc)
    cpu = CpuState(cr0=CR0_PG | CR0_WP, cr3=process_root, cr4=CR4_PAE, efer=EFER_NXE | EFER_LMA)
    target = Target("sim", "two roots", memory, [cpu], ram=memory.ram_ranges)
    return (
        dataclasses.replace(target, hints={"kernel_root": kernel_root}),
        kernel_root,
        process_root,
    )


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
    efer = EFER_LME | EFER_LMA | (EFER_NXE if nxe else 0)
    cpu = CpuState(cr0=CR0_PG | CR0_WP, cr3=root, cr4=CR4_PAE, efer=efer)
    target = Target("sim", "random", memory, [cpu], ram=memory.ram_ranges)
    return target, X86PageTable(memory, root, nxe=nxe)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(machines())
def test_wx_count_equals_brute_force(case: tuple[Target, X86PageTable]) -> None:
    target, pt = case
    result = audit(target, "wx")
    assert result.summary["wx"] == [verdict_line(brute_wx(pt))]
    assert sum(f.pages for f in result.findings) == brute_wx(pt, skip=None)
    # Every page of the findings is W+X by the MMU's walk (first and last page of each copy).
    for f in result.findings:
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
    assert wx_pages(ctx, ctx.main) == brute_wx(pt)


def test_span_pages_in_of_nested_repetitions() -> None:
    run = LeafRun(0x1000, 0x9000, 2, SIZE_4K, 0x9003, False, True, True)
    span = LeafSpan(run, ((3, 0x10000), (4, 0x100000)))
    starts = [0x1000 + i * 0x10000 + j * 0x100000 for i in range(3) for j in range(4)]
    assert list(span.starts()) == sorted(starts)
    for lo, hi in [(0, 1 << 30), (0x12000, 0x301000), (0x1000, 0x2000), (0x2800, 0x111800)]:
        want = sum(max(0, min(hi, s + 0x2000) - max(lo, s)) for s in starts) // SIZE_4K
        assert span.pages_in(lo, hi) == want, (hex(lo), hex(hi))


# --- cpu-hardening ------------------------------------------------------------------------------

GOOD = CpuState(
    cr0=CR0_PG | CR0_WP, cr3=0x1000, cr4=CR4_PAE | CR4_SMEP | CR4_SMAP, efer=EFER_LMA | EFER_NXE
)


def cpus_target(cpus: Sequence[CpuState]) -> Target:
    memory = SparsePhysMemory(16 << 20)
    return Target("sim", "cpus", memory, list(cpus), ram=memory.ram_ranges)


def test_cpu_hardening_lists_the_cpus_per_missing_feature() -> None:
    cpus = [
        GOOD,
        dataclasses.replace(GOOD, cr4=CR4_PAE),  # no SMEP, no SMAP
        dataclasses.replace(GOOD, cr0=CR0_PG, cr4=CR4_PAE | CR4_SMEP),  # no WP, no SMAP
        dataclasses.replace(GOOD, efer=EFER_LMA),  # no NXE
        dataclasses.replace(GOOD, cr4=CR4_PAE | CR4_SMEP),  # no SMAP
    ]
    result = audit(cpus_target(cpus), "cpu-hardening")
    assert [f.message for f in result.findings] == [
        "CR0.WP is off on CPU 2: the kernel writes through read-only pages",
        "CR4.SMAP is off on CPUs 1-2, 4: the kernel may read and write user pages",
        "CR4.SMEP is off on CPU 1: the kernel may execute user pages",
        "EFER.NXE is off on CPU 3: no page is no-execute: every writable page is W+X",
    ]
    assert {f.severity for f in result.findings} == {Severity.MEDIUM}
    assert all(f.vaddr is None and f.pages == 0 for f in result.findings)
    assert result.findings[1].evidence == (
        f"CPU 1: CR4 = 0x{CR4_PAE:x}",
        f"CPU 2: CR4 = 0x{CR4_PAE | CR4_SMEP:x}",
        f"CPU 4: CR4 = 0x{CR4_PAE | CR4_SMEP:x}",
    )


def test_cpu_hardening_quiet_when_everything_is_on() -> None:
    result = audit(cpus_target([GOOD, GOOD]), "cpu-hardening")
    assert result.findings == [] and result.rules_run == ["cpu-hardening"]


def test_cpu_hardening_does_not_report_unknown_registers_as_off() -> None:
    # A QEMU ELF dump has no EFER: NXE is unknown, not off.
    result = audit(cpus_target([dataclasses.replace(GOOD, efer=None)]), "cpu-hardening")
    assert result.findings == []
    assert result.summary["cpu-hardening"] == {"unknown": {"EFER": "CPU 0"}}
    nothing = CpuState(cr3=0x1000)
    skipped = audit(cpus_target([nothing]), "cpu-hardening")
    assert skipped.skipped == {"cpu-hardening": "the target knows none of CR0, CR4 and EFER"}


def test_cpu_hardening_skipped_without_cpu_state() -> None:
    result = audit(cpus_target([]), "cpu-hardening", root=RootOptions(cr3=0x1000))
    assert result.skipped == {"cpu-hardening": "the target has no CPU state"}
    assert result.rules_run == []


# --- global-user --------------------------------------------------------------------------------


def test_global_user_flags_user_pages_marked_global() -> None:
    mappings = [
        m(0x40_0000, 0x100_0000, 3, U, G),  # 3 user pages, global
        m(0x40_3000, 0x100_3000, 2, U, G, NX),  # then 2 more, no-execute: a second range
        m(0x60_0000, 0x110_0000, 4, U, W, NX),  # user, not global
        m(0xFFFF_FFFF_8100_0000, 0x100_0000, 16, G),  # kernel, global: fine
        m(0xFFFF_FFFF_FF60_0000, 0x120_0000, 1, U, G),  # a vsyscall-like page
    ]
    result = audit(machine(mappings), "global-user")
    got = [(f.vaddr, f.end, f.paddr, f.paddr_end, f.pages, f.executable) for f in result.findings]
    assert got == [
        (0x40_0000, 0x40_3000, 0x100_0000, 0x100_3000, 3, True),
        (0x40_3000, 0x40_5000, 0x100_3000, 0x100_5000, 2, False),
        (0xFFFF_FFFF_FF60_0000, 0xFFFF_FFFF_FF60_1000, 0x120_0000, 0x120_1000, 1, True),
    ]
    assert result.findings[0].message == "3 user pages (read-only, executable) marked GLOBAL"
    assert all(f.severity == Severity.MEDIUM and f.user for f in result.findings)


def test_global_user_counts_effective_user_access_only() -> None:
    target = machine([m(0x40_0000, 0x100_0000, 3, U, G)])
    pt = X86PageTable.from_cpu(target.mapper, target.cpus[0])
    slot = pd_entry_slot(pt, 0x40_0000)
    write_u64(target.mapper, slot, read_u64(target.mapper, slot) & ~USER_ACCESSIBLE)
    assert audit(target, "global-user").findings == []


def test_global_user_quiet_on_a_linux_like_machine() -> None:
    mach = build_pti_machine(global_kernel=True)
    assert audit(mach.target(), "global-user").findings == []


def test_global_user_checks_both_pti_halves() -> None:
    mach = build_pti_machine()
    mach.map_user_pgd(0xFFFF_FFFF_FF60_0000, 0x1E0_0000, SIZE_4K, SIZE_4K, USER_ACCESSIBLE | GLOBAL)
    result = audit(mach.target(), "global-user")
    assert [(f.root, f.vaddr, f.pages) for f in result.findings] == [
        ("user", 0xFFFF_FFFF_FF60_0000, 1)
    ]
