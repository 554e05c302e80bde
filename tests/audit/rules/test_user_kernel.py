"""Rule ``user-kernel``: supervisor pages in the user half and user pages in the kernel half,
by effective permissions, in one table and across a PTI pair; on the real dumps, what QEMU's
``info tlb`` shows."""

from __future__ import annotations

import pytest
from support.audit import (
    NAMES,
    PTI,
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
from support.paths import KERNELS, SCENARIOS
from support.pti import (
    KERNEL_PGD,
    USER_PGD,
    USER_TEXT,
    build_pti_machine,
)

from gdbext.audit.model import Severity
from gdbext.audit.registry import audit_rules
from gdbext.audit.rules.user_kernel import RULES as USER_KERNEL_RULES
from gdbext.flags import NO_EXECUTE, USER_ACCESSIBLE, WRITABLE
from gdbext.frontend.commands import RootOptions
from gdbext.linux.layout import CPU_ENTRY_AREA_BASE
from gdbext.mapper import read_u64, write_u64
from gdbext.plugin.host import Host
from gdbext.x86.paging import SIZE_4K
from gdbext_dump.dump import open_dump
from gdbext_sim.scenario import build_machine, load_scenario

USER_KERNEL = USER_KERNEL_RULES[0]


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
