"""The audit on hostile machines: alias bombs (one table linked at every level), cyclic tables,
rules given what they cannot show. Each must end in bounded work with a finding or a one-line
error, never a hang or a traceback.

Boundedness is asserted on what the work is made of (table reads, copies enumerated), not on
the clock: each test would take minutes (or hours) on the code it guards against, and fails
quickly there because the count is exceeded early.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NoReturn

import pytest
from depth import FULL
from support.audit import HOLE_4
from support.paths import DEMO

from gdbext import cli
from gdbext.addr import AddrRange
from gdbext.audit import views
from gdbext.audit.checkwx import CheckWx
from gdbext.audit.context import AuditContext, LeafSpan
from gdbext.audit.engine import run_audit
from gdbext.audit.frames import overlap_pairs
from gdbext.audit.model import Severity
from gdbext.audit.options import AuditOptions
from gdbext.audit.registry import audit_rules
from gdbext.audit.rules import alias_wx
from gdbext.audit.rules.heap_contract import heap_pieces
from gdbext.audit.views import ALIAS_SPANS
from gdbext.cpu import CR0_PG, CR0_WP, CR4_PAE, EFER_LMA, EFER_LME, EFER_NXE, CpuState
from gdbext.errors import AliasLimitError
from gdbext.flags import (
    ADDR_MASK_52,
    HUGE_PAGE,
    NO_EXECUTE,
    PRESENT,
    USER_ACCESSIBLE,
    WRITABLE,
)
from gdbext.frontend.commands import RootOptions, open_page_table
from gdbext.geometry import entry_span
from gdbext.mapper import read_table, read_u64, write_u64
from gdbext.plugin.host import Host
from gdbext.plugin.target import Target
from gdbext.x86.paging import X86PageTable
from gdbext.x86.records import LeafRun
from gdbext_sim.memory import SparsePhysMemory
from gdbext_sim.scenario import build_machine, load_scenario

RULES = audit_rules(Host.create())

#: The first PDPT entry of the bombs (its PD and PT are linked again everywhere).
BASE = 0x4000_0000


class CountingMapper:
    """A mapper that counts 4 KiB reads (table reads), and fails once there are too many."""

    def __init__(self, inner: Any, most: int) -> None:
        self.inner = inner
        self.most = most
        self.tables = 0

    def read(self, paddr: int, size: int) -> bytes:
        if size == 4096:
            self.tables += 1
            assert self.tables <= self.most, f"more than {self.most} table reads"
        data: bytes = self.inner.read(paddr, size)
        return data

    def write(self, paddr: int, data: bytes) -> None:
        self.inner.write(paddr, data)


def not_present_bomb(pdpt_links: int) -> Target:
    """A PT of 512 not-present, writable, executable entries, linked by every PD entry; that PD
    linked by ``1 + pdpt_links`` PDPT entries from :data:`BASE` on."""
    doc = {
        "levels": 4,
        "ram": "64M",
        "mappings": [
            {"vaddr": hex(BASE), "paddr": "0x100000", "size": "4K", "count": 512,
             "flags": ["WRITABLE"]},
        ],
        "entries": [
            {"vaddr": hex(BASE + i * 4096), "level": 1, "value": hex(0x100002 + i * 4096)}
            for i in range(512)
        ],
        "links": [
            {"vaddr": hex(BASE + 0x20_0000), "level": 2, "count": 511, "table_of": hex(BASE)},
            {"vaddr": hex(2 * BASE), "level": 3, "count": pdpt_links, "table_of": hex(BASE)},
        ],
    }  # fmt: skip
    return build_machine(doc).to_target()


def test_not_present_ranges_of_a_table_linked_everywhere_are_found_once_per_table() -> None:
    """The W+X check's not-present entries, listed for the low findings, once visited every
    link of every table again: 260,610 page tables of 512 entries for this machine (minutes);
    now each (table, level, path) once. The PT linked at two levels is one merged range."""
    links = 510
    target = not_present_bomb(links)
    pt = open_page_table(target, RootOptions())
    mapper = CountingMapper(target.mapper, most=20)
    ranges, more = CheckWx(X86PageTable(mapper, pt.root, 4)).not_present(pt.root, limit=256)
    pages = (1 + links) * 512 * 512
    assert not more and len(ranges) == 1
    (r,) = ranges
    assert (r.vaddr, r.end, r.pages, r.user) == (BASE, BASE + pages * 4096, pages, False)
    assert r.paddr == 0x100000 and r.paddr_end is None  # the same frames again: not contiguous
    # The walk to its first entry: PML4[0], PDPT[1], PD[0], PT[0] (not present).
    assert [(level, index) for level, _, index, _ in r.steps] == [(4, 0), (3, 1), (2, 0), (1, 0)]
    assert r.steps[-1][1:] == (leaf_table(target), 0, 0x100002)
    assert CheckWx(pt).count(pt.root).not_present == pages


def test_not_present_ranges_past_the_limit_stop_there() -> None:
    """Ranges that do not merge (every other PTE cleared): the limit holds, and says more
    follow."""
    target = not_present_bomb(3)
    pt = open_page_table(target, RootOptions())
    table = leaf_table(target)
    for i in range(1, 512, 2):
        write_u64(target.mapper, table + 8 * i, 0)
    counted = X86PageTable(CountingMapper(target.mapper, most=20), pt.root, 4)
    ranges, more = CheckWx(counted).not_present(pt.root, 10)
    assert more and len(ranges) == 10
    assert [(r.vaddr, r.pages) for r in ranges] == [(BASE + 2 * i * 4096, 1) for i in range(10)]


def leaf_table(target: Target) -> int:
    """The PT of a bomb (all its entries are not present: found from the PD entry)."""
    table = open_page_table(target, RootOptions()).root
    for level in (4, 3, 2):
        index = (BASE >> (12 + 9 * (level - 1))) & 0x1FF
        table = read_u64(target.mapper, table + 8 * index) & ADDR_MASK_52
    return table


# --- alias bombs: one PDPT, PD and PT linked by every entry of the level above ---------------

PML4, PDPT, PD, PT = 0x10000, 0x11000, 0x12000, 0x13000
RW, RO = 0x7, 0x5  # PRESENT | USER | WRITABLE, and without WRITABLE


def alias_bomb(alternate: Sequence[int] = (), top: Iterable[int] = range(512)) -> Target:
    """Every PML4 entry in ``top`` links one PDPT, whose 512 entries link one PD, whose 512
    entries link one PT with one W+X leaf (frame 0x200000): 2^27 copies of one page with
    ``top`` all of the PML4. At the levels in ``alternate``, every other link is read-only
    (so consecutive links differ, and collapse into no repetition)."""
    mem = SparsePhysMemory(64 << 20)
    write_u64(mem, PT, 0x200000 | 0x3)

    def flags(level: int, i: int) -> int:
        return RO if level in alternate and i % 2 else RW

    for i in range(512):
        write_u64(mem, PD + 8 * i, PT | flags(2, i))
        write_u64(mem, PDPT + 8 * i, PD | flags(3, i))
    for i in top:
        write_u64(mem, PML4 + 8 * i, PDPT | flags(4, i))
    cpu = CpuState(cr0=CR0_PG | CR0_WP, cr3=PML4, cr4=CR4_PAE, efer=EFER_LME | EFER_LMA | EFER_NXE)
    return Target("sim", "alias bomb", mem, [cpu], ram=mem.ram_ranges)


def no_copy_enumeration(monkeypatch: pytest.MonkeyPatch) -> None:
    def starts(self: LeafSpan) -> Iterator[int]:
        raise AssertionError(f"every copy of a span with {self.copies} copies enumerated")

    monkeypatch.setattr(LeafSpan, "starts", starts)


def test_the_kernel_image_of_a_bomb_does_not_enumerate_copies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``AuditContext.kernel_image`` once listed every copy of a span that meets the kernel
    image mapping: 2^26 of them here (minutes)."""
    no_copy_enumeration(monkeypatch)
    ctx = AuditContext(alias_bomb(), AuditOptions())
    assert ctx.kernel_image == [AddrRange(0x200000, 0x201000)]


def test_the_heap_pieces_of_a_bomb_are_the_copies_in_the_heap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``heap_pieces`` once listed every copy of a span that meets the heap."""
    no_copy_enumeration(monkeypatch)
    view = AuditContext(alias_bomb(), AuditOptions()).main
    heap = AddrRange(0x7F_FFE0_0000, 0x80_0060_0000)  # PD entries 511, then 0..2 of the next
    pieces = heap_pieces(view, heap)
    assert [(p.vaddr, p.end, p.paddr) for p in pieces] == [
        (va, va + 4096, 0x200000)
        for va in (0x7F_FFE0_0000, 0x80_0000_0000, 0x80_0020_0000, 0x80_0040_0000)
    ]


def test_copies_in_a_range_equal_the_filtered_copies() -> None:
    run = LeafRun(0x5000, 0x9000, 3, 4096, 0x9003, False, True, True)
    span = LeafSpan(run, ((5, 0x10000), (3, 0x100000), (2, 0x1000000)))
    starts = list(span.starts())
    assert len(starts) == span.copies == 30
    for lo in range(0, 0x1400000, 0x3000):
        for size in (1, 0x1000, 0x9000, 0x40000, 0x130000):
            want = [a for a in starts if a < lo + size and a + span.size > lo]
            assert list(span.starts_in(lo, lo + size)) == want, (hex(lo), hex(size))


def test_links_under_differing_permissions_at_two_levels_end_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Consecutive links that alternate read-only and writable do not collapse into one
    repeated span: 256 x 256 x 2 distinct spans per PML4 entry, 2^26 in all. The audit once
    walked every one (hours); now one walk per (table, permissions) and a bound on spans, with a
    one-line error. A quick run lowers the bound to 2^15 spans (the same error, a sixteenth of
    the work); the full run audits to the real one."""
    limit = ALIAS_SPANS if FULL else 1 << 15
    monkeypatch.setattr(views, "ALIAS_SPANS", limit)
    target = alias_bomb(alternate=(2, 3))
    counting = CountingMapper(target.mapper, most=5000)
    target = dataclasses.replace(target, mapper=counting)
    monkeypatch.setattr(cli, "open_target", lambda host, args, source=None: target)
    # One audit to the limit (seconds): ``cli.run`` lets the error out, as ``cli.main`` gets it.
    with pytest.raises(AliasLimitError) as info:
        cli.run(["audit", "--backend", "sim"], Host.create(), io.StringIO())
    assert (info.value.limit, info.value.exit_status) == (limit, 2)
    assert "(an alias bomb?)" in str(info.value)
    monkeypatch.setattr(cli, "run", lambda *args, **kwargs: raise_(info.value))
    assert cli.main(["audit", "--backend", "sim"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gdbext: the audit passed {limit} leaf runs") and err.count("\n") == 1


def raise_(error: Exception) -> NoReturn:
    raise error


def test_alias_wx_pairs_bundles_not_mappings(monkeypatch: pytest.MonkeyPatch) -> None:
    """One kernel W+X frame mapped 2^27 times, as 3,072 spans (every other PD link read-only:
    1,536 spans writable and executable, 1,536 read-only and executable): alias-wx once paired
    every writable span with every executable one (4.7 M pairs, each checked against a list:
    minutes). Now the spans of one frame range and permissions are one bundle, and each kind
    is one finding naming every mapping's copies."""
    pairs = 0
    sweep = overlap_pairs

    def counted(
        left: Sequence[LeafSpan], right: Sequence[LeafSpan]
    ) -> Iterator[tuple[LeafSpan, LeafSpan, int, int]]:
        nonlocal pairs
        for pair in sweep(left, right):
            pairs += 1
            assert pairs <= 100, "pairs of mappings, not of bundles"
            yield pair

    monkeypatch.setattr(alias_wx, "overlap_pairs", counted)
    result = run_audit(alias_bomb(alternate=(2,)), AuditOptions(rules=("alias-wx",)), RULES)
    half = 1 << 26
    rwx, rx = result.findings
    assert (rwx.severity, rwx.paddr, rwx.paddr_end, rwx.pages) == (
        Severity.HIGH,
        0x200000,
        0x201000,
        1,
    )
    assert rwx.message == (
        "kernel code writable through an alias: frames 0x200000-0x201000 are writable and "
        f"executable at 0x0-0x1000 and {half - 1} more mappings up to 0xffffffffffc01000"
    )
    assert rx.message == (
        "kernel code writable through an alias: frames 0x200000-0x201000 executable at "
        f"0x200000-0x201000 and {half - 1} more mappings up to 0xffffffffffe01000 are "
        f"writable at 0x0-0x1000 and {half - 1} more mappings up to 0xffffffffffc01000"
    )
    assert (
        "executable at ... 1528 more" in rx.evidence and "writable at ... 1528 more" in rx.evidence
    )


# --- cyclic tables ---------------------------------------------------------------------------


def mmu_wx_pages(mapper: Any, table: int, level: int, rw: bool, nx: bool) -> int:
    """W+X 4 KiB pages the MMU maps below ``table`` read as a level-``level`` table (a plain
    recursive count, every link followed: for small machines)."""
    pages = 0
    for e in read_table(mapper, table):
        if not e & PRESENT:
            continue
        e_rw, e_nx = rw and bool(e & WRITABLE), nx or bool(e & NO_EXECUTE)
        if level == 1 or (level in (2, 3) and e & HUGE_PAGE):
            pages += entry_span(level) // 4096 if e_rw and not e_nx else 0
        else:
            pages += mmu_wx_pages(mapper, e & ADDR_MASK_52, level - 1, e_rw, e_nx)
    return pages


def test_wx_pages_through_a_recursive_entry_are_a_finding() -> None:
    """The kernel's check counts what a recursive entry maps (the walker follows it), and the
    verdict once said FAILED with no wx finding to show where: the shared walk does not follow
    it. Now one high finding per recursive entry, with the MMU's own count of W+X pages there;
    one in the guard hole is a finding the verdict does not count, a read-only one none."""
    target = load_scenario(DEMO).to_target()
    root = open_page_table(target, RootOptions()).root
    write_u64(target.mapper, root + 8 * 300, root | PRESENT | WRITABLE)
    write_u64(target.mapper, root + 8 * 260, root | PRESENT | WRITABLE | USER_ACCESSIBLE)
    write_u64(target.mapper, root + 8 * 400, root | PRESENT)  # read-only: not W+X
    result = run_audit(target, AuditOptions(rules=("wx",)), RULES)
    pages = mmu_wx_pages(target.mapper, root, 3, True, False)
    assert pages > 0
    assert result.summary["wx"] == [
        f"x86/mm: Checked W+X mappings: FAILED, {pages} W+X pages found."
    ]
    found = [f for f in result.findings if "recursive" in f.message]
    assert [(f.vaddr, f.end, f.pages, f.user, f.severity) for f in found] == [
        (0xFFFF_8200_0000_0000, 0xFFFF_8280_0000_0000, pages, True, Severity.HIGH),
        (0xFFFF_9600_0000_0000, 0xFFFF_9680_0000_0000, pages, False, Severity.HIGH),
    ]
    assert found[1].message == (
        f"{pages} kernel pages writable and executable through a recursive PML4 entry (page "
        "tables and the pages they map, as data)"
    )
    assert found[1].evidence[0] == f"PML4[300] @0x{root:x} = 0x{root | 3:x}"
    assert "guard hole" in found[0].evidence[-1] and "guard hole" not in found[1].evidence[-1]
    # Every W+X page the verdict counts is in a finding.
    assert sum(f.pages for f in result.findings if f.vaddr not in HOLE_4) == pages


def test_a_recursive_entry_exposes_tables_inside_large_pages_it_reaches() -> None:
    """A PDPT entry linking its own PDPT: the MMU reads the PDPT as a PD, so its 1 GiB entry
    becomes a 2 MiB page over frames 0-2 MiB, which hold every table here, the PML4 too (which
    nothing else below the PDPT exposes). A large page under recursion is data, not a link:
    taken for one, the PML4 went missing from the finding."""
    mem = SparsePhysMemory(64 << 20)
    write_u64(mem, PML4, PDPT | 0x3)
    write_u64(mem, PDPT, PD | 0x3)
    write_u64(mem, PDPT + 8 * 1, 0 | HUGE_PAGE | 0x3 | NO_EXECUTE)  # 1 GiB at frame 0
    write_u64(mem, PDPT + 8 * 5, PDPT | 0x3)  # the recursive entry
    write_u64(mem, PD, PT | 0x3)
    write_u64(mem, PT, 0x200000 | 0x3 | NO_EXECUTE)
    cpu = CpuState(cr0=CR0_PG | CR0_WP, cr3=PML4, cr4=CR4_PAE, efer=EFER_LME | EFER_LMA | EFER_NXE)
    target = Target("sim", "recursive PDPT entry", mem, [cpu], ram=mem.ram_ranges)
    result = run_audit(target, AuditOptions(rules=("pt-writable-alias",)), RULES)
    (f,) = [f for f in result.findings if f.message.startswith("recursive")]
    assert (f.vaddr, f.end, f.pages, f.severity) == (5 << 30, 6 << 30, 4, Severity.HIGH)
    assert f.evidence[-1] == (
        "page tables mapped as data (rwx kern): PML4 0x10000, PDPT 0x11000, PD 0x12000, PT 0x13000"
    )
