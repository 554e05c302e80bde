"""Rule ``global-user``: user pages marked GLOBAL, by their effective user access, in one table
and in both halves of a PTI pair."""

from __future__ import annotations

from support.audit import NX, G, U, W, audit, machine, pd_entry_slot
from support.pti import build_pti_machine
from support.scenario import mapping as m

from gdbext.audit.model import Severity
from gdbext.flags import (
    GLOBAL,
    USER_ACCESSIBLE,
)
from gdbext.mapper import read_u64, write_u64
from gdbext.x86.paging import SIZE_4K, X86PageTable

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
