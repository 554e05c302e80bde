"""PTI pair detection (``gdbext.audit.pti``) on simulated pairs and on the real dumps.

Simulated pairs (:func:`support.pti.build_pti_machine`) are built the way Linux's
``arch/x86/mm/pti.c`` builds them (the user half copied to the twin with NX added to the
kernel's copy, cpu_entry_area and ESPFIX cloned at the P4D level so that the PUD tables are
shared, the entry text and a ``cpu_tss_rw`` page mapped in the user table only); the near
misses are what a kernel without PTI leaves beside its PGDs. The real dumps are checked
against what QEMU printed for the same VM (``info tlb`` of the user PGD, ``info registers``)
and the kernel's own serial line.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from minimize import read_golden
from support.goldens import registers
from support.paths import KERNELS
from support.pti import (
    CEA_IDT,
    CEA_TSS,
    ENTRY_TEXT,
    ENTRY_TEXT_FRAME,
    KERNEL_PGD,
    USER_PGD,
    PtiMachine,
    build_pti_machine,
    pt_at,
)

from gdbext.audit.pti import detect_pti, examine_pti, pti_pair_roots
from gdbext.flags import GLOBAL, NO_EXECUTE, WRITABLE
from gdbext.linux.layout import CPU_ENTRY_AREA_BASE, ESPFIX_BASE_ADDR
from gdbext.mapper import read_table, read_u64, write_u64
from gdbext.x86.paging import SIZE_2M, SIZE_4K, X86PageTable
from gdbext_dump.dump import open_dump
from gdbext_sim.memory import SparsePhysMemory
from gdbext_sim.scenario import build_machine

DumpFactory = Callable[[str], Path]


# --- simulated pairs -------------------------------------------------------------------------


@pytest.mark.parametrize("levels", [4, 5])
@pytest.mark.parametrize("user_pages", [True, False])
@pytest.mark.parametrize("root", [KERNEL_PGD, USER_PGD])
def test_a_pti_pair_is_detected_from_either_half(levels: int, user_pages: bool, root: int) -> None:
    m = build_pti_machine(levels, user_pages=user_pages)
    verdict = examine_pti(pt_at(m, root))
    assert verdict.pair == (KERNEL_PGD, USER_PGD), verdict.reason
    assert detect_pti(pt_at(m, root)) == (KERNEL_PGD, USER_PGD)
    # The kernel half of the user PGD: cpu_entry_area and ESPFIX (one top-level entry with
    # 5 levels: both lie under PML5 entry 511), the entry text, the direct map's TSS page.
    top = {4: [273, 508, 510, 511], 5: [273, 511]}[levels]
    assert f"in the user table ({', '.join(map(str, top))})" in verdict.facts[1]
    # User text, data and stack: PML4 entries 0 and 255; with 5 levels all under PML5 entry 0.
    shared = {4: 2, 5: 1}[levels] if user_pages else 0
    assert verdict.facts[0] == f"user half: {shared} entries link the same tables in both"


def test_the_user_half_evidence_counts_shared_entries() -> None:
    m = build_pti_machine(4)
    facts = examine_pti(pt_at(m, KERNEL_PGD)).facts
    # User text and data share PML4 entry 0, the stack is under entry 255.
    assert facts[0] == "user half: 2 entries link the same tables in both"
    assert "entry 508 links table" in facts[2]


@pytest.mark.parametrize("levels", [4, 5])
def test_without_pti_the_zero_twin_is_not_a_pair(levels: int) -> None:
    """What Debian's kernel leaves with PTI compiled in but off: a zero twin page."""
    m = build_pti_machine(levels, pti=False)
    for root in (KERNEL_PGD, USER_PGD):
        verdict = examine_pti(pt_at(m, root))
        assert verdict.pair is None
        assert verdict.reason.startswith("the user halves differ: entry 0 is present only")
    m = build_pti_machine(levels, pti=False, user_pages=False)
    verdict = examine_pti(pt_at(m, KERNEL_PGD))
    assert verdict.pair is None
    assert "maps nothing in the kernel half" in verdict.reason


def copy_table(m: PtiMachine, src: int, dst: int, indices: Sequence[int] = range(512)) -> None:
    entries = read_table(m.memory, src)
    for i in indices:
        write_u64(m.memory, dst + 8 * i, entries[i])


def test_a_neighbouring_pgd_is_not_a_pair() -> None:
    """Without PTI an order-0 PGD's neighbour may be another process's PGD: same kernel half
    (every PGD copies the kernel's entries), another user half."""
    m = build_pti_machine(4, pti=False, user_pages=False)
    copy_table(m, KERNEL_PGD, USER_PGD)
    verdict = examine_pti(pt_at(m, KERNEL_PGD))
    assert verdict.pair is None
    assert "as many kernel-half entries" in verdict.reason
    # The same with a user half of its own: that difference is found first.
    write_u64(m.memory, USER_PGD, 0x123000 | 0x67)
    assert "entry 0 is present only in the user table" in examine_pti(pt_at(m, KERNEL_PGD)).reason


def test_user_halves_linking_different_tables_are_not_a_pair() -> None:
    m = build_pti_machine(4)
    entry = read_u64(m.memory, USER_PGD)
    write_u64(m.memory, USER_PGD, (entry & ~m.kernel.addr_mask) | 0x7000)
    verdict = examine_pti(pt_at(m, KERNEL_PGD))
    assert verdict.pair is None
    assert "entry 0 links" in verdict.reason and "0x7000 in the user table" in verdict.reason


def test_a_twin_with_kernel_entries_the_kernel_lacks_is_not_a_pair() -> None:
    m = build_pti_machine(4)
    write_u64(m.memory, USER_PGD + 8 * 300, 0x7000 | 0x63)
    verdict = examine_pti(pt_at(m, KERNEL_PGD))
    assert verdict.pair is None
    assert verdict.reason.endswith("does not: 300")


@pytest.mark.parametrize("levels", [4, 5])
def test_a_twin_sharing_no_kernel_table_is_not_a_pair(levels: int) -> None:
    """Same shape as PTI's user PGD, but every kernel-half table its own: no evidence."""
    m = build_pti_machine(levels, pti=False)
    m.sync_user_half()
    m.map_user_pgd(CPU_ENTRY_AREA_BASE, CEA_IDT, SIZE_4K, SIZE_4K, NO_EXECUTE)
    verdict = examine_pti(pt_at(m, KERNEL_PGD))
    assert verdict.pair is None
    assert "shares no kernel-half table" in verdict.reason


def test_an_unreadable_twin_is_not_a_pair() -> None:
    memory = SparsePhysMemory((64 << 20) - 0x1000)
    last = (64 << 20) - 0x2000  # the last page of RAM: its twin is the first page beyond
    verdict = examine_pti(X86PageTable(memory, last))
    assert verdict.pair is None
    assert verdict.reason.startswith(f"the pair 0x{last:x}/0x{last + 0x1000:x} cannot be read")


def test_a_simulator_scenario_is_not_a_pair() -> None:
    """The scenario builder's root sits at an odd 4 KiB (top of RAM, top down): its "kernel
    twin" is the first table allocated after it, which is nothing like a PGD."""
    user = {"vaddr": "0x400000", "paddr": "0x100000", "size": "4K", "flags": ["USER_ACCESSIBLE"]}
    direct = {"vaddr": "0xffff888000000000", "paddr": "0", "size": "2M", "count": 4}
    machine = build_machine({"levels": 4, "ram": "64M", "mappings": [user, direct]})
    assert machine.page_table.root & 0x1000
    assert detect_pti(machine.page_table) is None


def test_pair_roots() -> None:
    assert pti_pair_roots(0x61C4000) == (0x61C4000, 0x61C5000)
    assert pti_pair_roots(0x61C5000) == (0x61C4000, 0x61C5000)


@settings(max_examples=60, deadline=None)
@given(
    levels=st.sampled_from([4, 5]),
    drop=st.sets(st.sampled_from(["espfix", "entry", "tss"])),
    break_user=st.sampled_from([None, "drop", "add", "move"]),
)
def test_detection_follows_the_invariants(
    levels: int, drop: set[str], break_user: str | None
) -> None:
    """Any subset of PTI's optional clones keeps the pair (cpu_entry_area is always cloned);
    any disagreement of the user halves breaks it."""
    m = build_pti_machine(levels, pti=False)
    m.sync_user_half()
    m.clone_p4d(CPU_ENTRY_AREA_BASE)
    if "espfix" not in drop:
        m.clone_p4d(ESPFIX_BASE_ADDR)
    if "entry" not in drop:
        m.map_user_pgd(ENTRY_TEXT, ENTRY_TEXT_FRAME, SIZE_2M, SIZE_2M, GLOBAL)
    if "tss" not in drop:
        m.map_user_pgd(m.direct(CEA_TSS), CEA_TSS, SIZE_4K, SIZE_4K, WRITABLE | NO_EXECUTE)
    if break_user == "drop":
        write_u64(m.memory, USER_PGD, 0)
    elif break_user == "add":
        write_u64(m.memory, USER_PGD + 8 * 100, 0x7000 | 0x67)
    elif break_user == "move":
        entry = read_u64(m.memory, KERNEL_PGD)
        write_u64(m.memory, KERNEL_PGD, entry + 0x1000)
    expected = None if break_user else (KERNEL_PGD, USER_PGD)
    for root in (KERNEL_PGD, USER_PGD):
        assert detect_pti(pt_at(m, root)) == expected


# --- the real dumps --------------------------------------------------------------------------


def pti_enabled_by_the_kernel(name: str) -> bool:
    log = (KERNELS / f"{name}.serial.log").read_text()
    return "Kernel/User page tables isolation: enabled" in log


@pytest.mark.parametrize("name", ["4level", "kaslr-pti", "la57"])
def test_real_dumps_pti_as_the_kernel_says(kernel_dump: DumpFactory, name: str) -> None:
    """Detected exactly where the kernel's serial log says PTI is enabled; from QEMU's CR3
    and from VMCOREINFO's ``init_top_pgt``, each in both forms."""
    target = open_dump(str(kernel_dump(name)))
    cr3 = registers(name)["CR3"] & ~0xFFF
    kernel_root = target.facts.kernel_root
    assert isinstance(kernel_root, int)
    levels = target.facts.kernel_levels
    assert isinstance(levels, int)
    enabled = pti_enabled_by_the_kernel(name)
    assert enabled == (name == "kaslr-pti")
    for root in (cr3, cr3 | 0x1000, kernel_root, kernel_root | 0x1000):
        pt = X86PageTable.from_cpu(target.mapper, target.cpus[0], root=root, levels=levels)
        verdict = examine_pti(pt)
        base = root & ~0x1000
        assert verdict.pair == ((base, base | 0x1000) if enabled else None), verdict.reason


def golden_top_indices(name: str, kind: str) -> set[int]:
    """PML4 indices of the leaves in a QEMU ``info tlb`` golden."""
    lines = read_golden(KERNELS / f"{name}.{kind}.txt.xz")
    return {(int(line[:16], 16) >> 39) & 0x1FF for line in lines}


def test_real_pti_facts_match_qemus_user_pgd(kernel_dump: DumpFactory) -> None:
    """The top-level entries the evidence names are those under which QEMU's ``info tlb`` of
    the user PGD (CR3 | 0x1000) finds leaves; its user half is the process's (QEMU's
    ``info tlb`` with CPU 0's CR3 finds the same user leaves)."""
    target = open_dump(str(kernel_dump("kaslr-pti")))
    cr3 = registers("kaslr-pti")["CR3"] & ~0xFFF
    verdict = examine_pti(X86PageTable.from_cpu(target.mapper, target.cpus[0], root=cr3))
    assert verdict.pair == (cr3, cr3 | 0x1000)
    user_top = golden_top_indices("kaslr-pti", "info-tlb-user")
    assert user_top == {0, 255, 282, 508, 510, 511}
    kernel_half = sorted(i for i in user_top if i >= 256)
    assert f"in the user table ({', '.join(map(str, kernel_half))})" in verdict.facts[1]
    user_half = sorted(i for i in user_top if i < 256)
    assert verdict.facts[0] == f"user half: {len(user_half)} entries link the same tables in both"
    cr3_user_lines = [
        line
        for line in read_golden(KERNELS / "kaslr-pti.info-tlb.txt.xz")
        if int(line[:16], 16) < 1 << 47
    ]
    upgd_user_lines = [
        line
        for line in read_golden(KERNELS / "kaslr-pti.info-tlb-user.txt.xz")
        if int(line[:16], 16) < 1 << 47
    ]
    # QEMU prints each leaf's own bits: the same leaves, through the same lower tables.
    assert cr3_user_lines == upgd_user_lines
    assert len(cr3_user_lines) == 360
