"""``walk --has VADDR``: only the merged mapping that contains VADDR.

The expected line is the one of the full walk that contains the address (a full walk reads
everything; ``--has`` reads a window that grows), and for hand-built scenarios the range
computed here from the scenario itself.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.paths import DEMO, SCENARIOS
from support.scenario import sized

from gdbext import cli
from gdbext.plugin.hookspecs import hookimpl
from gdbext.plugin.host import Host
from gdbext.plugin.target import BackendInfo, OpenRequest, Target
from gdbext_sim.scenario import build_machine

LA57 = SCENARIOS / "la57.json"


class DocBackend:
    """A backend ``doc`` that builds a scenario document given by the test."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    @hookimpl
    def gdbext_backends(self) -> Sequence[BackendInfo]:
        def open_(request: OpenRequest) -> Target:
            return build_machine(self.doc).to_target()

        return [BackendInfo("doc", "a scenario document built by the test", open_)]


def walk(doc: dict[str, Any] | Path, *args: str) -> tuple[int, str, str]:
    document = json.loads(doc.read_text()) if isinstance(doc, Path) else doc
    host = Host.create(extra_plugins=[DocBackend(document)])
    out = io.StringIO()
    try:
        status = cli.run(["walk", "--backend", "doc", *args], host, out)
        err = ""
    except Exception as exc:  # GdbextError: what main() would print
        status = getattr(exc, "exit_status", 99)
        err = str(exc)
    return status, out.getvalue(), err


def ranges(text: str) -> list[tuple[int, int, str]]:
    """(start, end, line) of the range lines of a text walk."""
    out = []
    for line in text.splitlines():
        if line.startswith("0x") and " alias " not in line:
            out.append((int(line[:18], 16), int(line[19:37], 16), line))
    return out


def containing(text: str, vaddr: int) -> str:
    [line] = [line for a, b, line in ranges(text) if a <= vaddr < b]
    return line


DEMO_ADDRS = [0x400123, 0x40F000, 0x600000, 0x7FFFFFFFE000, 0xFFFF888001234567,
              0xFFFF88800FFFFFFF, 0xFFFFC90012345678, 0xFFFFFF0000000008, 0xFFFFFFFF811FF000,
              0xFFFFFFFF81234567, 0xFFFFFFFF813FFFFF]  # fmt: skip


@pytest.mark.parametrize("vaddr", DEMO_ADDRS, ids=hex)
def test_text_has_is_the_full_walks_line(vaddr: int) -> None:
    _, full, _ = walk(DEMO)
    status, out, _ = walk(DEMO, "--has", hex(vaddr))
    assert status == 0
    *lines, summary = out.splitlines()
    assert [ln for ln in lines if ln.startswith("0x")] == [containing(full, vaddr)]
    start, end, line = ranges(out)[0]
    page = {"4K": 1 << 12, "2M": 1 << 21, "1G": 1 << 30}[line.split()[2]]
    assert f"{(end - start) // page} leaf entries" in summary


@pytest.mark.parametrize("vaddr", DEMO_ADDRS, ids=hex)
def test_json_has_is_the_full_walks_record(vaddr: int) -> None:
    _, full, _ = walk(DEMO, "--json")
    status, out, _ = walk(DEMO, "--json", "--has", hex(vaddr))
    assert status == 0
    want = [
        m
        for m in json.loads(full)["mappings"]
        if int(m["vaddr"], 16) <= vaddr < int(m["vaddr"], 16) + m["size"]
    ]
    assert json.loads(out)["mappings"] == want


def test_demo_values_from_the_scenario() -> None:
    _, out, _ = walk(DEMO, "--has", "0xffff888001234567")
    assert ranges(out)[0][:2] == (0xFFFF888000000000, 0xFFFF888000000000 + 128 * (1 << 21))
    _, out, _ = walk(DEMO, "--has", "0xffffffff81000fff")
    assert ranges(out)[0][:2] == (0xFFFFFFFF81000000, 0xFFFFFFFF81200000)


def test_has_in_a_linked_table_shows_its_leaf_not_an_alias() -> None:
    status, out, _ = walk(DEMO, "--has", "0xffffff0000200010")
    assert status == 0
    assert [line for line in out.splitlines() if line.startswith("0x")] == [
        "0xffffff0000200000-0xffffff0000201000       4K  4K  r-- kern G           -> 0x2000000"
    ]


def test_qemu_tlb_has_lists_the_leaves_of_the_mapping() -> None:
    _, full, _ = walk(DEMO, "--format", "qemu-tlb")
    status, out, _ = walk(DEMO, "--format", "qemu-tlb", "--has", "0x600abc")
    assert status == 0
    lo, hi = 0x600000, 0x608000  # 8 pages rw- user
    assert out.splitlines() == [
        line for line in full.splitlines() if lo <= int(line.split(":")[0], 16) < hi
    ]


def page_run(vaddr: int, paddr: int, size: str, count: int, flags: list[str]) -> dict[str, Any]:
    return sized(vaddr, paddr, size, count, *flags)


GROWING: list[tuple[dict[str, Any], int, tuple[int, int]]] = [
    # 4 KiB pages over three page tables: the window doubles twice.
    ({"ram": "16M", "mappings": [page_run(0x1FF000, 0x100000, "4K", 1026, ["WRITABLE"])]},
     0x300000, (0x1FF000, 0x1FF000 + 1026 * 4096)),
    # 1 GiB pages across a PML4 entry boundary (512 GiB).
    ({"ram": "16M", "mappings": [page_run(0x7F40000000, 0x40000000, "1G", 4, [])]},
     0x8000000000, (0x7F40000000, 0x8040000000)),
    # Up to the end of the lower half: the window stops growing there.
    ({"ram": "16M", "mappings": [page_run(0x7FFFFFE00000, 0x200000, "4K", 512, ["WRITABLE"])]},
     0x7FFFFFFFF000, (0x7FFFFFE00000, 0x800000000000)),
    # From the start of the higher half.
    ({"ram": "16M", "mappings": [page_run(0xFFFF800000000000, 0x0, "2M", 513, [])]},
     0xFFFF800000000000, (0xFFFF800000000000, 0xFFFF800000000000 + 513 * (1 << 21))),
    # Two runs contiguous in VA and PA whose flags differ: two mappings.
    ({"ram": "16M", "mappings": [page_run(0x1000000, 0x800000, "4K", 600, []),
                                 page_run(0x1258000, 0xA58000, "4K", 10, ["WRITABLE"])]},
     0x1257000, (0x1000000, 0x1258000)),
    # 5-level paging, across a PML5 entry boundary.
    ({"levels": 5, "ram": "16M", "mappings": [page_run(0xFFFFFFE00000, 0x200000, "4K", 1024, [])]},
     0xFFFFFFFFF000, (0xFFFFFFE00000, 0x1000000200000)),
]  # fmt: skip


@pytest.mark.parametrize(("doc", "vaddr", "expected"), GROWING)
def test_has_grows_the_window_to_the_whole_mapping(
    doc: dict[str, Any], vaddr: int, expected: tuple[int, int]
) -> None:
    status, out, _ = walk(doc, "--has", hex(vaddr))
    assert status == 0
    [(start, end, _)] = ranges(out)
    assert (start, end) == expected
    _, full, _ = walk(doc)
    assert ranges(out)[0][2] == containing(full, vaddr)


def test_accessed_dirty_merge_in_text_but_not_in_json() -> None:
    """Text does not show ACCESSED/DIRTY and merges across them; JSON does not."""
    doc: dict[str, Any] = {
        "ram": "16M",
        "mappings": [page_run(0x400000, 0x100000, "4K", 8, [])],
        "entries": [{"vaddr": "0x403000", "level": 1, "value": hex(0x103000 | 0x61)}],
    }
    _, out, _ = walk(doc, "--has", "0x401000")
    assert ranges(out)[0][:2] == (0x400000, 0x408000)
    _, out, _ = walk(doc, "--json", "--has", "0x401000")
    [m] = json.loads(out)["mappings"]
    assert (m["vaddr"], m["size"]) == ("0x400000", 0x3000)
    _, out, _ = walk(doc, "--json", "--has", "0x403000")
    [m] = json.loads(out)["mappings"]
    assert (m["vaddr"], m["size"], "DIRTY" in m["flags"]) == ("0x403000", 0x1000, True)


@pytest.mark.parametrize(
    ("vaddr", "status", "message"),
    [
        (0x10000000, 1, "0x10000000 is not mapped: its PD entry is not present (value 0x0)"),
        (
            0x100000000000,
            1,
            "0x100000000000 is not mapped: its PML4 entry is not present (value 0x0)",
        ),
        (0x800000000000, 2, "not canonical"),
    ],
)
def test_has_unmapped(vaddr: int, status: int, message: str) -> None:
    got, out, err = walk(DEMO, "--has", hex(vaddr))
    assert got == status and message in err and out == ""


def test_has_with_filter() -> None:
    status, out, _ = walk(DEMO, "--has", "0x400000", "--filter", "u,x")
    assert status == 0 and ranges(out)[0][:2] == (0x400000, 0x410000)
    status, _, err = walk(DEMO, "--has", "0x400000", "--filter", "w")
    assert status == 1 and "do not pass --filter w" in err


def test_has_and_range_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["walk", "--backend", "sim", "--scenario", str(DEMO), "--has", "0x400000"]
    status = cli.main([*argv, "--range", "0x0-0x1000"])
    err = capsys.readouterr().err
    assert status == 2 and "--range" in err and err.count("\n") == 1


def test_has_on_la57(capsys: pytest.CaptureFixture[str]) -> None:
    _, full, _ = walk(LA57)
    for start, _end, line in ranges(full):
        status, out, _ = walk(LA57, "--has", hex(start))
        assert status == 0 and ranges(out)[0][2] == line


# --- Property: --has is the full walk's merged mapping ----------------------------------------

SLOTS = [0x0, 0x1FF000, 0x3FE00000, 0x7FFFFFFFD000, 0xFFFF800000000000, 0xFFFFFFFFFFE00000]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(SLOTS),
            st.integers(0, 600),  # page offset
            st.integers(1, 700),  # count
            st.sampled_from([[], ["WRITABLE"], ["NO_EXECUTE"]]),
            st.integers(0, 3),  # physical slice
        ),
        min_size=1,
        max_size=4,
    ),
    st.data(),
)
def test_has_equals_the_full_walk_property(
    runs: list[tuple[int, int, int, list[str], int]], data: st.DataObject
) -> None:
    mappings: list[dict[str, Any]] = []
    taken: list[tuple[int, int]] = []
    for slot, offset, count, flags, phys in runs:
        va = slot + offset * 4096
        end = va + count * 4096
        canonical = end <= 1 << 47 or (va >= 0xFFFF800000000000 and end <= 1 << 64)
        if not canonical or any(va < b and a < end for a, b in taken):
            continue
        taken.append((va, end))
        mappings.append(page_run(va, 0x100000 + phys * 0x400000, "4K", count, flags))
    if not mappings:
        return
    doc = {"ram": "64M", "mappings": mappings}
    status, full, _ = walk(doc)
    assert status == 0
    lines = ranges(full)
    start, end, line = data.draw(st.sampled_from(lines))
    vaddr = data.draw(st.integers(start, end - 1))
    status, out, _ = walk(doc, "--has", hex(vaddr))
    assert status == 0 and [ln for _, _, ln in ranges(out)] == [line]
