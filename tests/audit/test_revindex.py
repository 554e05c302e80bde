"""The reverse index (:mod:`gdbext.audit.revindex`) against a brute-force scan of every leaf.

The truth is :meth:`~gdbext.x86.paging.X86PageTable.iter_mappings` with aliases expanded: every
leaf, one by one, scanned for the frames asked. The index must answer the same virtual
addresses with the same effective permissions, its collapsed aliases expanded only here.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from depth import examples, kernels
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.whomaps import scenario_file

from gdbext.api import open_target
from gdbext.audit.revindex import ReverseIndex, brute_force
from gdbext.audit.views import TableWalk
from gdbext.frontend.commands import open_page_table

Leaf = tuple[int, int, int, tuple[bool, bool, bool]]  # (vaddr, paddr, page_size, perm)


class Truth:
    """Every leaf of one table (aliases expanded), and the index of its collapsed walk."""

    def __init__(self, leaves: list[Leaf], index: ReverseIndex) -> None:
        self.leaves = leaves
        self.index = index

    def brute(self, lo: int, hi: int) -> set[tuple[int, tuple[bool, bool, bool]]]:
        """(VA of ``lo`` or of the first byte mapped past it, perm) of every leaf meeting
        ``[lo, hi)``."""
        out = set()
        for va, pa, size, perm in self.leaves:
            if pa < hi and pa + size > lo:
                start = max(lo, pa)
                out.add((va + start - pa, perm))
        return out

    def indexed(self, lo: int, hi: int) -> set[tuple[int, tuple[bool, bool, bool]]]:
        out = set()
        for place in self.index.lookup(lo, hi):
            ps = place.page_size
            for va in place.vaddrs():
                out.add((va, place.perm))  # then each later leaf the place spans
                out.update((b, place.perm) for b in range((va // ps + 1) * ps, va + place.size, ps))
        return out


def _truth(source: str, **options: str) -> Iterator[Truth]:
    with open_target(source, **options) as opened:  # type: ignore[arg-type]
        pt = open_page_table(opened.target)
        leaves = [
            (m.vaddr, m.paddr, m.page_size, (m.user, m.writable, m.executable))
            for m in pt.iter_mappings()
        ]
        fresh = open_page_table(opened.target)
        yield Truth(leaves, ReverseIndex(TableWalk(fresh).spans))


@pytest.fixture(scope="module")
def sim_truth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Truth]:
    path = scenario_file(tmp_path_factory.mktemp("whomaps"))
    yield from _truth(None, backend="sim", scenario=str(path))  # type: ignore[arg-type]


@pytest.fixture(scope="module", params=kernels())
def kernel_truth(
    request: pytest.FixtureRequest, kernel_dump: Callable[[str], Path]
) -> Iterator[Truth]:
    yield from _truth(str(kernel_dump(request.param)))


def test_scenario_frame(sim_truth: Truth) -> None:
    """Frame 0x3001000: user r-x, vmalloc-like rw-, kernel r-x, the 2 MiB rw- page; the
    shared table's frame 0x2000000 at 8 addresses 2 MiB apart."""
    got = sim_truth.indexed(0x3001000, 0x3001001)
    assert got == {
        (0x401000, (True, False, True)),
        (0xFFFFC90000101000, (False, True, False)),
        (0xFFFFFFFF81000000, (False, False, True)),
        (0xFFFF888000001000, (False, True, False)),
    }
    shared = sim_truth.indexed(0x2000000, 0x2001000)
    assert shared == {(0xFFFFFF0000000000 + k * 0x200000, (False, False, False)) for k in range(8)}
    assert sim_truth.indexed(0x3003000, 0x3004000) >= {
        (0xFFFFFF0000001000 + k * 0x200000, (False, False, False)) for k in range(8)
    }
    assert sim_truth.indexed(0x5000000, 0x5001000) == set()


def _check(truth: Truth, data: st.DataObject) -> None:
    leaves = truth.leaves
    if data.draw(st.booleans()):
        _, pa, size, _ = leaves[data.draw(st.integers(0, len(leaves) - 1))]
        lo = pa + data.draw(st.integers(0, size - 1)) // 4096 * 4096
    else:
        lo = data.draw(st.integers(0, 1 << 32)) // 4096 * 4096
    hi = lo + data.draw(st.sampled_from([1, 4096, 0x3000, 0x200000]))
    assert truth.indexed(lo, hi) == truth.brute(lo, hi)


@settings(
    max_examples=examples(200),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_index_equals_brute_force_sim(sim_truth: Truth, data: st.DataObject) -> None:
    _check(sim_truth, data)


@settings(
    max_examples=examples(120),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_index_equals_brute_force_kernel(kernel_truth: Truth, data: st.DataObject) -> None:
    _check(kernel_truth, data)


def _ranges(starts: list[int]) -> Iterator[tuple[int, int]]:
    """Ranges at, inside and across each segment boundary: one byte, a frame, a whole segment,
    a segment and a byte of the next, and from before the first one."""
    yield 0, starts[0] + 1
    for lo, hi in itertools.pairwise(starts):
        mid = (lo + hi) // 2
        yield from ((lo, lo + 1), (lo, min(hi, lo + 4096)), (lo, hi), (lo, hi + 1))
        yield from ((mid, mid + 1), (mid, hi), (mid, hi + 0x200000), (hi - 1, hi + 1))
    yield starts[-1], starts[-1] + 4096


def _check_order(index: ReverseIndex) -> None:
    for lo, hi in _ranges(index.starts):
        assert index.lookup(lo, hi) == brute_force(index.spans, lo, hi), (hex(lo), hex(hi))


def test_lookup_equals_scan_of_spans_sim(sim_truth: Truth) -> None:
    """Every lookup, inside one segment (answered from the segment's spans kept in order) or
    across several, equals :func:`brute_force`'s scan of every span: the same places, clipped
    the same, in the same order."""
    _check_order(sim_truth.index)


def test_lookup_equals_scan_of_spans_kernel(kernel_truth: Truth) -> None:
    """The same on each kernel, whose ESPFIX frame (129 spans) is answered from columns."""
    assert max(len(c) for c in kernel_truth.index.covers) > 8
    _check_order(kernel_truth.index)
