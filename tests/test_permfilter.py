"""``walk --filter SPEC``: the grammar, pruning soundness, and the filtered walks.

Expectations come from a page-table walker written here over the raw memory (it ANDs U and W
and ORs NX down the levels itself) and from the filter semantics spelled out here as
predicates, never from the engine's own output. A Hypothesis test checks that the pruned walk
equals the unfiltered walk filtered afterwards, on random tables with restricted parents.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import struct
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from depth import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gdbext import cli
from gdbext.addr import AddrRange
from gdbext.errors import UsageError
from gdbext.permfilter import PermFilter
from gdbext.plugin.hookspecs import hookimpl
from gdbext.plugin.host import Host
from gdbext.plugin.target import BackendInfo, OpenRequest, Target
from gdbext.x86.paging import X86PageTable
from gdbext.x86.records import AliasRun, LeafRun
from gdbext_sim.memory import SparsePhysMemory
from gdbext_sim.scenario import SimMachine, build_machine

P, W, U, PS = 1, 2, 4, 0x80
NX = 1 << 63
ADDR = 0x000F_FFFF_FFFF_F000

#: The filter semantics, written independently of gdbext.permfilter: (user, writable, exec).
Perm = tuple[bool, bool, bool]
ATOMS: dict[str, Callable[[Perm], bool]] = {
    "w": lambda p: p[1],
    "ro": lambda p: not p[1],
    "x": lambda p: p[2],
    "nx": lambda p: not p[2],
    "u": lambda p: p[0],
    "s": lambda p: not p[0],
    "k": lambda p: not p[0],
    "wx": lambda p: p[1] and p[2],
}


def predicate(spec: str) -> Callable[[Perm], bool]:
    terms = []
    for term in spec.replace(" ", "").lower().split(","):
        atom = term.lstrip("!")
        negate = (len(term) - len(atom)) % 2 == 1
        base = ATOMS[atom]
        terms.append((base, negate))
    return lambda p: all(f(p) != neg for f, neg in terms)


ALL_PERMS = [(u, w, x) for u in (False, True) for w in (False, True) for x in (False, True)]
SPECS = [
    "w", "ro", "x", "nx", "u", "s", "k", "wx", "!w", "!x", "!u", "!s", "!wx", "!!w", "u,x",
    "s,w,nx", "!u,!w", "U , X", "w,ro", "!ro,!nx",
]  # fmt: skip


# --- Grammar ---------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", SPECS)
def test_filter_accepts_exactly_the_specified_combinations(spec: str) -> None:
    f = PermFilter.parse(spec)
    want = predicate(spec)
    for perm in ALL_PERMS:
        assert f.matches(*perm) == want(perm), (spec, perm)


@pytest.mark.parametrize("spec", ["", " ", "q", "w,", ",w", "w,,x", "rw", "!", "x!"])
def test_bad_filters_are_usage_errors(spec: str) -> None:
    with pytest.raises(UsageError, match="--filter"):
        PermFilter.parse(spec)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("nxe", [True, False])
def test_may_match_is_exactly_reachability(spec: str, nxe: bool) -> None:
    """A subtree may match iff some leaf below it could: leaves only lose U/W and gain NX."""
    f = PermFilter.parse(spec)
    want = predicate(spec)
    may = f.may_match(nxe)
    for acc_u in (False, True):
        for acc_w in (False, True):
            for acc_nx in (False, True) if nxe else (False,):
                index = (W if acc_w else 0) >> 1 | (U if acc_u else 0) >> 1 | (4 if acc_nx else 0)
                reachable = [
                    (u, w, x)
                    for u in ((False, True) if acc_u else (False,))
                    for w in ((False, True) if acc_w else (False,))
                    for x in ((False,) if acc_nx else (False, True) if nxe else (True,))
                ]
                assert may[index] == any(want(p) for p in reachable), (spec, acc_u, acc_w, acc_nx)


# --- A reference walker over raw memory --------------------------------------------------------


def ref_leaves(
    mem: SparsePhysMemory, root: int, levels: int, nxe: bool = True
) -> list[tuple[int, int, int, Perm]]:
    """(vaddr, paddr, page_size, (user, writable, executable)) of every leaf, VA order."""
    va_bits = 12 + 9 * levels
    out: list[tuple[int, int, int, Perm]] = []

    def canon(va: int) -> int:
        return va | ((1 << 64) - (1 << va_bits)) if va >> (va_bits - 1) & 1 else va

    def walk(table: int, level: int, base: int, u: bool, w: bool, nx: bool) -> None:
        entries = struct.unpack("<512Q", mem.read(table, 4096))
        shift = 12 + 9 * (level - 1)
        for i, e in enumerate(entries):
            if not e & P:
                continue
            va = base + (i << shift)
            u2, w2, nx2 = u and bool(e & U), w and bool(e & W), nx or (nxe and bool(e & NX))
            if level == 1 or (level in (2, 3) and e & PS):
                size = 1 << shift
                out.append((canon(va), e & ADDR & ~(size - 1), size, (u2, w2, not nx2)))
            elif level < 4 or not e & PS:
                walk(e & ADDR, level - 1, va, u2, w2, nx2)

    walk(root, levels, 0, True, True, False)
    return sorted(out)


def restrict(machine: SimMachine, vaddr: int, level: int, clear: int = 0, set_: int = 0) -> None:
    """Clear/set bits of the non-leaf level-``level`` entry on ``vaddr``'s path (raw write)."""
    mem = machine.memory
    table = machine.page_table.root
    for lvl in range(machine.page_table.levels, level - 1, -1):
        slot = table + 8 * ((vaddr >> (12 + 9 * (lvl - 1))) & 0x1FF)
        (entry,) = struct.unpack("<Q", mem.read(slot, 8))
        assert entry & P
        if lvl == level:
            mem.write(slot, struct.pack("<Q", (entry & ~clear) | set_))
            return
        table = entry & ADDR
    raise AssertionError("unreachable")


# --- A scenario with permissions restricted at every level ------------------------------------

SCENARIO: dict[str, Any] = {
    "levels": 4,
    "ram": "64M",
    "mappings": [
        {"vaddr": "0x400000", "paddr": "0x100000", "size": "4K", "count": 4,
         "flags": ["USER_ACCESSIBLE"]},
        {"vaddr": "0x600000", "paddr": "0x200000", "size": "4K", "count": 3,
         "flags": ["USER_ACCESSIBLE", "WRITABLE", "NO_EXECUTE"]},
        {"vaddr": "0x7fffffe00000", "paddr": "0x300000", "size": "4K", "count": 2,
         "flags": ["USER_ACCESSIBLE", "WRITABLE"]},
        # Under a PD entry whose W is cleared below: user code that looks writable.
        {"vaddr": "0x40000000", "paddr": "0x400000", "size": "4K", "count": 8,
         "flags": ["USER_ACCESSIBLE", "WRITABLE"]},
        # Under a PML4 entry with NX set below: nothing executable there.
        {"vaddr": "0x8000000000", "paddr": "0x600000", "size": "2M", "count": 2,
         "flags": ["USER_ACCESSIBLE", "WRITABLE"]},
        {"vaddr": "0xffff888000000000", "paddr": "0x0", "size": "2M", "count": 16,
         "flags": ["WRITABLE", "NO_EXECUTE", "GLOBAL"]},
        {"vaddr": "0xffffffff81000000", "paddr": "0x1000000", "size": "4K", "count": 16,
         "flags": ["GLOBAL"]},
        {"vaddr": "0xffffffff81200000", "paddr": "0x1200000", "size": "2M",
         "flags": ["WRITABLE"]},
        # Under a PDPT entry with U cleared below: kernel after all.
        {"vaddr": "0xffffc90000000000", "paddr": "0x1400000", "size": "4K", "count": 5,
         "flags": ["USER_ACCESSIBLE", "WRITABLE", "NO_EXECUTE"]},
    ],
    "links": [{"vaddr": "0xffffff0000000000", "level": 2, "count": 3, "table_of": "0x600000"}],
}  # fmt: skip


def machine() -> SimMachine:
    m = build_machine(SCENARIO, "<filter scenario>")
    restrict(m, 0x40000000, 2, clear=W)
    restrict(m, 0x8000000000, 4, set_=NX)
    restrict(m, 0xFFFFC90000000000, 3, clear=U)
    return m


class Prepared:
    """A backend ``prepared`` that opens a machine built by the test."""

    def __init__(self, build: Callable[[], SimMachine]) -> None:
        self.build = build

    @hookimpl
    def gdbext_backends(self) -> Sequence[BackendInfo]:
        def open_(request: OpenRequest) -> Target:
            return self.build().to_target()

        return [BackendInfo("prepared", "a machine built by the test", open_)]


def run(argv: list[str], build: Callable[[], SimMachine] = machine) -> tuple[int, str]:
    host = Host.create(extra_plugins=[Prepared(build)])
    out = io.StringIO()
    status = cli.run(["walk", "--backend", "prepared", *argv], host, out)
    return status, out.getvalue()


def test_the_scenario_has_every_combination() -> None:
    m = machine()
    perms = {p for *_, p in ref_leaves(m.memory, m.page_table.root, 4)}
    assert len(perms) >= 6  # what the filters below select differs from spec to spec
    leaves = ref_leaves(m.memory, m.page_table.root, 4)
    assert {p for va, _, _, p in leaves if 0x8000000000 <= va < 0x8000400000} == {
        (True, True, False)
    }
    assert {p for va, _, _, p in leaves if 0x40000000 <= va < 0x80000000} == {(True, False, True)}
    assert {p[0] for va, _, _, p in leaves if va >> 40 == 0xFFFFC9} == {False}


@pytest.mark.parametrize("spec", SPECS)
def test_cli_filter_equals_the_reference_filtered(spec: str) -> None:
    m = machine()
    want = predicate(spec)
    expected = [
        (va, pa, size, p)
        for va, pa, size, p in ref_leaves(m.memory, m.page_table.root, 4)
        if want(p)
    ]
    status, out = run(["--filter", spec, "--json", "--no-merge"])
    assert status == (0 if expected else 1)
    got = [
        (int(r["vaddr"], 16), int(r["paddr"], 16), r["page_size"],
         (r["user"], r["writable"], r["executable"]))
        for r in json.loads(out)["mappings"]
    ]  # fmt: skip
    assert got == expected


@pytest.mark.parametrize("spec", ["w", "x", "u,x", "!wx", "s,w,nx"])
def test_text_output_shows_only_matching_runs(spec: str) -> None:
    m = machine()
    want = predicate(spec)
    expected = [x for x in ref_leaves(m.memory, m.page_table.root, 4) if want(x[3])]
    status, out = run(["--filter", spec])
    assert status == 0
    lines = out.splitlines()
    assert f"{len(expected)} leaf entries" in lines[-1]
    ranges = [line for line in lines[:-1] if line.startswith("0x") and " alias " not in line]
    assert ranges
    for line in ranges:
        perms = re.search(r" r([w-])([x-]) (user|kern) ", line)
        assert perms is not None, line
        p = (perms[3] == "user", perms[1] == "w", perms[2] == "x")
        assert want(p), line
    # Every matching leaf lies inside a printed range (merged lines cover them).
    spans = [
        (int(line[:18], 16), int(line[19:37], 16)) for line in lines[:-1] if line.startswith("0x")
    ]
    for va, _, size, _ in expected:
        assert any(a <= va and va + size <= b for a, b in spans), hex(va)


def test_qemu_tlb_filtered_is_the_unfiltered_lines_filtered() -> None:
    m = machine()
    perm_of = {va: p for va, _, _, p in ref_leaves(m.memory, m.page_table.root, 4)}
    _, full = run(["--format", "qemu-tlb"])
    status, got = run(["--format", "qemu-tlb", "--filter", "u,!x"])
    want = predicate("u,!x")
    assert status == 0
    assert got.splitlines() == [
        line for line in full.splitlines() if want(perm_of[int(line.split(":")[0], 16)])
    ]


def test_nothing_matches_is_exit_1() -> None:
    status, out = run(["--filter", "w,ro"])
    assert status == 1 and "0 leaf entries" in out
    status, out = run(["--filter", "x", "--range", "0xffff888000000000-0xffff889000000000"])
    assert status == 1 and "0 leaf entries" in out  # the direct map is NX


def test_bad_filter_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(["walk", "--backend", "sim", "--scenario", "x.json", "--filter", "rwx"])
    err = capsys.readouterr().err
    assert status == 2 and "--filter" in err and "unknown term rwx" in err and err.count("\n") == 1


# --- Pruning: the tables below an excluded path are never read ---------------------------------


class CountingMemory:
    def __init__(self, mem: SparsePhysMemory) -> None:
        self.mem = mem
        self.reads: list[int] = []

    def read(self, paddr: int, size: int) -> bytes:
        self.reads.append(paddr)
        return self.mem.read(paddr, size)

    def write(self, paddr: int, data: bytes) -> None:
        raise AssertionError("read-only")


def tables_below(mem: SparsePhysMemory, table: int, level: int) -> set[int]:
    found = {table}
    if level == 1:
        return found
    for e in struct.unpack("<512Q", mem.read(table, 4096)):
        if e & P and not (level in (2, 3) and e & PS):
            found |= tables_below(mem, e & ADDR, level - 1)
    return found


def pml4_child(mem: SparsePhysMemory, root: int, vaddr: int) -> int:
    (entry,) = struct.unpack_from("<Q", mem.read(root + 8 * ((vaddr >> 39) & 0x1FF), 8))
    return int(entry & ADDR)


def test_pruned_subtrees_are_not_read() -> None:
    m = machine()
    root = m.page_table.root
    counting = CountingMemory(m.memory)
    pt = X86PageTable(counting, root, 4)
    # "u": the kernel half's PML4 entries have U (map_range ORs it in for the vmalloc pages)...
    kernel_only = tables_below(m.memory, pml4_child(m.memory, root, 0xFFFF888000000000), 3)
    user_runs = [r for r in pt.iter_runs(perm=PermFilter.parse("u")) if type(r) is LeafRun]
    assert user_runs and not kernel_only & set(counting.reads)
    # "x": the PML4 entry with NX set is not descended.
    counting.reads.clear()
    nx_tables = tables_below(m.memory, pml4_child(m.memory, root, 0x8000000000), 3)
    list(pt.iter_runs(perm=PermFilter.parse("x")))
    assert not nx_tables & set(counting.reads)
    # Unfiltered: every one of them is read.
    counting.reads.clear()
    list(pt.iter_runs())
    assert kernel_only | nx_tables <= set(counting.reads)


# --- Property: pruned filtering equals post-filtering ------------------------------------------

VAS = [0x0, 0x200000, 0x40000000, 0x7F8000000000, 0xFFFF800000000000, 0xFFFF800040000000,
       0xFFFFFFFF80000000]  # fmt: skip
FLAG_SETS = [
    [], ["WRITABLE"], ["USER_ACCESSIBLE"], ["NO_EXECUTE"], ["WRITABLE", "USER_ACCESSIBLE"],
    ["WRITABLE", "NO_EXECUTE"], ["USER_ACCESSIBLE", "NO_EXECUTE"],
    ["WRITABLE", "USER_ACCESSIBLE", "NO_EXECUTE"],
]  # fmt: skip

mapping_st = st.tuples(
    st.sampled_from(range(len(VAS))),
    st.sampled_from(["4K", "2M"]),
    st.integers(0, 3),  # page offset within the slot
    st.integers(1, 6),  # count
    st.sampled_from(range(len(FLAG_SETS))),
)
restriction_st = st.tuples(
    st.sampled_from(range(len(VAS))), st.integers(2, 4), st.sampled_from([W, U, W | U, NX])
)
spec_st = st.lists(
    st.tuples(st.booleans(), st.sampled_from(sorted(ATOMS))), min_size=1, max_size=3
).map(lambda terms: ",".join(("!" if neg else "") + atom for neg, atom in terms))


def random_machine(
    mappings: list[tuple[int, str, int, int, int]],
    restrictions: list[tuple[int, int, int]],
    nxe: bool,
    link: bool,
) -> SimMachine | None:
    doc: dict[str, Any] = {"levels": 4, "ram": "32M", "nxe": nxe, "mappings": []}
    used: set[int] = set()
    for i, (slot, size, offset, count, flags) in enumerate(mappings):
        page = 0x1000 if size == "4K" else 0x200000
        va = VAS[slot] + offset * page + (i % 2) * 0x10000000
        if any(va <= u < va + count * page for u in used) or va in used:
            continue
        names = [f for f in FLAG_SETS[flags] if nxe or f != "NO_EXECUTE"]
        doc["mappings"].append(
            {"vaddr": hex(va), "paddr": hex(0x400000 + 0x200000 * i), "size": size,
             "count": count, "flags": names}
        )  # fmt: skip
        used.update(range(va, va + count * page, page))
    if not doc["mappings"]:
        return None
    if link:
        first = int(doc["mappings"][0]["vaddr"], 16)
        if first < 1 << 47:
            doc["links"] = [{"vaddr": "0x7f0000000000", "level": 3, "count": 2,
                             "table_of": hex(first)}]  # fmt: skip
    try:
        m = build_machine(doc)
    except Exception:
        return None
    for slot, level, bits in restrictions:
        va = int(doc["mappings"][slot % len(doc["mappings"])]["vaddr"], 16)
        bits = bits if nxe else bits & ~NX
        with contextlib.suppress(AssertionError):  # no table there (a huge leaf above)
            restrict(m, va, level, clear=bits & (W | U), set_=bits & NX)
    return m


def expand(records: Any) -> list[tuple[int, int, int, Perm]]:
    out = []
    for r in records:
        if type(r) is LeafRun:
            for mp in r.mappings():
                out.append(
                    (mp.vaddr, mp.paddr, mp.page_size, (mp.user, mp.writable, mp.executable))
                )
    return out


@settings(max_examples=examples(120), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(mapping_st, min_size=1, max_size=6),
    st.lists(restriction_st, max_size=4),
    st.booleans(),
    st.booleans(),
    spec_st,
)
def test_pruned_filter_equals_post_filter(
    mappings: list[tuple[int, str, int, int, int]],
    restrictions: list[tuple[int, int, int]],
    nxe: bool,
    link: bool,
    spec: str,
) -> None:
    m = random_machine(mappings, restrictions, nxe, link)
    if m is None:
        return
    pt = X86PageTable(m.memory, m.page_table.root, 4, nxe=nxe)
    f = PermFilter.parse(spec)
    want = predicate(spec)
    reference = [x for x in ref_leaves(m.memory, pt.root, 4, nxe) if want(x[3])]
    post = [x for x in expand(pt.iter_runs()) if want(x[3])]
    pruned = expand(pt.iter_runs(perm=f))
    assert pruned == post == reference
    # A range-restricted filtered walk: the filtered leaves that meet the range.
    window = AddrRange(0x100000, 0xFFFF800040200000)
    cut = expand(pt.iter_runs(window, perm=f))
    assert cut == [x for x in pruned if x[0] < window.end and window.start < x[0] + x[2]]
    # Collapsed aliases count the same leaves as the expanded walk.
    total = 0
    for r in pt.iter_runs(aliases="collapse", perm=f):
        if type(r) is LeafRun:
            total += r.count
            assert want((r.user, r.writable, r.executable))
        elif type(r) is AliasRun:
            total += r.leaves * r.count
    assert total == len(pruned)
