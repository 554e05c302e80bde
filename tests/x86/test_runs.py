"""Summaries of leaf tables (:func:`gdbext.x86.runs.summarise`), against a reference model
written here entry by entry: runs of leaves that continue each other, links, anomalies."""

from __future__ import annotations

from depth import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from gdbext.x86.entries import LevelRules, entry_rules
from gdbext.x86.runs import ALL_BITS, summarise

P, PS, ACCESSED_DIRTY = 0x1, 0x80, 0x60


def reference(
    entries: tuple[int, ...], rules: LevelRules, keep: int
) -> tuple[list[tuple[int, int, int]], list[tuple[int, str, int, str]], int]:
    """Runs, anomalies and the number of leaves, one entry at a time: a present entry that is
    not a leaf is a link (a run of count 0), a leaf with reserved bits an anomaly; a leaf joins
    the run before it when it is the next index and its kept bits are the run's last ones plus
    one page, without the address carrying into the flags."""
    runs: list[list[int]] = []  # [first index, count, first entry, last kept bits]
    out: list[tuple[int, int, int]] = []
    anomalies = []
    leaves = 0
    joinable = False
    for index, entry in enumerate(entries):
        if not entry & P:
            joinable = False
            continue
        if not rules.always_leaf and not entry & PS:
            out.extend((r[0], r[1], r[2]) for r in runs)
            runs = []
            out.append((index, 0, entry))
            joinable = False
            continue
        bad = entry & rules.leaf_reserved
        if bad:
            anomalies.append((index, "reserved-bits", entry, f"bits 0x{bad:x}"))
            joinable = False
            continue
        leaves += 1
        if joinable and (entry & keep) == runs[-1][3] + rules.span:
            runs[-1][1] += 1
            runs[-1][3] = entry & keep
        else:
            runs.append([index, 1, entry, entry & keep])
        joinable = (entry & rules.addr_mask) + rules.span <= rules.addr_mask
    out.extend((r[0], r[1], r[2]) for r in runs)
    return sorted(out), anomalies, leaves


@st.composite
def tables(draw: st.DrawFn) -> tuple[tuple[int, ...], LevelRules, int]:
    """A table at level 1..3 built from stretches: holes, runs of leaves that continue each
    other (with ACCESSED/DIRTY and other flags varying; some with holes between), links, leaves
    with reserved bits, addresses near the top of MAXPHYADDR."""
    rules = entry_rules(draw(st.sampled_from([36, 46, 52])), nxe=draw(st.booleans())).level(
        draw(st.integers(1, 3))
    )
    keep = draw(st.sampled_from([ALL_BITS, ALL_BITS & ~ACCESSED_DIRTY]))
    leaf_bit = 0 if rules.always_leaf else PS
    top = rules.addr_mask & ~(rules.span - 1)
    rnd = draw(st.randoms(use_true_random=False))
    entries: list[int] = []
    while len(entries) < 512:
        kind = draw(st.sampled_from(["hole", "run", "run", "holey", "link", "bad", "top"]))
        size = draw(st.integers(1, 600))
        if kind == "hole":
            entries += [0] * size
        elif kind in ("run", "holey", "top"):
            # "holey": frames that continue each other across holes (not one run).
            frame = top if kind == "top" else draw(st.integers(0, 1 << 20)) * rules.span
            flags = draw(st.sampled_from([0x3, 0x63, 0x8000000000000001, 0x107]))
            for _ in range(size):
                if kind == "holey" and rnd.random() < 0.5:
                    entries.append(0)
                    continue
                frame &= rules.addr_mask & ~(rules.span - 1)
                noise = rnd.choice([0, 0, 0, 0x20, 0x40, 0x2])
                entries.append(frame | flags | noise | leaf_bit | P)
                frame += rules.span
        elif kind == "link":
            table = draw(st.integers(1, 1 << 20)) << 12
            entries += [table | 0x67] * size if not rules.always_leaf else [table | 0x3] * size
        else:
            entries.append(1 << (rules.addr_mask.bit_length()) | leaf_bit | P)
    return tuple(entries[:512]), rules, keep


@settings(max_examples=examples(1000, quick=30), deadline=None)
@given(tables())
def test_summary_equals_the_reference(table: tuple[tuple[int, ...], LevelRules, int]) -> None:
    entries, rules, keep = table
    summary = summarise(entries, rules, keep)
    runs, anomalies, leaves = reference(entries, rules, keep)
    assert summary.runs == runs
    assert summary.anomalies == anomalies
    assert (summary.leaves, summary.mapped) == (leaves, leaves * rules.span)
    assert summary.plain == (not anomalies and all(count for _, count, _ in runs))


def test_uniform_and_link_tables() -> None:
    """The shapes a kernel has most: 512 contiguous leaves (a direct map's), all but a few
    ACCESSED/DIRTY alike, and 512 links to one table (ESPFIX)."""
    pt = entry_rules(46, nxe=True).level(1)
    leaves = tuple((0x100000 + i * 4096) | 0x63 for i in range(512))
    assert summarise(leaves, pt).runs == [(0, 512, leaves[0])]
    touched = tuple(e & ~0x40 if i % 7 else e for i, e in enumerate(leaves))
    assert summarise(touched, pt).runs == reference(touched, pt, ALL_BITS)[0]
    assert len(summarise(touched, pt).runs) > 100
    assert summarise(touched, pt, ALL_BITS & ~ACCESSED_DIRTY).runs == [(0, 512, touched[0])]
    pd = entry_rules(46, nxe=True).level(2)
    links = (0x4846067,) * 512
    summary = summarise(links, pd)
    assert summary.runs == [(i, 0, 0x4846067) for i in range(512)]
    assert (summary.leaves, summary.plain) == (0, False)
