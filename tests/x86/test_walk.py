"""Walks of the paging engine (:meth:`~gdbext.x86.paging.X86PageTable.iter_runs`,
:meth:`~gdbext.x86.paging.X86PageTable.iter_mappings`).

Every expectation is computed here, independently of the engine, over the hand-built tables of
:mod:`support.pagetables`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from itertools import pairwise

import pytest
from support.pagetables import (
    ADDR,
    G1,
    K4,
    M2,
    NX,
    PS,
    ROOT,
    Env,
    G,
    P,
    Ram,
    U,
    W,
    idx,
    v4,
)

from gdbext.addr import AddrRange
from gdbext.errors import (
    TableOutsideRamError,
    WalkLimitError,
    WalkOptionError,
)
from gdbext.permfilter import PermFilter
from gdbext.x86.paging import X86PageTable
from gdbext.x86.records import (
    AliasRun,
    Anomaly,
    LeafRun,
    Mapping,
    WalkRecord,
)


def test_iter_mappings_order_and_values() -> None:
    env = Env()
    layout = [  # (va, leaf level, leaf entry), deliberately not in VA order
        (v4(511, 510), 3, 0x0 | P | PS | G),
        (v4(0, 1, 7), 2, 0x4000_0000 | P | PS | W),
        (v4(256, 0, 0, 0), 1, 0x7000 | P),
        (v4(0, 0, 0, 5), 1, 0x5000 | P | W | U),
        (v4(255, 511), 3, 0x1_0000_0000 | P | PS | NX | W | U),
        (v4(0, 0, 0, 6), 1, 0x6000 | P | W | U | NX),
    ]
    for va, level, leaf in layout:
        env.link(va, level, leaf)
    got = list(env.pt.iter_mappings())
    size = {1: K4, 2: M2, 3: G1}
    expected = [
        Mapping(va, leaf & ADDR, size[level], leaf, bool(leaf & U), bool(leaf & W), not leaf & NX)
        for va, level, leaf in sorted(layout)
    ]
    assert got == expected
    assert [m.vaddr for m in got] == [
        0x0000_0000_0000_5000,
        0x0000_0000_0000_6000,
        0x0000_0000_40E0_0000,
        0x0000_7FFF_C000_0000,
        0xFFFF_8000_0000_0000,
        0xFFFF_FFFF_8000_0000,
    ]
    # Contiguous 4 KiB leaves with different flags are separate runs.
    runs = list(env.pt.iter_runs())
    assert all(type(r) is LeafRun for r in runs)
    assert [r.count for r in runs if isinstance(r, LeafRun)] == [1, 1, 1, 1, 1, 1]


def test_iter_runs_groups_contiguous_leaves() -> None:
    env = Env()
    for i in range(10):
        env.link(v4(0, 0, 0, i), 1, (0x100_0000 + i * K4) | P | W)
    env.link(v4(0, 0, 0, 10), 1, 0x200_0000 | P | W)  # breaks physical contiguity
    env.link(v4(0, 0, 0, 11), 1, 0x200_1000 | P)  # different flags
    runs = list(env.pt.iter_runs())
    assert runs == [
        LeafRun(0, 0x100_0000, 10, K4, 0x100_0000 | P | W, False, True, True),
        LeafRun(10 * K4, 0x200_0000, 1, K4, 0x200_0000 | P | W, False, True, True),
        LeafRun(11 * K4, 0x200_1000, 1, K4, 0x200_1000 | P, False, False, True),
    ]
    sub = list(env.pt.iter_runs(AddrRange(3 * K4, 5 * K4)))
    assert sub == [LeafRun(3 * K4, 0x100_3000, 2, K4, 0x100_3000 | P | W, False, True, True)]


@pytest.mark.parametrize("hole", [None, 0, 100, 511])
def test_iter_runs_full_table(hole: int | None) -> None:
    """512 contiguous leaves make one run; one odd entry anywhere splits it."""
    env = Env()
    path = env.link(v4(0, 0, 0, 0), 1, 0)
    pt = path[3]
    for i in range(512):
        env.ram.set(pt, i, (0x40_0000 + i * K4) | P | W)
    if hole is not None:
        env.ram.set(pt, hole, 0x90_0000 | P | W)
    runs = [(r.vaddr, r.paddr, r.count) for r in env.pt.iter_runs() if isinstance(r, LeafRun)]
    if hole is None:
        assert runs == [(0, 0x40_0000, 512)]
    else:
        expected = [(0, 0x40_0000, hole), (hole * K4, 0x90_0000, 1)]
        expected.append(((hole + 1) * K4, 0x40_0000 + (hole + 1) * K4, 511 - hole))
        assert runs == [r for r in expected if r[2]]
    assert [(m.vaddr, m.paddr) for m in env.pt.iter_mappings()] == [
        (i * K4, 0x90_0000 if i == hole else 0x40_0000 + i * K4) for i in range(512)
    ]


def test_iter_mappings_at_top_of_physical_space() -> None:
    """Leaves whose frames end at 2^52 must not run on into the flag bits of the next entry."""
    env = Env()
    top = (1 << 52) - K4
    env.link(v4(0, 0, 0, 0), 1, (top - K4) | P)
    env.link(v4(0, 0, 0, 1), 1, top | P)
    # Bit 52 is a software flag, not an address bit: this entry maps frame 0.
    env.link(v4(0, 0, 0, 2), 1, (1 << 52) | P)
    got = [(m.vaddr, m.paddr) for m in env.pt.iter_mappings()]
    assert got == [(0, top - K4), (K4, top), (2 * K4, 0)]
    for va, pa in got:
        assert env.pt.translate(va).paddr == pa


def test_iter_mappings_range_pruning_reads_only_the_path() -> None:
    env = Env()
    a = env.link(v4(0, 0, 0, 0), 1, 0x10_0000 | P)
    b = env.link(v4(0, 0, 1, 1), 1, 0x20_1000 | P)
    for i in (0, 2, 3, 5):
        env.link(v4(0, 0, 1, i), 1, (0x20_0000 + i * K4) | P)
    c = env.link(v4(1, 0, 0, 0), 1, 0x30_0000 | P)
    d = env.link(v4(300, 5, 0, 0), 1, 0x40_0000 | P)
    env.link(v4(0, 3), 3, 0xC000_0000 | P | PS)
    assert len({*a, *b, *c, *d}) == 1 + 3 + 1 + 3 + 3  # root; PDPT/PD shared by a and b
    env.clear_records()
    lo = v4(0, 0, 1, 1)
    got = list(env.pt.iter_mappings(AddrRange(lo, lo + 2 * K4)))
    assert [(m.vaddr, m.paddr) for m in got] == [(lo, 0x20_1000), (lo + K4, 0x20_2000)]
    assert env.ram.frames_read() == Counter({ROOT: 1, b[1]: 1, b[2]: 1, b[3]: 1})
    # A range inside a 1 GiB leaf reports the leaf and reads only root and PDPT.
    env.clear_records()
    inside = v4(0, 3, 100, 7)
    got = list(env.pt.iter_mappings(AddrRange(inside, inside + 1)))
    assert [(m.vaddr, m.page_size) for m in got] == [(v4(0, 3), G1)]
    assert env.ram.frames_read() == Counter({ROOT: 1, a[1]: 1})
    # A higher-half range.
    env.clear_records()
    got = list(env.pt.iter_mappings(AddrRange(0xFFFF_8000_0000_0000, 1 << 64)))
    assert [m.vaddr for m in got] == [v4(300, 5, 0, 0)]
    assert env.ram.frames_read() == Counter({ROOT: 1, d[1]: 1, d[2]: 1, d[3]: 1})
    # An empty range reads nothing.
    env.clear_records()
    assert list(env.pt.iter_runs(AddrRange(lo, lo))) == []
    assert env.ram.reads == []


def _shared_pt_env(perm_of_link: list[int]) -> tuple[Env, int, int, int]:
    env = Env()
    path = env.link(v4(0, 0, 0, 0), 1, 0x10_0000 | P | W)
    pdpt, pd, pt = path[1], path[2], path[3]
    env.ram.set(pt, 1, 0x10_1000 | P | W)
    env.ram.set(pt, 7, 0x20_0000 | P | U)
    for i, perm in enumerate(perm_of_link):
        env.ram.set(pd, i, pt | P | perm)
    return env, pdpt, pd, pt


def test_shared_table_read_once_every_alias_reported() -> None:
    perms = [W | U if i % 3 else U for i in range(300)]
    env, pdpt, pd, pt = _shared_pt_env(perms)
    env.clear_records()
    got = list(env.pt.iter_mappings())
    assert env.ram.frames_read() == Counter({ROOT: 1, pdpt: 1, pd: 1, pt: 1})
    expected = []
    for i, perm in enumerate(perms):
        for j, pa, leaf_bits in ((0, 0x10_0000, W), (1, 0x10_1000, W), (7, 0x20_0000, U)):
            eff_w = bool(perm & leaf_bits & W)
            eff_u = bool(perm & leaf_bits & U)
            expected.append(Mapping(v4(0, 0, i, j), pa, K4, pa | P | leaf_bits, eff_u, eff_w, True))
    assert len(got) == 900
    assert got == expected


def test_aliases_collapse() -> None:
    perms = [W | U] * 150 + [U] * 150
    env, _pdpt, _pd, pt = _shared_pt_env(perms)
    env.clear_records()
    runs = list(env.pt.iter_runs(aliases="collapse"))
    assert runs == [
        LeafRun(0, 0x10_0000, 2, K4, 0x10_0000 | P | W, False, True, True),
        LeafRun(7 * K4, 0x20_0000, 1, K4, 0x20_0000 | P | U, True, False, True),
        AliasRun(M2, 150 * M2, 149, pt, 1, 0, 3, 3 * K4, True, True, True),
        AliasRun(150 * M2, 300 * M2, 150, pt, 1, 0, 3, 3 * K4, True, False, True, False),
    ]
    alias = runs[2]
    assert isinstance(alias, AliasRun)
    assert alias.end - alias.vaddr == alias.count * M2
    assert Counter(p & ~0xFFF for p, _ in env.ram.reads)[pt] == 1
    # "expand" (the default) reports every leaf instead.
    assert sum(r.count for r in env.pt.iter_runs() if isinstance(r, LeafRun)) == 900
    with pytest.raises(WalkOptionError):
        list(env.pt.iter_runs(aliases="merge"))


def _expanded(
    pt: X86PageTable, records: list[WalkRecord], perm: PermFilter | None
) -> list[Mapping]:
    """The mappings that collapsed ``records`` stand for: each alias's first walk (a walk that
    expands every link, filtered by ``perm``) shifted to each of its links."""
    out: list[Mapping] = []
    for rec in records:
        if isinstance(rec, LeafRun):
            out.extend(rec.mappings())
        elif isinstance(rec, AliasRun):
            span = (rec.end - rec.vaddr) // rec.count
            first = [
                m
                for m in pt.iter_mappings(AddrRange(rec.first_vaddr, rec.first_vaddr + span))
                if perm is None or perm.matches(m.user, m.writable, m.executable)
            ]
            for k in range(rec.count):
                shift = rec.vaddr + k * span - rec.first_vaddr
                out.extend(m._replace(vaddr=m.vaddr + shift) for m in first)
    return out


@pytest.mark.parametrize("spec", [None, "w", "u"])
def test_aliases_of_repeated_links(spec: str | None) -> None:
    """A table linked from every entry of a PD, that PD from four PDPT entries (Linux's ESPFIX
    area): each group of equal links is one alias record, in any range and under a filter."""
    env, pdpt, pd, _pt = _shared_pt_env([W | U] * 512)
    for i in (1, 2, 3):
        env.ram.set(pdpt, i, pd | P | W | U)
    perm = None if spec is None else PermFilter.parse(spec)
    ranges = [(0, 1 << 47), (5 * M2 + K4, G1 + 3 * M2), (M2, 2 * G1 - M2), (3 * M2, 3 * M2 + 1)]
    for lo, hi in ranges:
        got = list(env.pt.iter_runs(AddrRange(lo, hi), aliases="collapse", perm=perm))
        expected = [
            m
            for m in env.pt.iter_mappings(AddrRange(lo, hi))
            if perm is None or perm.matches(m.user, m.writable, m.executable)
        ]
        assert _expanded(env.pt, got, perm) == expected
        aliases = [r for r in got if isinstance(r, AliasRun)]
        assert all(r.end - r.vaddr == r.count * (M2 if r.level == 1 else G1) for r in aliases)
        # Links that continue each other are one record.
        assert not any(a.end == b.vaddr and a.level == b.level for a, b in pairwise(aliases))
    got = list(env.pt.iter_runs(aliases="collapse", perm=perm))
    assert [(type(r), r.vaddr, r.count) for r in got if isinstance(r, AliasRun)] == [
        (AliasRun, M2, 511),
        (AliasRun, G1, 3),
    ]


def test_roots_over_one_kernel_half_share_what_walks_summarise() -> None:
    """A process's table and the kernel's share the kernel half's tables: a walk through one
    reads nothing below the root that a walk through the other read, and a change made
    through either is seen by both."""
    env = Env()
    for i in range(5):
        env.link(v4(300, 2, 3, i), 1, (0x40_0000 + i * K4) | P | W)
    env.link(v4(300, 2, 4), 2, 0x60_0000 | P | PS | W)
    kernel_root = env.table()
    for i in range(256, 512):
        env.ram.set(kernel_root, i, env.ram.get(ROOT, i))
    pt = X86PageTable(env.ram, ROOT, allow_writes=True, flush_hook=env.hook, cache=True)
    kernel = pt.with_root(kernel_root)
    half = AddrRange(v4(256), 1 << 64)
    first = list(pt.iter_runs(half, aliases="collapse"))
    env.clear_records()
    assert list(kernel.iter_runs(half, aliases="collapse")) == first
    assert env.ram.frames_read() == Counter({kernel_root: 1})
    pt.map(v4(300, 2, 3, 9), 0x50_0000, K4, W, env.alloc)
    fresh = X86PageTable(env.ram, kernel_root)
    assert list(kernel.iter_runs(half, aliases="collapse")) == list(
        fresh.iter_runs(half, aliases="collapse")
    )
    assert [m.vaddr for m in kernel.iter_mappings(half)][5] == v4(300, 2, 3, 9)


def test_aliases_collapse_at_the_top_level() -> None:
    """A PDPT linked from two PML4 entries (identity + higher half) is walked once."""
    env = Env()
    path = env.link(v4(0, 0, 1), 2, 0x20_0000 | P | PS | W)
    env.ram.set(ROOT, 256, path[1] | P | W)
    runs = list(env.pt.iter_runs(aliases="collapse"))
    assert runs == [
        LeafRun(M2, 0x20_0000, 1, M2, 0x20_0000 | P | PS | W, False, True, True),
        AliasRun(v4(256), v4(257), 1, path[1], 3, 0, 1, M2, False, True, True, False),
    ]
    assert [m.vaddr for m in env.pt.iter_mappings()] == [M2, v4(256, 0, 1)]


@pytest.mark.parametrize("levels", [4, 5])
def test_recursive_entry_reported_not_followed(levels: int) -> None:
    env = Env(levels)
    va = env.va(*([0] * levels))
    env.link(va, 1, 0x5000 | P | W)
    recursive = ROOT | P | W
    env.ram.set(ROOT, 511, recursive)
    env.clear_records()
    runs = list(env.pt.iter_runs())
    top = env.va(511)
    assert len(runs) == 2
    assert runs[0] == LeafRun(0, 0x5000, 1, K4, 0x5000 | P | W, False, True, True)
    anomaly = runs[1]
    assert isinstance(anomaly, Anomaly)
    assert (anomaly.kind, anomaly.vaddr, anomaly.level, anomaly.table, anomaly.index) == (
        "recursive",
        top,
        levels,
        ROOT,
        511,
    )
    assert anomaly.entry == recursive
    assert env.ram.frames_read()[ROOT] == 1
    anomalies: list[Anomaly] = []
    assert [m.vaddr for m in env.pt.iter_mappings(on_anomaly=anomalies.append)] == [0]
    assert [a.kind for a in anomalies] == ["recursive"]
    # collapse mode reports it the same way, and twice if two entries recurse.
    env.ram.set(ROOT, 510, recursive)
    kinds = [
        (type(r).__name__, getattr(r, "kind", None), r.vaddr)
        for r in env.pt.iter_runs(aliases="collapse")
    ]
    assert kinds == [
        ("LeafRun", None, 0),
        ("Anomaly", "recursive", env.va(510)),
        ("Anomaly", "recursive", top),
    ]


def test_recursive_entry_below_the_root() -> None:
    env = Env()
    path = env.link(v4(0, 0, 0, 0), 1, 0x5000 | P)
    pdpt, pd = path[1], path[2]
    back = pdpt | P  # a PD entry linking the PDPT above it
    env.ram.set(pd, 9, back)
    runs = list(env.pt.iter_runs())
    assert [type(r) for r in runs] == [LeafRun, Anomaly]
    anomaly = runs[1]
    assert isinstance(anomaly, Anomaly)
    assert (anomaly.kind, anomaly.vaddr, anomaly.level, anomaly.table, anomaly.index) == (
        "recursive",
        v4(0, 0, 9),
        2,
        pd,
        9,
    )
    assert anomaly.entry == back


def test_walk_anomalies_huge_forbidden_and_repeated_bad_links() -> None:
    env = Env()
    env.link(v4(0, 0, 0, 0), 1, 0x5000 | P)
    env.ram.set(ROOT, 3, 0x20_0000 | P | PS)
    path = env.link(v4(1, 0, 0, 0), 1, 0x6000 | P)
    bogus = 0x9_0000_0000 | P
    env.ram.set(path[2], 4, bogus)
    env.ram.set(path[2], 5, bogus)
    runs = list(env.pt.iter_runs(aliases="collapse"))
    summary = [(type(r).__name__, getattr(r, "kind", None), r.vaddr) for r in runs]
    assert summary == [
        ("LeafRun", None, 0),
        ("LeafRun", None, v4(1)),
        ("Anomaly", "table-outside-ram", v4(1, 0, 4)),
        ("Anomaly", "table-outside-ram", v4(1, 0, 5)),
        ("Anomaly", "huge-page-forbidden", v4(3)),
    ]


def test_walk_of_a_root_outside_ram_is_an_error() -> None:
    pt = X86PageTable(Ram(), 0x4000_0000)
    with pytest.raises(TableOutsideRamError) as info:
        list(pt.iter_runs())
    assert (info.value.table, info.value.entry) == (0x4000_0000, None)
    assert "root table 0x40000000 is outside physical memory" in str(info.value)


def test_walks_of_a_cached_table_share_tables_and_see_changes() -> None:
    """With ``cache=True`` a second walk reads no table again, a change made through the page
    table shows in the next walk, and one made behind its back after ``invalidate_cache``."""
    env = Env()
    env.link(v4(1, 2, 3, 4), 1, 0x5000 | P | W)
    env.link(v4(1, 2, 5), 2, 0x4000_0000 | P | PS)
    pt = X86PageTable(env.ram, ROOT, 4, cache=True, allow_writes=True)
    first = list(pt.iter_runs())
    reads = len(env.ram.reads)
    assert list(pt.iter_runs()) == first
    assert len(env.ram.reads) == reads  # all from the shared memo
    pt.map(v4(1, 2, 3, 5), 0x6000, K4, W, env.alloc)
    runs = [r for r in pt.iter_runs() if isinstance(r, LeafRun)]
    assert [(r.vaddr, r.paddr, r.count) for r in runs][:1] == [(v4(1, 2, 3, 4), 0x5000, 2)]
    env.ram.set(env.pt.translate(v4(1, 2, 5)).steps[-1].table, idx(v4(1, 2, 5), 2), 0)
    assert len([r for r in pt.iter_runs() if isinstance(r, LeafRun)]) == 2  # not seen yet
    pt.invalidate_cache()
    assert len([r for r in pt.iter_runs() if isinstance(r, LeafRun)]) == 1


def test_a_cached_table_keeps_whole_walks_and_their_limits_still_hold() -> None:
    """A whole walk is kept for the next walk of the same range and bits: each equals a walk of
    an uncached table (expanded, collapsed, part of the range), a leaf limit holds over a kept
    walk, and a change through the page table drops what was kept."""
    env = Env()
    env.link(v4(1, 2, 3), 1, 0x5000 | P | W)
    pd = env.pt.translate(v4(1, 2, 3)).steps[-2]
    table = env.pt.translate(v4(1, 2, 3)).steps[-1].table
    for i in range(512):
        env.ram.set(table, i, (0x10_0000 + i * K4) | P | W)
    for i in range(1, 4):  # the page table linked four times: 4 x 512 leaves
        env.ram.set(pd.table, pd.index + i, table | P | W)
    fresh = X86PageTable(env.ram, ROOT, 4)
    pt = X86PageTable(env.ram, ROOT, 4, cache=True, allow_writes=True)
    part = AddrRange(v4(1, 2, 3), v4(1, 2, 5))
    walks: list[Callable[[X86PageTable], list[WalkRecord]]] = [
        lambda t: list(t.iter_runs()),
        lambda t: list(t.iter_runs(aliases="collapse")),
        lambda t: list(t.iter_runs(part)),
    ]
    for walk in walks:
        expected = walk(fresh)
        assert walk(pt) == expected
        reads = len(env.ram.reads)
        assert walk(pt) == expected
        assert len(env.ram.reads) == reads
    with pytest.raises(WalkLimitError):
        list(pt.iter_runs(max_leaves=2047))
    assert sum(r.count for r in pt.iter_runs(max_leaves=2048) if isinstance(r, LeafRun)) == 2048
    pt.unmap(v4(1, 2, 3, 7))
    assert sum(r.count for r in pt.iter_runs() if isinstance(r, LeafRun)) == 2044
