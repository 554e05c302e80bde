"""The audit's context (:class:`gdbext.audit.context.AuditContext`): what a rule is given, read
only when asked (physical facts, the frame index, evidence, heap, views sharing walks), checked
against the scenarios' own numbers."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from support.audit import demo, rule, wx_machine
from support.paths import DEMO, ROOT

from gdbext.addr import AddrRange
from gdbext.audit.context import AuditContext
from gdbext.audit.engine import run_audit
from gdbext.audit.model import RuleSkipped, Severity
from gdbext.audit.options import AuditOptions
from gdbext.audit.registry import audit_rules
from gdbext.audit.views import AuditView
from gdbext.frontend.commands import HeapOptions, RootOptions, heap
from gdbext.mapper import read_u64, write_u64
from gdbext.plugin.host import Host
from gdbext.x86.paging import SIZE_4K, X86PageTable
from gdbext.x86.records import LeafRun
from gdbext_sim.scenario import load_scenario

# --- the context -----------------------------------------------------------------------------


class CountingMapper:
    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.reads = 0

    def read(self, paddr: int, size: int) -> bytes:
        self.reads += 1
        return self.inner.read(paddr, size)  # type: ignore[attr-defined, no-any-return]

    def write(self, paddr: int, data: bytes) -> None:
        raise AssertionError("an audit never writes")


def test_a_rule_not_selected_costs_nothing() -> None:
    mapper = CountingMapper(demo().mapper)
    target = dataclasses.replace(demo(), mapper=mapper)
    run_audit(target, AuditOptions(rules=("cpu-hardening",)), audit_rules(Host.create()))
    assert mapper.reads == 0
    run_audit(target, AuditOptions(rules=("wx", "global-user")), audit_rules(Host.create()))
    assert mapper.reads > 0


def test_context_physical_facts_of_the_demo() -> None:
    machine = load_scenario(DEMO)
    ctx = AuditContext(machine.to_target(), AuditOptions())
    assert ctx.ram == [AddrRange(0, 256 << 20)]
    assert ctx.in_ram(0x100_0000, 0x200_0000) is True and ctx.in_ram(256 << 20) is False
    assert ctx.direct_map == AddrRange(0xFFFF_8880_0000_0000, 0xFFFF_8880_1000_0000)
    # Kernel text, rodata, data: 0x1000000-0x1200000, -0x1300000, -0x1400000.
    assert ctx.kernel_image == [AddrRange(0x100_0000, 0x140_0000)]
    # Every frame the simulator allocated for tables, with the root at level 4.
    assert set(ctx.main.tables) == set(machine.allocator.allocated)
    assert ctx.main.tables[machine.page_table.root] == 4
    pt = machine.page_table
    for vaddr in (0x40_0000, 0xFFFF_FFFF_8130_0000, 0xFFFF_FF00_0001_0000):
        steps = pt.translate(vaddr).steps
        for step in steps[1:]:
            assert ctx.main.tables[step.table] == step.level
    assert ctx.is_kernel_half(0xFFFF_8000_0000_0000) and not ctx.is_kernel_half(0x7FFF_FFFF_F000)
    assert ctx.is_user_half(0x7FFF_FFFF_F000) and not ctx.is_user_half(0x8000_0000_0000)
    assert ctx.guard_hole == AddrRange(0xFFFF_8000_0000_0000, 0xFFFF_8800_0000_0000)
    assert ctx.nxe and ctx.levels == 4 and ctx.cpu == machine.cpus[0] and ctx.pti is None


def test_context_guard_hole_with_five_levels() -> None:
    target = load_scenario(ROOT / "fixtures" / "scenarios" / "la57.json").to_target()
    ctx = AuditContext(target, AuditOptions())
    assert ctx.guard_hole == AddrRange(0xFF00_0000_0000_0000, 0xFF10_0000_0000_0000)


def test_frame_index_finds_every_virtual_address_of_a_frame() -> None:
    machine = load_scenario(DEMO)
    view = AuditContext(machine.to_target(), AuditOptions()).main
    for frame in (0x100_0000, 0x100_5000, 0x200_0000, 0x130_0000, 0x4000_0000):
        got = set()
        for span in view.frame_index.overlapping(frame, frame + SIZE_4K):
            for start in span.starts():
                got.add(start + frame - span.paddr)
        want = {
            mp.vaddr + frame - mp.paddr
            for mp in machine.page_table.iter_mappings()
            if mp.paddr <= frame < mp.paddr + mp.page_size
        }
        assert got == want, hex(frame)
        if frame == 0x200_0000:
            # The ESPFIX-like frame: two leaves of one table, linked 63 more times,
            assert len(want) == 129  # and the direct map
    espfix = {s.vaddr for s in view.frame_index.overlapping(0x200_0000, 0x200_1000)}
    assert 0xFFFF_FF00_0000_0000 in espfix
    groups = list(view.frame_index.groups())
    assert sum(len(g) for g in groups) == len(view.spans)
    for a, b in itertools.pairwise(groups):
        assert max(s.paddr_end for s in a) <= b[0].paddr


def test_context_evidence_and_finding() -> None:
    target = wx_machine()
    ctx = AuditContext(target, AuditOptions())
    pt = X86PageTable.from_cpu(target.mapper, target.cpus[0])
    t = pt.translate(0xFFFF_FFFF_8100_1000)
    assert ctx.evidence(ctx.main, 0xFFFF_FFFF_8100_1000) == tuple(
        f"{n}[{s.index}] @0x{s.table:x} = 0x{s.entry:x}"
        for n, s in zip(("PML4", "PDPT", "PD", "PT"), t.steps, strict=True)
    )
    assert ctx.evidence(ctx.main, 0x1000) == (
        "0x1000: 0x1000 is not mapped: its PML4 entry is not present (value 0x0)",
    )
    r = rule("r", lambda c: ())
    span = ctx.main.spans[0]
    f = ctx.finding(r, ctx.main, "m", span=span, evidence=["extra"])
    assert (f.vaddr, f.end, f.paddr, f.paddr_end, f.pages, f.root, f.severity) == (
        0xFFFF_FFFF_8100_0000,
        0xFFFF_FFFF_8100_2000,
        0x100_0000,
        0x100_2000,
        2,
        "cr3",
        Severity.LOW,
    )
    assert f.evidence[-1] == "extra" and len(f.evidence) == 5
    assert isinstance(ctx.main, AuditView)


def test_context_heap_only_with_heap_options() -> None:
    target = demo()
    ctx = AuditContext(target, AuditOptions())
    with pytest.raises(RuleSkipped, match="no heap options"):
        ctx.heap()
    options = HeapOptions(memmap="bootinfo", at=0x1000)
    ctx = AuditContext(target, AuditOptions(heap=options))
    assert ctx.heap() == heap(target, options)


def test_context_views_share_walks() -> None:
    ctx = AuditContext(demo(), AuditOptions(root=RootOptions(cpu=0)))
    main = ctx.main
    again = ctx.view_at(main.pt.root, "kernel")
    assert again.name == "kernel" and again.walk is main.walk
    assert ctx.kernel_view is main  # no kernel_root hint, no PTI


def test_kernel_view_shares_the_kernel_half_of_a_process_walk() -> None:
    from support.audit import two_roots

    target, kernel_root, process_root = two_roots()
    ctx = AuditContext(target, AuditOptions())
    kernel = ctx.kernel_view
    assert kernel.name == "kernel" and kernel.pt.root == kernel_root
    half = AddrRange(0xFFFF_8000_0000_0000, 1 << 64)
    fresh = list(X86PageTable(target.mapper, kernel_root).iter_runs(half, aliases="collapse"))
    assert [(r.vaddr, r.paddr, r.count) for r in kernel.leaf_runs] == [
        (r.vaddr, r.paddr, r.count) for r in fresh if isinstance(r, LeafRun)
    ]
    assert kernel.records[0] is ctx.main.records[-len(kernel.records)]  # taken, not walked
    assert ctx.direct_map == AddrRange(0xFFFF_8880_0000_0000, 0xFFFF_8880_0400_0000)
    assert ctx.kernel_image == [AddrRange(0x100_0000, 0x100_2000)]
    # A kernel half that differs (the process links the direct map's table again) is walked.
    write_u64(
        target.mapper, process_root + 8 * 300, read_u64(target.mapper, process_root + 8 * 273)
    )
    ctx = AuditContext(target, AuditOptions())
    assert ctx.kernel_view.records[0] is not ctx.main.records[-len(ctx.kernel_view.records)]
    assert [(r.vaddr, r.count) for r in ctx.kernel_view.leaf_runs] == [
        (r.vaddr, r.count) for r in fresh if isinstance(r, LeafRun)
    ]
