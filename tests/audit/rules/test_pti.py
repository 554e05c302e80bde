"""Audit rules ``user-kernel``, ``pti`` and ``reserved-bits``: scenarios that must trigger them,
scenarios that must not, and the committed real dumps against QEMU's own ``info tlb``.

Expected findings are written down from the scenarios (hand-built machines whose every
mapping is known), never from a run of the rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.audit import PTI, DumpFactory, H, M, brief, golden, scenario
from support.audit import audit_rule as audit
from support.pti import (
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

from gdbext.audit.context import LeafSpan
from gdbext.audit.model import Severity
from gdbext.audit.rules.pti import Cover, pti_regions
from gdbext.cpu import CR4_SMEP
from gdbext.flags import GLOBAL, NO_EXECUTE, USER_ACCESSIBLE, WRITABLE
from gdbext.frontend.commands import RootOptions
from gdbext.linux.layout import CPU_ENTRY_AREA_BASE, ESPFIX_BASE_ADDR
from gdbext.x86.paging import SIZE_2M, SIZE_4K
from gdbext.x86.records import LeafRun
from gdbext_dump.dump import open_dump

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


@settings(max_examples=200, deadline=None)
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


def test_pti_machine_is_what_the_pti_tests_build() -> None:
    """The shared builder's machine is a PTI pair (guards the imports above)."""
    m: PtiMachine = build_pti_machine(4)
    assert m.kernel.root == KERNEL_PGD and m.user.root == USER_PGD
    assert m.user.translate(ENTRY_TEXT).paddr == ENTRY_TEXT_FRAME
    assert m.user.translate(ESPFIX_BASE_ADDR + 0xF000).steps[1].table == (
        m.kernel.translate(ESPFIX_BASE_ADDR + 0xF000).steps[1].table
    )
    assert m.kernel.translate(TEXT).entry & GLOBAL == 0
