"""Rules ``alias-wx`` and ``pt-writable-alias``: simulated machines where the answer is known,
a brute-force reference for ``alias-wx``, and the committed real dumps explained.

Each scenario states its findings from how it was built: which frames are mapped where, and
(for page tables) which frames the simulator's allocator handed out as tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.audit import DIRECT, DIRECT_RW, KERNEL_ROOTS, KERNEL_TEXT, MB, TEXT, VMALLOC, hint
from support.audit import audit_sim as audit
from support.audit import sim_machine as machine
from support.paths import ROOT
from support.pti import (
    ENTRY_TEXT,
    ENTRY_TEXT_FRAME,
    KERNEL_PGD,
    USER_PGD,
    USER_TEXT,
    PtiMachine,
    build_pti_machine,
    pt_at,
)
from support.pti import VMALLOC as PTI_VMALLOC
from support.scenario import sized as m

from gdbext.addr import AddrRange
from gdbext.audit.engine import AuditResult
from gdbext.audit.frames import perm_key
from gdbext.audit.model import Finding, Severity
from gdbext.audit.rules.alias_wx import RULES as ALIAS_WX
from gdbext.audit.rules.alias_wx import span_union, wx_aliases, wx_aliases_in
from gdbext.audit.views import AuditView
from gdbext.flags import NO_EXECUTE, PRESENT, USER_ACCESSIBLE, WRITABLE
from gdbext.linux.kernelimage import KERNEL_IMAGE_VA
from gdbext.linux.layout import CPU_ENTRY_AREA_BASE
from gdbext.mapper import read_u64, write_u64
from gdbext.x86.paging import SIZE_2M, SIZE_4K, X86PageTable
from gdbext_dump.dump import open_dump
from gdbext_sim.memory import SparsePhysMemory, TopDownFrameAllocator

ESPFIX = 0xFFFF_FF00_0000_0000
#: The same, but the 2 MiB holding the kernel text (0x1000000) read-only, as Linux keeps it.
DIRECT_TEXT_RO = [
    m(DIRECT, 0, "2M", 8, "WRITABLE", "NO_EXECUTE"),
    m(DIRECT + 0x1000000, 0x1000000, "4K", 512, "NO_EXECUTE"),
    m(DIRECT + 0x1200000, 0x1200000, "2M", 23, "WRITABLE", "NO_EXECUTE"),
]


def pairs(result: AuditResult) -> set[tuple[int, int, Severity]]:
    """(executable VA, writable VA, severity) of each alias-wx finding; the writable address
    is the first one its evidence names."""
    out = set()
    for f in result.findings:
        assert f.vaddr is not None
        writable = [e for e in f.evidence if e.startswith("writable at 0x") and ":" not in e]
        out.add((f.vaddr, int(writable[0].split()[2].split("-")[0], 16), f.severity))
    return out


# --- alias-wx: must trigger ----------------------------------------------------------------


def test_kernel_text_writable_through_the_direct_map() -> None:
    result = audit(machine([DIRECT_RW, KERNEL_TEXT]), ALIAS_WX)
    (f,) = result.findings
    assert (f.rule, f.severity, f.root) == ("alias-wx", Severity.HIGH, "cr3")
    assert (f.vaddr, f.end, f.paddr, f.paddr_end, f.pages) == (
        TEXT, TEXT + 0x10000, 0x1000000, 0x1010000, 16,
    )  # fmt: skip
    assert (f.user, f.writable, f.executable) == (False, False, True)
    # Both virtual ranges and the shared physical range are named.
    assert f.message == (
        "kernel code writable through an alias: frames 0x1000000-0x1010000 executable at "
        "0xffffffff81000000-0xffffffff81010000 are writable at "
        "0xffff888001000000-0xffff888001010000"
    )
    assert "writable at 0xffff888001000000-0xffff888001010000 (rw- kern)" in f.evidence
    assert f.evidence[0].startswith("PML4[511] @")  # walk steps of the executable page
    assert any(e.startswith("writable at 0xffff888001000000: PD[8]") for e in f.evidence)


def test_user_writable_alias_of_kernel_text_is_critical() -> None:
    data = m(0x600000, 0x1004000, "4K", 2, "USER_ACCESSIBLE", "WRITABLE", "NO_EXECUTE")
    result = audit(machine([*DIRECT_TEXT_RO, KERNEL_TEXT, data]), ALIAS_WX)
    assert pairs(result) == {(TEXT + 0x4000, 0x600000, Severity.CRITICAL)}
    (f,) = result.findings
    assert (f.paddr, f.paddr_end, f.pages) == (0x1004000, 0x1006000, 2)


def test_user_double_mapping_is_medium_and_the_direct_map_of_user_code_is_not_flagged() -> None:
    code = m(0x400000, 0x2000000, "4K", 4, "USER_ACCESSIBLE")
    jit = m(0x7F00_0000_0000, 0x2000000, "4K", 4, "USER_ACCESSIBLE", "WRITABLE", "NO_EXECUTE")
    result = audit(machine([DIRECT_RW, code, jit]), ALIAS_WX)
    # The direct map also writes these frames: the kernel writes every page there, no finding.
    assert pairs(result) == {(0x400000, 0x7F00_0000_0000, Severity.MEDIUM)}


def test_user_code_writable_through_a_kernel_mapping_outside_the_direct_map_is_low() -> None:
    code = m(0x400000, 0x2000000, "4K", 4, "USER_ACCESSIBLE")
    vmap = m(VMALLOC, 0x2001000, "4K", 1, "WRITABLE", "NO_EXECUTE")
    result = audit(machine([DIRECT_RW, code, vmap]), ALIAS_WX)
    assert pairs(result) == {(0x401000, VMALLOC, Severity.LOW)}


def test_without_nxe_every_page_is_executable() -> None:
    # Without EFER.NXE bit 63 is reserved: read-only data is executable, and so a writable
    # direct map makes it an alias W^X bypass. With NXE and NX the same layout passes.
    rodata_nx = m(TEXT + 0x200000, 0x1200000, "4K", 4, "NO_EXECUTE")
    with_nx = audit(machine([*DIRECT_TEXT_RO, rodata_nx]), ALIAS_WX)
    assert with_nx.findings == []
    no_nxe = machine(
        [m(DIRECT, 0, "2M", 32, "WRITABLE"), m(TEXT + 0x200000, 0x1200000, "4K", 4)], nxe=False
    )
    result = audit(no_nxe, ALIAS_WX)
    assert pairs(result) == {(TEXT + 0x200000, DIRECT + 0x1200000, Severity.HIGH)}


def test_writable_and_executable_page_linked_several_times() -> None:
    # One W+X page (rule wx's business at each address) in a table linked at 4 PD entries: it
    # is also writable at one address and executable at another, which alias-wx reports once
    # for all the copies; the direct map is a second writable alias, reported on its own.
    mc = machine(
        [DIRECT_RW, m(ESPFIX, 0x3000000, "4K", 1, "WRITABLE")],
        links=[{"vaddr": hex(ESPFIX + SIZE_2M), "level": 2, "count": 3, "table_of": hex(ESPFIX)}],
    )
    result = audit(mc, ALIAS_WX)
    copies = "0xffffff0000000000-0xffffff0000001000 and 3 more mappings up to 0xffffff0000601000"
    assert sorted(f.message for f in result.findings) == [
        "kernel code writable through an alias: frames 0x3000000-0x3001000 are writable and "
        f"executable at {copies}",
        "kernel code writable through an alias: frames 0x3000000-0x3001000 executable at "
        f"{copies} are writable at 0xffff888003000000-0xffff888003001000",
    ]
    assert all(f.severity == Severity.HIGH and f.vaddr == ESPFIX for f in result.findings)


def test_alias_walked_again_when_its_path_allows_more() -> None:
    # A page table whose leaf is writable and executable, linked first through a read-only PD
    # entry (the leaf is effectively read-only there) and again through a writable one: the
    # second link is an alias whose path allows more than the first walk's, so its leaves are
    # walked again and are writable. Frames executable at the first address are writable at the
    # second (and in the direct map); the second address is W+X itself (rule wx).
    mc = machine([DIRECT_RW, m(ESPFIX, 0x3000000, "4K", 1, "WRITABLE")])
    pt = mc.page_table
    steps = pt.translate(ESPFIX).steps
    pd, leaf_table = steps[2], steps[3].table
    write_u64(mc.memory, pd.table + 8 * pd.index, leaf_table | PRESENT)  # read-only path
    pt.link_table(ESPFIX + SIZE_2M, 2, leaf_table, PRESENT | WRITABLE, mc.allocator)
    result = audit(mc, ALIAS_WX)
    assert pairs(result) == {
        (ESPFIX, ESPFIX + SIZE_2M, Severity.HIGH),
        (ESPFIX, DIRECT + 0x3000000, Severity.HIGH),
        (ESPFIX + SIZE_2M, DIRECT + 0x3000000, Severity.HIGH),
    }


# --- alias-wx: must not trigger ------------------------------------------------------------


def test_read_only_direct_map_of_text_and_espfix_like_read_only_aliases_pass() -> None:
    # Text with a read-only direct map, and an ESPFIX-like read-only stack page (writable in
    # the direct map) linked at 64 PD entries, plus a read-only alias of a text page linked
    # likewise: nothing is both writable somewhere and executable somewhere else.
    mc = machine(
        [
            *DIRECT_TEXT_RO,
            KERNEL_TEXT,
            m(ESPFIX, 0x2000000, "4K", 1, "GLOBAL", "NO_EXECUTE"),
            m(ESPFIX + 0x10000, 0x1000000, "4K", 1, "GLOBAL"),
        ],
        links=[{"vaddr": hex(ESPFIX + SIZE_2M), "level": 2, "count": 63, "table_of": hex(ESPFIX)}],
    )
    assert audit(mc, ALIAS_WX).findings == []


def test_writable_and_executable_at_one_address_only_is_rule_wx() -> None:
    mc = machine([DIRECT_TEXT_RO[0], m(TEXT, 0x1000000, "4K", 4, "WRITABLE")])
    assert audit(mc, ALIAS_WX).findings == []


# --- alias-wx against a brute-force reference ---------------------------------------------

#: Virtual 2 MiB slots the random spaces use (user and kernel half).
SLOTS = (0x400000, 0x600000, 0x7F00_0000_0000, DIRECT, DIRECT + SIZE_2M, VMALLOC, TEXT)
FRAMES = 24  # 4 KiB frames at 0x200000.. (inside the 2 MiB page at 0x200000, too)
FLAG_BITS = (WRITABLE, USER_ACCESSIBLE, NO_EXECUTE)


@st.composite
def spaces(draw: st.DrawFn) -> X86PageTable:
    nxe = draw(st.booleans())
    mem = SparsePhysMemory(16 * MB)
    alloc = TopDownFrameAllocator(mem)
    pt = X86PageTable(mem, alloc.allocate_frame() or 0, 4, nxe=nxe, allow_writes=True)

    def flags() -> int:
        bits = draw(st.lists(st.sampled_from(FLAG_BITS), max_size=3))
        value = 0
        for bit in bits:
            value |= bit
        return value if nxe else value & ~NO_EXECUTE

    huge: set[int] = set()  # slots mapped by one 2 MiB page
    small: set[int] = set()  # slots holding 4 KiB pages
    pages: set[int] = set()
    for _ in range(draw(st.integers(1, 14))):
        slot = draw(st.sampled_from(SLOTS))
        if slot in huge:
            continue
        if draw(st.integers(0, 9)) == 0:
            if slot not in small:
                huge.add(slot)
                pt.map(slot, 0x200000, SIZE_2M, flags(), alloc)
            continue
        vaddr = slot + draw(st.integers(0, 7)) * SIZE_4K
        if vaddr in pages:
            continue
        small.add(slot)
        pages.add(vaddr)
        frame = 0x200000 + draw(st.integers(0, FRAMES - 1)) * SIZE_4K
        pt.map(vaddr, frame, SIZE_4K, flags(), alloc)
    # Link some PT tables again, under paths that allow the same, more, or less.
    tables = sorted({pt.translate(v).steps[-1].table for v in pages})
    linked: set[int] = set()
    for _ in range(draw(st.integers(0, 3)) if tables else 0):
        table = draw(st.sampled_from(tables))
        first, count, link_flags = draw(st.integers(0, 5)), draw(st.integers(1, 3)), flags()
        for k in range(first, first + count):  # consecutive links merge into one alias run
            where = 0x4000_0000 + k * SIZE_2M
            if where not in linked:
                linked.add(where)
                pt.link_table(where, 2, table, link_flags | PRESENT, alloc)
    nest: bool = draw(st.booleans())
    if linked and nest:
        # Link the PD holding those links again, at 1 GiB entries: aliases within aliases.
        pdpt = read_u64(mem, pt.root) & 0x000F_FFFF_FFFF_F000  # PML4[0]
        pd = read_u64(mem, pdpt + 8) & 0x000F_FFFF_FFFF_F000  # PDPT[1]: 0x40000000
        link_flags = flags()
        for k in range(draw(st.integers(1, 2))):
            pt.link_table(0x8000_0000 + k * (1 << 30), 3, pd, link_flags | PRESENT, alloc)
    return X86PageTable(mem, pt.root, 4, nxe=nxe)


def brute_force(pt: X86PageTable) -> set[tuple[int, int, int]]:
    """(frame, writable VA, executable VA) for every 4 KiB frame writable at one address and
    executable at another, from every leaf of an expanded walk, page by page."""
    by_frame: dict[int, list[tuple[int, bool, bool]]] = {}
    for leaf in pt.iter_mappings():
        for off in range(0, leaf.page_size, SIZE_4K):
            by_frame.setdefault(leaf.paddr + off, []).append(
                (leaf.vaddr + off, leaf.writable, leaf.executable)
            )
    out = set()
    for frame, maps in by_frame.items():
        for wva, w, _ in maps:
            for xva, _, x in maps:
                if w and x and wva != xva:
                    out.add((frame, wva, xva))
    return out


def from_rule(pt: X86PageTable) -> set[tuple[int, int, int]]:
    out = set()
    for alias in wx_aliases(AuditView("cr3", pt)):
        w, x = alias.writer, alias.executor
        for frame in range(alias.paddr, alias.paddr_end, SIZE_4K):
            for wstart in w.starts():
                for xstart in x.starts():
                    wva = wstart + frame - w.paddr
                    xva = xstart + frame - x.paddr
                    if wva != xva:
                        out.add((frame, wva, xva))
    return out


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spaces())
def test_alias_wx_equals_a_page_by_page_reference(pt: X86PageTable) -> None:
    assert from_rule(pt) == brute_force(pt)


# --- alias-wx across the PTI pair ------------------------------------------------------------

PTI_VMAP = PTI_VMALLOC[4] + 0x100_0000


def test_pti_user_code_writable_through_the_kernel_pgd() -> None:
    """Under PTI the kernel PGD's user half is no-execute and the user PGD lacks the kernel's
    mappings: user code (frames 0x500000.., executable at 0x400000 through the user PGD only)
    writable through a vmalloc mapping of the kernel PGD only is seen by sweeping both tables
    together, whichever of them CR3 holds."""
    mach = build_pti_machine()
    mach.map_kernel(PTI_VMAP, 0x501000, 2 * SIZE_4K, SIZE_4K, WRITABLE | NO_EXECUTE)
    for view in (
        AuditView("kernel", pt_at(mach, KERNEL_PGD)),
        AuditView("user", pt_at(mach, USER_PGD)),
    ):
        assert all(a.executor.run.paddr >= 0x1000000 for a in wx_aliases(view))  # text only
    for cr3 in (KERNEL_PGD, USER_PGD):
        found = [f for f in audit(mach.target(cr3), ALIAS_WX).findings if f.user]
        (f,) = found
        assert (f.severity, f.root, f.vaddr, f.end, f.paddr, f.paddr_end, f.pages) == (
            Severity.LOW, "kernel+user", USER_TEXT + 0x1000, USER_TEXT + 0x3000,
            0x501000, 0x503000, 2,
        )  # fmt: skip
        assert f.message == (
            "user code writable through a kernel mapping outside the direct map: frames "
            "0x501000-0x503000 executable at 0x401000-0x403000 in the user PGD are writable at "
            f"0x{PTI_VMAP:x}-0x{PTI_VMAP + 0x2000:x} in the kernel PGD"
        )
        assert f.evidence[0] == f"PML4[0] @0x{USER_PGD:x} = 0x{read_u64(mach.memory, USER_PGD):x}"
        assert "executable at 0x401000-0x403000 (r-x user) in the user PGD" in f.evidence
        assert any(e.startswith(f"writable at 0x{PTI_VMAP:x} in the kernel PGD: PML4[")
                   for e in f.evidence)  # fmt: skip


def test_pti_kernel_code_of_both_pgds_writable_in_one() -> None:
    """The entry text is executable in both PGDs (one mapping: the same address, frames and
    permissions) and, here as in build_pti_machine, writable through the kernel PGD's direct
    map: one finding naming both tables; the rest of the text is the kernel PGD's alone."""
    mach = build_pti_machine()
    result = audit(mach.target(USER_PGD), ALIAS_WX)
    got = [(f.root, f.vaddr, f.paddr, f.paddr_end, f.severity) for f in result.findings]
    assert got == [
        ("kernel", TEXT, 0x1000000, ENTRY_TEXT_FRAME, Severity.HIGH),
        ("kernel+user", ENTRY_TEXT, ENTRY_TEXT_FRAME, ENTRY_TEXT_FRAME + SIZE_2M, Severity.HIGH),
    ]
    assert "in the kernel and user PGDs are writable at" in result.findings[1].message


def test_pti_one_mapping_in_both_pgds_is_not_an_alias() -> None:
    """A writable and executable page at one address of a table both PGDs share is rule wx's,
    not an alias of itself across the pair; a copy at another address, executable in the
    other PGD only, is."""
    mach = build_pti_machine()
    cea_page = CPU_ENTRY_AREA_BASE + 0x8000  # cloned at the P4D level: both PGDs map it
    frame = 0x210_0000  # above the 32 MiB direct map
    mach.map_kernel(cea_page, frame, SIZE_4K, SIZE_4K, WRITABLE)
    result = audit(mach.target(), ALIAS_WX)
    assert result.findings and not [f for f in result.findings if f.paddr == frame]
    # User code at 0x800000: the user halves share their tables, the kernel PGD's copy of the
    # top-level entry is no-execute: executable through the user PGD only.
    mach.map_user_pgd(0x80_0000, frame, SIZE_4K, SIZE_4K, USER_ACCESSIBLE)
    (f,) = [f for f in audit(mach.target(), ALIAS_WX).findings if f.paddr == frame]
    assert (f.root, f.vaddr, f.severity) == ("kernel+user", 0x80_0000, Severity.LOW)
    assert f.message == (
        "user code writable through a kernel mapping outside the direct map: frames "
        "0x2100000-0x2101000 executable at 0x800000-0x801000 in the user PGD are writable at "
        f"0x{cea_page:x}-0x{cea_page + 0x1000:x} in the kernel and user PGDs"
    )


@st.composite
def pti_pairs(draw: st.DrawFn) -> PtiMachine:
    """build_pti_machine() and a few pages mapped in one PGD or the other, shared frames."""
    mach = build_pti_machine()
    slots = [0x80_0000, PTI_VMAP, PTI_VMAP + SIZE_2M, TEXT + 0x100_0000]
    used: set[int] = set()  # the user halves share their tables: one mapping per address
    for _ in range(draw(st.integers(1, 6))):
        root = draw(st.sampled_from([KERNEL_PGD, USER_PGD]))
        vaddr = draw(st.sampled_from(slots)) + draw(st.integers(0, 3)) * SIZE_4K
        if vaddr in used:
            continue
        used.add(vaddr)
        bits = 0
        for bit in draw(st.lists(st.sampled_from([WRITABLE, NO_EXECUTE, USER_ACCESSIBLE]))):
            bits |= bit
        frame = 0x500000 + draw(st.integers(0, 5)) * SIZE_4K  # user text, data, others
        (mach.map_kernel if root == KERNEL_PGD else mach.map_user_pgd)(
            vaddr, frame, SIZE_4K, SIZE_4K, bits
        )
    return mach


Mapping = tuple[int, bool, bool, bool]  # (vaddr, user, writable, executable)


def brute_force_pair(mach: PtiMachine) -> set[tuple[int, Mapping, Mapping]]:
    """(frame, writable mapping, executable mapping) for every 4 KiB frame writable through
    one mapping and executable through another of either PGD, page by page; one mapping at
    the same address with the same permissions in both PGDs is one mapping."""
    by_frame: dict[int, set[Mapping]] = {}
    for root in (KERNEL_PGD, USER_PGD):
        for leaf in pt_at(mach, root).iter_mappings():
            for off in range(0, leaf.page_size, SIZE_4K):
                key = (leaf.vaddr + off, leaf.user, leaf.writable, leaf.executable)
                by_frame.setdefault(leaf.paddr + off, set()).add(key)
    return {
        (frame, w, x)
        for frame, maps in by_frame.items()
        for w in maps
        for x in maps
        if w[2] and x[3] and w != x
    }


def from_union(mach: PtiMachine) -> set[tuple[int, Mapping, Mapping]]:
    views = [AuditView("kernel", pt_at(mach, KERNEL_PGD)), AuditView("user", pt_at(mach, USER_PGD))]
    out = set()
    for alias in wx_aliases_in(span_union(views).spans):
        w, x = alias.writer, alias.executor
        for frame in range(alias.paddr, alias.paddr_end, SIZE_4K):
            for ws in w.starts():
                for xs in x.starts():
                    wm = (ws + frame - w.paddr, *perm_key(w))
                    xm = (xs + frame - x.paddr, *perm_key(x))
                    if wm != xm:
                        out.add((frame, wm, xm))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pti_pairs())
def test_alias_wx_across_the_pair_equals_a_page_by_page_reference(mach: PtiMachine) -> None:
    assert from_union(mach) == brute_force_pair(mach)


@pytest.mark.parametrize("name", ["4level", "kaslr-pti", "la57"])
def test_real_dumps_alias_wx(name: str, kernel_dump: Any) -> None:
    """No kernel code is writable anywhere. The dump's process runs code in frames the kernel
    image mapping still maps read-write (the tail after ``.brk`` up to the next 2 MiB, and
    without PTI the freed ``__init`` memory, which Linux only unmaps from the high mapping
    under PTI: ``free_kernel_image_pages``); the page allocator reused them for busybox's text.
    Those are ``low`` (user code, supervisor alias outside the direct map); the direct map's
    writable alias of every user page is not reported. Under PTI (kaslr-pti) the code is
    executable through the user PGD and writable through the kernel PGD only (the kernel PGD
    makes the user half no-execute, the user PGD lacks the image mapping): the sweep of both
    tables together finds them, as the single table of 4level and la57 shows them, naming both
    tables. ``--kernel`` audits init_mm's tables: no process there, no finding."""
    target = open_dump(str(kernel_dump(name)))
    offset = KERNEL_IMAGE_VA.start + hint(target, "kernel_offset")
    pti = name == "kaslr-pti"
    for root in KERNEL_ROOTS:
        result = audit(target, ALIAS_WX, root)
        findings: list[Finding] = result.ranges()  # the rule's own findings
        if root.kernel:
            assert findings == [], root
            continue
        assert findings and all(f.severity == Severity.LOW for f in findings)
        assert {f.root for f in findings} == {"kernel+user" if pti else "cr3"}
        for f in findings:
            assert f.user and f.executable and not f.writable and (f.vaddr or 0) < 1 << 47
            writer = f.message.split(" are writable at ")[1].split("-")[0]
            assert int(writer, 16) == offset + (f.paddr or 0)  # the image mapping, linear
            if pti:
                assert " in the user PGD are writable at " in f.message
                assert f.message.endswith(" in the kernel PGD")
        # Page by page: user-executable frames of the process that the image maps writable.
        cr3 = target.cpu(0).root
        assert cr3 is not None
        pt = X86PageTable.from_cpu(target.mapper, target.cpu(0))
        user_pt = (
            X86PageTable.from_cpu(target.mapper, target.cpu(0), root=cr3 | 0x1000) if pti else pt
        )
        user_x = {
            leaf.paddr + off
            for leaf in user_pt.iter_mappings(AddrRange(0, 1 << 47))
            if leaf.user and leaf.executable
            for off in range(0, leaf.page_size, SIZE_4K)
        }
        image_w = {
            leaf.paddr + off
            for leaf in pt.iter_mappings(KERNEL_IMAGE_VA)
            if leaf.writable
            for off in range(0, leaf.page_size, SIZE_4K)
        }
        flagged = {p for f in findings for p in range(f.paddr or 0, f.paddr_end or 0, SIZE_4K)}
        assert flagged == user_x & image_w
        if pti:  # the kernel PGD alone: no executable user page
            assert not any(
                leaf.user and leaf.executable for leaf in pt.iter_mappings(AddrRange(0, 1 << 47))
            )


def test_demo_scenario(tmp_path: Path) -> None:
    """fixtures/scenarios/demo.json shares frames between user and kernel mappings on purpose
    (a small address space, not a safe one): its kernel text (0x1000000-0x1200000) is also the
    user text (0x400000, 16 pages), the user data (0x600000, 8 pages) and the user stack
    (0x7ffffffde000, 33 pages), and is writable in the direct map."""
    from gdbext_sim.scenario import load_scenario

    root = ROOT
    result = audit(load_scenario(root / "fixtures/scenarios/demo.json"), ALIAS_WX)
    assert pairs(result) == {
        (TEXT, DIRECT + 0x1000000, Severity.HIGH),
        (TEXT + 0x10000, 0x600000, Severity.CRITICAL),
        (TEXT + 0x20000, 0x7FFF_FFFD_E000, Severity.CRITICAL),
    }
