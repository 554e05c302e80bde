"""Audit rules ``user-kernel``, ``pti`` and ``reserved-bits``: scenarios that must trigger them,
scenarios that must not, and the committed real dumps against QEMU's own ``info tlb``.

Expected findings are written down from the scenarios (hand-built machines whose every
mapping is known), never from a run of the rules.
"""

from __future__ import annotations

import dataclasses
import lzma
import re
from collections.abc import Callable, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from depth import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from test_audit_pti import (
    CEA_STACK,
    CEA_TSS,
    DATA,
    DIRECT,
    ENTRY_TEXT,
    ENTRY_TEXT_FRAME,
    KERNEL_PGD,
    RODATA,
    TEXT,
    USER_PGD,
    USER_TEXT,
    VMALLOC,
    VMALLOC_STACK,
    PtiMachine,
    build_pti_machine,
)

from gdbext.addr import AddrRange
from gdbext.audit.context import LeafSpan
from gdbext.audit.engine import AuditOptions, AuditResult, run_audit
from gdbext.audit.model import AuditRule, Finding, Severity
from gdbext.audit.registry import audit_rules
from gdbext.audit.rules.pti import RULES as PTI_RULES
from gdbext.audit.rules.pti import Cover, pti_regions
from gdbext.audit.rules.reserved_bits import PCD, PWT, outside
from gdbext.audit.rules.reserved_bits import RULES as RESERVED_RULES
from gdbext.audit.rules.user_kernel import RULES as USER_KERNEL_RULES
from gdbext.cpu import CR4_SMEP
from gdbext.flags import GLOBAL, NO_EXECUTE, USER_ACCESSIBLE, WRITABLE
from gdbext.frontend.commands import RootOptions
from gdbext.linux.layout import CPU_ENTRY_AREA_BASE, ESPFIX_BASE_ADDR
from gdbext.mapper import read_u64, write_u64
from gdbext.plugin.host import Host
from gdbext.plugin.target import Target
from gdbext.x86.paging import SIZE_2M, SIZE_4K, LeafRun
from gdbext_dump.dump import open_dump
from gdbext_sim.scenario import build_machine, load_scenario

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "fixtures" / "scenarios"
KERNELS = ROOT / "fixtures" / "kernels"
DumpFactory = Callable[[str], Path]

USER_KERNEL = USER_KERNEL_RULES[0]
PTI = PTI_RULES[0]
RESERVED = RESERVED_RULES[0]
H, M, L, INFO = Severity.HIGH, Severity.MEDIUM, Severity.LOW, Severity.INFO


def audit(target: Target, rule: AuditRule, root: RootOptions | None = None) -> AuditResult:
    return run_audit(target, AuditOptions(root=root or RootOptions()), [rule])


def brief(f: Finding) -> tuple[Any, ...]:
    """A finding's severity, root, ranges, pages and permissions."""
    return (
        f.severity,
        f.root,
        f.vaddr,
        f.end,
        f.paddr,
        f.paddr_end,
        f.pages,
        f.user,
        f.writable,
        f.executable,
    )


def scenario(name: str) -> Target:
    return load_scenario(SCENARIOS / f"audit-space-{name}.json").to_target()


def test_the_rules_are_built_in() -> None:
    rules = audit_rules(Host.create())
    for rule in (USER_KERNEL, PTI, RESERVED):
        assert rules[rule.id] is rule
    assert (USER_KERNEL.severity, PTI.severity, RESERVED.severity) == (H, H, H)


# --- user-kernel -----------------------------------------------------------------------------


def test_user_kernel_finds_both_sides_of_the_boundary() -> None:
    result = audit(scenario("user-kernel"), USER_KERNEL)
    assert [brief(f) for f in result.findings] == [
        # 3 supervisor RW pages at 0x10000000, in a table whose user half has user pages.
        (H, "cr3", 0x10000000, 0x10003000, 0x3100000, 0x3103000, 3, False, True, False),
        # A 2 MiB user page and 16 4 KiB ones after it: one range (528 pages), then 2 r-x pages.
        (H, "cr3", 0xFFFF888100000000, 0xFFFF888100210000, 0x2000000, 0x2210000, 528,
         True, True, False),
        (H, "cr3", 0xFFFF888100210000, 0xFFFF888100212000, 0x2210000, 0x2212000, 2,
         True, False, True),
        # The vsyscall page, user r-- (vsyscall=emulate).
        (L, "cr3", 0xFFFFFFFFFF600000, 0xFFFFFFFFFF601000, 0x3000000, 0x3001000, 1,
         True, False, False),
    ]  # fmt: skip
    big = result.findings[1]
    # Walk evidence: the last step is the 2 MiB leaf: frame | NX | PS | U | W | P.
    assert big.evidence[-1].startswith("PD[0] @0x")
    assert big.evidence[-1].endswith(f"= 0x{0x2000000 | NO_EXECUTE | 0x87:x}")
    assert big.evidence[0].startswith("PML4[273] @0x")
    assert "vsyscall=emulate" in result.findings[3].message
    assert "supervisor-only in the user half" in result.findings[0].message


def test_user_kernel_finds_nothing_in_a_clean_address_space() -> None:
    assert audit(scenario("clean"), USER_KERNEL).findings == []
    demo = load_scenario(SCENARIOS / "demo.json").to_target()
    assert audit(demo, USER_KERNEL).findings == []


def mapping(
    vaddr: int, paddr: int, size: str, flags: Sequence[str], count: int = 1
) -> dict[str, Any]:
    """One scenario ``mappings`` element."""
    return {
        "vaddr": hex(vaddr),
        "paddr": hex(paddr),
        "size": size,
        "count": count,
        "flags": list(flags),
    }


@pytest.mark.parametrize(
    ("flags", "severity", "words"),
    [
        (["USER_ACCESSIBLE", "NO_EXECUTE"], L, "vsyscall=emulate"),
        (["USER_ACCESSIBLE"], M, "vsyscall=native"),
        (["USER_ACCESSIBLE", "WRITABLE", "NO_EXECUTE"], H, "user-accessible in the kernel half"),
    ],
)
def test_the_vsyscall_page(flags: list[str], severity: Severity, words: str) -> None:
    machine = build_machine({"mappings": [mapping(0xFFFFFFFFFF600000, 0x5000, "4K", flags)]})
    (f,) = audit(machine.to_target(), USER_KERNEL).findings
    assert f.severity == severity and words in f.message
    # Not the vsyscall page: 2 pages from there are a plain user mapping of the kernel half.
    machine = build_machine({"mappings": [mapping(0xFFFFFFFFFF600000, 0x5000, "4K", flags, 2)]})
    (f,) = audit(machine.to_target(), USER_KERNEL).findings
    assert (f.severity, f.pages) == (H, 2)


def test_user_kernel_uses_effective_permissions() -> None:
    """A leaf with U under a PML4 entry without U is supervisor-only: not flagged."""
    machine = build_machine(
        {"mappings": [mapping(0xFFFF888000000000, 0x5000, "4K", ["USER_ACCESSIBLE"])]}
    )
    assert len(audit(machine.to_target(), USER_KERNEL).findings) == 1
    slot = machine.page_table.root + 8 * 273
    write_u64(machine.memory, slot, read_u64(machine.memory, slot) & ~USER_ACCESSIBLE)
    assert audit(machine.to_target(), USER_KERNEL).findings == []


def test_supervisor_pages_in_the_lower_half_need_a_process() -> None:
    """A kernel living in the lower half with no user page is not a process's table; one user
    page makes it one, and its supervisor pages are then flagged."""
    kernel = [mapping(0x200000, 0x200000, "2M", ["WRITABLE"], 4)]
    machine = build_machine({"mappings": kernel})
    assert audit(machine.to_target(), USER_KERNEL).findings == []
    user = mapping(0x40000000, 0x1000000, "4K", ["USER_ACCESSIBLE", "WRITABLE"])
    machine = build_machine({"mappings": [*kernel, user]})
    (f,) = audit(machine.to_target(), USER_KERNEL).findings
    assert brief(f) == (H, "cr3", 0x200000, 0xA00000, 0x200000, 0xA00000, 2048, False, True, True)


@pytest.mark.parametrize("levels", [4, 5])
@pytest.mark.parametrize("cr3", [KERNEL_PGD, USER_PGD])
def test_user_kernel_under_pti(levels: int, cr3: int) -> None:
    m = build_pti_machine(levels)
    assert audit(m.target(cr3), USER_KERNEL).findings == []
    # A supervisor page in the shared user half: one finding, seen through both tables.
    m.map_kernel(USER_TEXT + 0x100000, 0x540000, SIZE_4K, SIZE_4K, WRITABLE | NO_EXECUTE)
    # A user page in the kernel half of the user PGD only.
    m.map_user_pgd(CPU_ENTRY_AREA_BASE + 0x100000, 0x550000, SIZE_4K, SIZE_4K, USER_ACCESSIBLE)
    found = audit(m.target(cr3), USER_KERNEL).findings
    assert [brief(f) for f in found] == [
        (H, "kernel", USER_TEXT + 0x100000, USER_TEXT + 0x101000, 0x540000, 0x541000, 1,
         False, True, False),
        (H, "user", CPU_ENTRY_AREA_BASE + 0x100000, CPU_ENTRY_AREA_BASE + 0x101000, 0x550000,
         0x551000, 1, True, False, True),
    ]  # fmt: skip
    assert found[0].evidence[-1] == (
        f"the same through the user table 0x{USER_PGD:x} (shared tables)"
    )


def test_the_pti_user_pgd_is_a_process_table_without_user_pages() -> None:
    """PTI's user PGD is what user mode runs on: a supervisor page in its user half is found
    even where no user page makes the table look like a process's (the kernel PGD, the same
    user half, is not one)."""
    m = build_pti_machine(4, user_pages=False)
    m.map_kernel(USER_TEXT, 0x540000, SIZE_4K, SIZE_4K, WRITABLE | NO_EXECUTE)
    m.sync_user_half(True)
    for cr3 in (KERNEL_PGD, USER_PGD):
        (f,) = audit(m.target(cr3), USER_KERNEL).findings
        assert brief(f) == (
            H, "user", USER_TEXT, USER_TEXT + 0x1000, 0x540000, 0x541000, 1, False, True, False
        )  # fmt: skip


# --- pti -------------------------------------------------------------------------------------


def test_pti_is_skipped_without_a_pair() -> None:
    result = audit(scenario("clean"), PTI)
    assert result.findings == [] and result.rules_run == []
    assert result.skipped["pti"].startswith("no PTI page-table pair: the user halves differ")
    m = build_pti_machine(4, pti=False, user_pages=False)
    result = audit(m.target(), PTI)
    assert result.skipped["pti"] == (
        f"no PTI page-table pair: the twin table 0x{USER_PGD:x} maps nothing in the kernel "
        "half (PTI clones at least cpu_entry_area)"
    )


@pytest.mark.parametrize("levels", [4, 5])
@pytest.mark.parametrize("cr3", [KERNEL_PGD, USER_PGD])
@pytest.mark.parametrize("user_pages", [True, False])
def test_pti_finds_nothing_in_linuxs_pair(levels: int, cr3: int, user_pages: bool) -> None:
    """cpu_entry_area (writable stacks included), ESPFIX, the entry text, the cpu_tss_rw page
    and an LDT remap are what PTI's user PGD legitimately maps."""
    m = build_pti_machine(levels, user_pages=user_pages)
    ldt = pti_regions(levels)[0][0]
    m.map_kernel(ldt, 0x560000, SIZE_4K, SIZE_4K, NO_EXECUTE)
    m.map_user_pgd(ldt, 0x560000, SIZE_4K, SIZE_4K, NO_EXECUTE)
    result = audit(m.target(cr3), PTI)
    assert result.rules_run == ["pti"] and result.findings == []


@pytest.mark.parametrize(("cr4", "severity"), [(0, H), (CR4_SMEP, M)])
def test_pti_user_code_executable_through_the_kernel_pgd(cr4: int, severity: Severity) -> None:
    m = build_pti_machine(4, kernel_nx=False)
    (f,) = audit(m.target(cr4_set=cr4), PTI).findings
    # The user text (4 pages r-x); data and stack are NX in their own leaves.
    assert brief(f) == (
        severity, "kernel", USER_TEXT, USER_TEXT + 0x4000, 0x500000, 0x504000, 4, True, False,
        True,
    )  # fmt: skip
    assert f.evidence[-1].startswith("kernel-mode execution of user code: CR4.SMEP is")


def test_pti_global_kernel_pages_outside_the_user_pgd() -> None:
    m = build_pti_machine(4, global_kernel=True)
    d = DIRECT[4]
    found = audit(m.target(), PTI).findings
    assert [brief(f) for f in found] == [
        # The direct map, less the cpu_tss_rw page the user PGD maps at the same place.
        (M, "kernel", d, d + CEA_TSS, 0, CEA_TSS, CEA_TSS // SIZE_4K, False, True, False),
        (M, "kernel", d + CEA_TSS + 0x1000, d + (32 << 20), CEA_TSS + 0x1000, 32 << 20,
         ((32 << 20) - CEA_TSS - 0x1000) // SIZE_4K, False, True, False),
        (M, "kernel", VMALLOC[4], VMALLOC[4] + 0x4000, VMALLOC_STACK, VMALLOC_STACK + 0x4000, 4,
         False, True, False),
        # The text but the entry text (which the user PGD maps).
        (M, "kernel", TEXT, ENTRY_TEXT, 0x1000000, ENTRY_TEXT_FRAME, 1536, False, False, True),
    ]  # fmt: skip


def test_pti_kernel_image_cloned_into_the_user_pgd() -> None:
    """What pti_clone_kernel_text does (pti=auto, no PCID), plus the data: code beyond the
    entry text (medium), rodata (medium), writable data (high)."""
    m = build_pti_machine(5)
    m.map_user_pgd(TEXT, 0x1000000, 6 << 20, SIZE_2M, 0)
    m.map_user_pgd(RODATA, 0x1800000, 2 << 20, SIZE_2M, NO_EXECUTE)
    m.map_user_pgd(DATA, 0x1A00000, 2 << 20, SIZE_2M, WRITABLE | NO_EXECUTE)
    found = audit(m.target(USER_PGD), PTI).findings
    assert [brief(f) for f in found] == [
        (H, "user", DATA, DATA + SIZE_2M, 0x1A00000, 0x1C00000, 512, False, True, False),
        (M, "user", TEXT, RODATA, 0x1000000, 0x1800000, 2048, False, False, True),
        (M, "user", RODATA, DATA, 0x1800000, 0x1A00000, 512, False, False, False),
    ]  # fmt: skip
    assert "the kernel PGD maps the same frames there (a clone)" in found[1].evidence
    assert any("0x800000 bytes of kernel-image code" in e for e in found[1].evidence)


def test_pti_writable_kernel_code_in_the_user_pgd_is_not_entry_text() -> None:
    """The entry text PTI clones is read-only: a writable, executable clone of the kernel's
    own text frames in the image mapping is writable kernel data (high)."""
    m = build_pti_machine(4)
    m.map_user_pgd(TEXT, 0x1000000, SIZE_2M, SIZE_2M, WRITABLE)
    (f,) = audit(m.target(), PTI).findings
    assert brief(f) == (
        H, "user", TEXT, TEXT + SIZE_2M, 0x1000000, 0x1200000, 512, False, True, True
    )  # fmt: skip
    assert "writable kernel data" in f.message


def test_pti_global_user_pages_are_not_global_kernel_pages() -> None:
    """A GLOBAL user page in the kernel half (user-kernel's and global-user's finding) is not
    one of pti's global kernel pages."""
    m = build_pti_machine(4)
    m.map_kernel(VMALLOC[4] + 0x100000, 0x560000, SIZE_4K, SIZE_4K,
                 USER_ACCESSIBLE | GLOBAL | NO_EXECUTE)  # fmt: skip
    assert audit(m.target(), PTI).findings == []
    m.map_kernel(VMALLOC[4] + 0x200000, 0x570000, SIZE_4K, SIZE_4K, GLOBAL | NO_EXECUTE)
    (f,) = audit(m.target(), PTI).findings
    assert (f.vaddr, f.severity) == (VMALLOC[4] + 0x200000, M)


def test_pti_entry_text_that_is_not_the_kernels() -> None:
    m = build_pti_machine(4, entry_text_frame=0x2000000)
    glob, code = audit(m.target(), PTI).findings  # same address: root 'kernel' first
    assert brief(code) == (
        M, "user", ENTRY_TEXT, ENTRY_TEXT + SIZE_2M, 0x2000000, 0x2200000, 512, False, False,
        True,
    )  # fmt: skip
    assert "the kernel PGD does not map all of it to the same frames" in code.evidence
    # And the kernel's global entry text is now a global page the user PGD does not map.
    assert brief(glob) == (
        M, "kernel", ENTRY_TEXT, ENTRY_TEXT + SIZE_2M, ENTRY_TEXT_FRAME, ENTRY_TEXT_FRAME + SIZE_2M,
        512, False, False, True,
    )  # fmt: skip


def test_pti_kernel_pages_that_are_not_pti_clones() -> None:
    m = build_pti_machine(4)
    d = DIRECT[4]
    # A direct-map page whose frame cpu_entry_area does not map: not a cpu_tss_rw page.
    m.map_user_pgd(d + 0x700000, 0x700000, SIZE_4K, SIZE_4K, WRITABLE | NO_EXECUTE)
    # The entry stack's frame through the direct map, but executable: not a TSS page either.
    m.map_user_pgd(d + CEA_STACK, CEA_STACK, SIZE_4K, SIZE_4K, 0)
    # Module code (above the kernel image's 1 GiB).
    m.map_user_pgd(0xFFFFFFFFC0001000, 0x580000, SIZE_4K, SIZE_4K, 0)
    found = audit(m.target(), PTI).findings
    assert [brief(f) for f in found] == [
        (H, "user", d + 0x700000, d + 0x701000, 0x700000, 0x701000, 1, False, True, False),
        (M, "user", d + CEA_STACK, d + CEA_STACK + 0x1000, CEA_STACK, CEA_STACK + 0x1000, 1,
         False, False, True),
        (M, "user", 0xFFFFFFFFC0001000, 0xFFFFFFFFC0002000, 0x580000, 0x581000, 1, False, False,
         True),
    ]  # fmt: skip


def brute_uncovered(
    vaddr: int, end: int, paddr: int, cover: Sequence[tuple[int, int, int]]
) -> list[int]:
    pages = {}
    for lo, hi, pa in cover:
        for v in range(lo, hi, SIZE_4K):
            pages[v] = pa + (v - lo)
    return [v for v in range(vaddr, end, SIZE_4K) if pages.get(v) != paddr + (v - vaddr)]


@settings(max_examples=examples(200), deadline=None)
@given(
    runs=st.lists(st.tuples(st.integers(0, 40), st.integers(1, 6), st.integers(0, 3)), max_size=8),
    query=st.tuples(st.integers(0, 40), st.integers(1, 30), st.integers(0, 3)),
)
def test_cover_against_pages(runs: list[tuple[int, int, int]], query: tuple[int, int, int]) -> None:
    """``Cover.uncovered`` equals a page-by-page comparison (runs in pages; non-overlapping)."""
    taken: set[int] = set()
    cover: list[tuple[int, int, int]] = []
    for start, n, shift in runs:
        pages = set(range(start, start + n))
        if pages & taken:
            continue
        taken |= pages
        cover.append((start * SIZE_4K, (start + n) * SIZE_4K, (start + 100 * shift) * SIZE_4K))
    spans = [
        LeafSpan(LeafRun(lo, pa, (hi - lo) // SIZE_4K, SIZE_4K, pa | 3, False, True, False))
        for lo, hi, pa in cover
    ]
    qs, qn, qshift = query
    vaddr, end, paddr = qs * SIZE_4K, (qs + qn) * SIZE_4K, (qs + 100 * qshift) * SIZE_4K
    got = Cover(spans).uncovered(vaddr, end, paddr)
    expected = brute_uncovered(vaddr, end, paddr, cover)
    assert [v for lo, hi in got for v in range(lo, hi, SIZE_4K)] == expected
    assert all(hi < lo2 for (_, hi), (lo2, _) in pairwise(got))  # maximal pieces


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


# --- the real dumps --------------------------------------------------------------------------

NAMES = ["4level", "kaslr-pti", "la57"]
#: QEMU's RAM for ``-m 128M`` on a PC: [0, 128 MiB) less the VGA window (qemu-config.txt).
QEMU_RAM = [(0, 0xA0000), (0xC0000, 128 << 20)]
TLB_LINE = re.compile(r"^([0-9a-f]{16}): ([0-9a-f]{16}) ([-XGPDACTUW]{9})$")


def golden(name: str, kind: str) -> list[tuple[int, int, str]]:
    """``(vaddr, paddr, flags)`` of each line of a QEMU ``info tlb`` golden."""
    text = lzma.decompress((KERNELS / f"{name}.{kind}.txt.xz").read_bytes()).decode()
    out = []
    for line in text.splitlines():
        m = TLB_LINE.match(line)
        assert m is not None, line
        out.append((int(m[1], 16), int(m[2], 16), m[3]))
    return out


def kinds(name: str) -> list[str]:
    return [k for k in ("info-tlb", "info-tlb-kernel", "info-tlb-user")
            if (KERNELS / f"{name}.{k}.txt.xz").exists()]  # fmt: skip


ROOTS = {"info-tlb": RootOptions(), "info-tlb-kernel": RootOptions(kernel=True),
         "info-tlb-user": RootOptions(user_pgd=True)}  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_real_user_kernel(kernel_dump: DumpFactory, name: str) -> None:
    """No finding on any committed table; QEMU agrees: no leaf of a kernel half has U, every
    leaf of a user half has it (QEMU prints the leaf's own bits, and Linux sets U on every
    upper-level entry of a user mapping)."""
    target = open_dump(str(kernel_dump(name)))
    half = 1 << (56 if name == "la57" else 47)
    for kind in kinds(name):
        lines = golden(name, kind)
        assert not [v for v, _, f in lines if v >= half and "U" in f]
        assert all("U" in f for v, _, f in lines if v < half)
        assert audit(target, USER_KERNEL, ROOTS[kind]).findings == []


@pytest.mark.parametrize("name", ["4level", "la57"])
def test_real_pti_skipped_without_pti(kernel_dump: DumpFactory, name: str) -> None:
    target = open_dump(str(kernel_dump(name)))
    for root in (RootOptions(), RootOptions(kernel=True)):
        result = audit(target, PTI, root)
        assert result.skipped["pti"].startswith("no PTI page-table pair: ")


def test_real_pti_pair_is_clean(kernel_dump: DumpFactory) -> None:
    """kaslr-pti: nothing found, from CPU 0's CR3 (either half) and from init_top_pgt. QEMU's
    ``info tlb`` of the user PGD, read without gdbext, holds in its kernel half exactly what
    the rule accepts: cpu_entry_area, ESPFIX, one 2 MiB read-only executable page in the
    kernel image (the entry text) and one direct-map page whose frame cpu_entry_area maps
    (CPU 0's cpu_tss_rw)."""
    target = open_dump(str(kernel_dump("kaslr-pti")))
    for root in (RootOptions(), RootOptions(user_pgd=True), RootOptions(kernel=True)):
        result = audit(target, PTI, root)
        assert result.rules_run == ["pti"] and result.findings == [], root
    lines = [(v, p, f) for v, p, f in golden("kaslr-pti", "info-tlb-user") if v >= 1 << 47]
    cea = [ln for ln in lines if CPU_ENTRY_AREA_BASE <= ln[0] < CPU_ENTRY_AREA_BASE + (1 << 39)]
    espfix = [ln for ln in lines if ESPFIX_BASE_ADDR <= ln[0] < ESPFIX_BASE_ADDR + (1 << 39)]
    image = [ln for ln in lines if 0xFFFFFFFF80000000 <= ln[0] < 0xFFFFFFFFC0000000]
    known = {*cea, *espfix, *image}
    rest = [ln for ln in lines if ln not in known]
    assert (len(cea), len(espfix), len(image), len(rest)) == (16, 65536, 1, 1)
    text_flags = image[0][2]
    assert text_flags[0] == "-" and text_flags[2] == "P" and text_flags[-1] == "-"  # X, 2M, RO
    ((tss_va, tss_frame, tss_flags),) = rest
    assert tss_frame in {p for _, p, _ in cea} and tss_flags[0] == "X"
    assert 0xFFFF888000000000 <= tss_va < CPU_ENTRY_AREA_BASE  # the direct map's KASLR range


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


def test_pti_machine_is_what_the_pti_tests_build() -> None:
    """The shared builder's machine is a PTI pair (guards the imports above)."""
    m: PtiMachine = build_pti_machine(4)
    assert m.kernel.root == KERNEL_PGD and m.user.root == USER_PGD
    assert m.user.translate(ENTRY_TEXT).paddr == ENTRY_TEXT_FRAME
    assert m.user.translate(ESPFIX_BASE_ADDR + 0xF000).steps[1].table == (
        m.kernel.translate(ESPFIX_BASE_ADDR + 0xF000).steps[1].table
    )
    assert m.kernel.translate(TEXT).entry & GLOBAL == 0
