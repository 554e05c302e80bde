"""Helpers shared by the tests of the audit rules: simulated machines built from scenario
documents, the audit of them, findings in brief, and QEMU's ``info tlb`` of the real dumps.

Three families, by how a test names its rules: by id through the built-in registry
(:func:`audit`; ``wx``, ``cpu-hardening``, ``global-user``), one rule object
(:func:`audit_rule`; ``user-kernel``, ``pti``, ``reserved-bits``), or a list of rule objects
on a simulator machine (:func:`audit_sim`; ``alias-wx``, ``pt-writable-alias``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from gdbext.addr import AddrRange
from gdbext.audit.context import AuditContext
from gdbext.audit.engine import AuditResult, run_audit
from gdbext.audit.model import Finding, Severity
from gdbext.audit.options import AuditOptions
from gdbext.audit.registry import audit_rules
from gdbext.audit.rule import AuditRule, FunctionRule
from gdbext.audit.rules.pti import RULES as PTI_RULES
from gdbext.audit.rules.reserved_bits import RULES as RESERVED_RULES
from gdbext.cpu import (
    CR0_PG,
    CR0_WP,
    CR4_PAE,
    EFER_LMA,
    EFER_NXE,
    CpuState,
)
from gdbext.flags import (
    NO_EXECUTE,
    USER_ACCESSIBLE,
    WRITABLE,
)
from gdbext.frontend.commands import RootOptions
from gdbext.mapper import read_u64, write_u64
from gdbext.plugin.facts import KernelFacts, VmcoreFacts
from gdbext.plugin.host import Host
from gdbext.plugin.target import Target
from gdbext.x86.paging import SIZE_2M, SIZE_4K, X86PageTable
from gdbext_sim.memory import SparsePhysMemory, TopDownFrameAllocator
from gdbext_sim.scenario import SimMachine, build_machine, load_scenario
from support.goldens import tlb_lines
from support.paths import DEMO, SCENARIOS
from support.scenario import sized

# --- rules by id -----------------------------------------------------------------------------

RULES = audit_rules(Host.create())
#: Linux's guard hole with 4-level paging: 16 PML4 entries from the start of the kernel half.
HOLE_4 = AddrRange(0xFFFF_8000_0000_0000, 0xFFFF_8800_0000_0000)


def audit(target: Target, *rules: str, root: RootOptions | None = None) -> AuditResult:
    options = AuditOptions(root=root or RootOptions(), rules=rules or None)
    return run_audit(target, options, RULES)


W, U, G, NX = "WRITABLE", "USER_ACCESSIBLE", "GLOBAL", "NO_EXECUTE"


def machine(mappings: list[dict[str, object]], **doc: object) -> Target:
    return build_machine({"levels": 4, "ram": "256M", "mappings": mappings, **doc}).to_target()


def pd_entry_slot(pt: X86PageTable, vaddr: int) -> int:
    """Physical address of the PD (level 2) entry that maps ``vaddr``."""
    steps = {s.level: s for s in pt.translate(vaddr).steps}
    return steps[2].table + 8 * steps[2].index


#: The kernel text's address in the simulated machines.
TEXT_VA = 0xFFFF_FFFF_8100_0000


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
        dataclasses.replace(
            target, facts=KernelFacts(vmcoreinfo_source=VmcoreFacts({}, kernel_root=kernel_root))
        ),
        kernel_root,
        process_root,
    )


def without_efer(target: Target, **regs: int | None) -> Target:
    """``target`` whose CPUs' EFER is unknown (as in QEMU's ELF dumps), ``regs`` replaced."""
    cpus = [dataclasses.replace(c, efer=None, **regs) for c in target.cpus]
    return dataclasses.replace(target, cpus=cpus)


# --- one rule object -------------------------------------------------------------------------

DumpFactory = Callable[[str], Path]
PTI = PTI_RULES[0]
RESERVED = RESERVED_RULES[0]
H, M, L, INFO = Severity.HIGH, Severity.MEDIUM, Severity.LOW, Severity.INFO


def audit_rule(target: Target, rule: AuditRule, root: RootOptions | None = None) -> AuditResult:
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


def mapping(
    vaddr: int, paddr: int, size: str, flags: Sequence[str], count: int = 1
) -> dict[str, Any]:
    """One scenario ``mappings`` element."""
    return sized(vaddr, paddr, size, count, *flags)


#: The committed real dumps.
NAMES = ["4level", "kaslr-pti", "la57"]


def golden(name: str, kind: str) -> list[tuple[int, int, str]]:
    """``(vaddr, paddr, flags)`` of each line of a QEMU ``info tlb`` golden."""
    return list(tlb_lines(f"{name}.{kind}"))


# --- rule objects on a simulator machine -----------------------------------------------------

DIRECT = 0xFFFF_8880_0000_0000
TEXT = 0xFFFF_FFFF_8100_0000
VMALLOC = 0xFFFF_C900_0000_0000
MB = 1 << 20


#: 64 MiB of RAM in the direct map, writable, no-execute.
DIRECT_RW = sized(DIRECT, 0, "2M", 32, "WRITABLE", "NO_EXECUTE", "GLOBAL")
#: 16 pages of kernel text, read-only and executable.
KERNEL_TEXT = sized(TEXT, 0x1000000, "4K", 16, "GLOBAL")


def sim_machine(mappings: Sequence[dict[str, Any]], **extra: Any) -> SimMachine:
    return build_machine({"levels": 4, "ram": "64M", "mappings": list(mappings), **extra})


def audit_sim(
    target: Target | SimMachine, rules: Any, root: RootOptions | None = None
) -> AuditResult:
    if isinstance(target, SimMachine):
        target = target.to_target()
    return run_audit(target, AuditOptions(root=root or RootOptions()), rules)


#: The roots the real dumps are audited from.
KERNEL_ROOTS = (RootOptions(), RootOptions(kernel=True))


def hint(target: Target, name: str) -> int:
    """An integer fact of a dump (0 when absent)."""
    value = getattr(target.facts, name)
    assert value is None or isinstance(value, int)
    return value or 0


# --- the framework and the context -----------------------------------------------------------


def demo() -> Target:
    return load_scenario(DEMO).to_target()


def wx_machine() -> Target:
    """Two kernel pages W+X at 0xffffffff81000000 -> 0x1000000, nothing else."""
    doc = {
        "levels": 4,
        "ram": "64M",
        "mappings": [
            {"vaddr": "0xffffffff81000000", "paddr": "0x1000000", "size": "4K", "count": 2,
             "flags": ["WRITABLE"]},
        ],
    }  # fmt: skip
    return build_machine(doc).to_target()


def rule(rule_id: str, func: Callable[[AuditContext], Iterable[Finding]]) -> FunctionRule:
    return FunctionRule(rule_id, Severity.LOW, f"the {rule_id} test rule", func)
