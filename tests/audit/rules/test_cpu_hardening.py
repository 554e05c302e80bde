"""Rule ``cpu-hardening``: CR0.WP, CR4.SMEP and SMAP, EFER.NXE per CPU, and NXE inferred from
the tables where EFER is unknown (QEMU's ELF dumps)."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence

from support.audit import NX, TEXT_VA, W, audit, machine, pd_entry_slot, without_efer
from support.scenario import mapping as m

from gdbext import cli
from gdbext.audit.context import AuditContext
from gdbext.audit.model import Severity
from gdbext.audit.options import AuditOptions
from gdbext.audit.rules.wx import verdict_line
from gdbext.cpu import (
    CR0_PG,
    CR0_WP,
    CR4_PAE,
    CR4_SMAP,
    CR4_SMEP,
    EFER_LMA,
    EFER_NXE,
    CpuState,
)
from gdbext.flags import (
    NO_EXECUTE,
    PRESENT,
    WRITABLE,
)
from gdbext.frontend.commands import RootOptions
from gdbext.mapper import write_u64
from gdbext.plugin.host import Host
from gdbext.plugin.target import Target
from gdbext.x86.paging import X86PageTable
from gdbext_sim.memory import SparsePhysMemory


def test_wx_without_nxe_every_writable_page_is_wx() -> None:
    mappings = [
        m(0xFFFF_8880_0000_0000, 0, 2, W, size="2M"),
        m(0xFFFF_FFFF_8100_0000, 0x100_0000, 4),
    ]
    target = machine(mappings, nxe=False)
    result = audit(target, "wx")
    assert result.summary["wx"] == [verdict_line(1024)]
    assert [f.pages for f in result.findings] == [1024]


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


NX_IN_USE = [m(0xFFFF_8880_0000_0000, 0, 4, W, NX, size="2M"), m(TEXT_VA, 0x100_0000, 4)]
NO_NX = [m(0xFFFF_8880_0000_0000, 0, 4, W, size="2M"), m(TEXT_VA, 0x100_0000, 4)]


def test_cpu_hardening_does_not_report_unknown_registers_as_off() -> None:
    # A QEMU ELF dump has no EFER: NXE is unknown, and inferred on from the NX bits in use.
    good = {"cr0": GOOD.cr0, "cr4": GOOD.cr4}
    result = audit(without_efer(machine(NX_IN_USE), **good), "cpu-hardening")
    assert result.findings == []
    assert result.summary["cpu-hardening"] == {"unknown": {"EFER": "CPU 0"}}
    assert result.summary["nxe"] == "inferred on: NX bits in use"
    nothing = audit(without_efer(machine(NX_IN_USE), cr0=None, cr4=None), "cpu-hardening")
    assert nothing.skipped == {"cpu-hardening": "the target knows none of CR0, CR4 and EFER"}


def test_cpu_hardening_reports_nxe_off_inferred_from_tables_without_nx() -> None:
    target = without_efer(machine(NO_NX), cr0=GOOD.cr0, cr4=GOOD.cr4)
    result = audit(target, "cpu-hardening")
    (f,) = result.findings
    assert f.message == (
        "EFER.NXE is off (inferred) on CPU 0: no page is no-execute: every writable page is W+X"
    )
    root = target.cpus[0].root
    assert f.evidence == (
        "EFER.NXE inferred off: no entry uses NX",
        f"EFER unknown; no present entry reachable from 0x{root:x} has NX "
        "(2 leaf runs, 5 tables above the page tables)",  # PML4, 2 PDPTs, 2 PDs
    )
    assert result.summary["nxe"] == "inferred off: no entry uses NX"
    # Knowing none of the registers, the inference still reports it.
    bare = audit(without_efer(machine(NO_NX), cr0=None, cr4=None), "cpu-hardening")
    assert [g.message for g in bare.findings] == [f.message] and bare.skipped == {}
    # EFER known: what it says, nothing inferred.
    assert str(audit(machine(NO_NX), "cpu-hardening").summary["nxe"]).startswith("on: EFER 0x")


def test_an_empty_table_does_not_say_nxe_is_off() -> None:
    """A table that maps nothing (``--cr3`` of a zero page, ``--user-pgd`` without PTI) once
    gave "EFER.NXE is off (inferred)", a medium finding that failed ``--fail-on medium``: no
    entry at all says nothing about NX."""
    target = without_efer(machine(NO_NX), cr0=GOOD.cr0, cr4=GOOD.cr4)
    result = audit(target, "cpu-hardening", root=RootOptions(cr3=0x300_0000))  # zeros
    assert result.findings == []
    assert result.summary["nxe"] == (
        "unknown (taken as on): EFER unknown and the table maps nothing"
    )
    out = io.StringIO()
    argv = ["audit", "--rules", "cpu-hardening", "--cr3", "0x3000000"]
    cli.run(argv, Host.create(), out, target)
    assert "EFER.NXE unknown (taken as on): EFER unknown and the table maps nothing\n" in (
        out.getvalue()
    )


def test_nxe_inferred_on_from_an_nx_entry_above_the_leaves() -> None:
    """NX only in a table entry whose subtree maps nothing (an empty page table) still shows
    NXE in use."""
    target = machine(NO_NX)
    pt = X86PageTable.from_cpu(target.mapper, target.cpus[0])
    slot = pd_entry_slot(pt, TEXT_VA)
    empty = 0x300_0000 | PRESENT | WRITABLE | NO_EXECUTE  # a frame of zeros
    write_u64(target.mapper, slot + 8, empty)
    ctx = AuditContext(without_efer(target), AuditOptions())
    state = ctx.nxe_state
    assert (state.on, state.inferred, state.reason) == (True, True, "NX bits in use")
    step = pt.translate(TEXT_VA).steps[-2]
    assert state.evidence == (f"PD[{step.index + 1}] @0x{step.table:x} = 0x{empty:x} has NX",)
    # A leaf's NX is found from the walk, with the address it maps.
    ctx = AuditContext(without_efer(machine(NX_IN_USE)), AuditOptions())
    (evidence,) = ctx.nxe_state.evidence
    assert evidence.endswith("has NX (on the path to 0xffff888000000000)")
    assert evidence.startswith("PD[0] @0x")


def test_cpu_hardening_skipped_without_cpu_state() -> None:
    result = audit(cpus_target([]), "cpu-hardening", root=RootOptions(cr3=0x1000))
    assert result.skipped == {"cpu-hardening": "the target has no CPU state"}
    assert result.rules_run == []
