"""``gdbext who-maps`` and ``gdbext aliases`` on a simulated machine and on real kernel dumps.

Expectations come from what the scenario placed (``tests/support/whomaps.py``) and, on the
kernel dumps, from QEMU's ``info tlb`` of the same stop.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from depth import KERNEL_DUMPS
from support.cli import cli_text
from support.goldens import info_tlb
from support.whomaps import scenario_file

from gdbext import cli

KERNEL_HALF = 0xFF00_0000_0000_0000
IMAGE = 0xFFFF_FFFF_8000_0000


def sim(tmp_path: Path) -> list[str]:
    return ["--backend", "sim", "--scenario", str(scenario_file(tmp_path))]


def who_maps_json(argv: list[str]) -> tuple[int, dict[str, Any]]:
    status, out = cli_text(["who-maps", *argv, "--json"])
    return status, json.loads(out)


def test_who_maps_scenario(tmp_path: Path) -> None:
    status, doc = who_maps_json([*sim(tmp_path), "0x3001800"])
    assert status == 0
    got = {(m["vaddr"], m["user"], m["writable"], m["executable"]) for m in doc["mappings"]}
    assert got == {
        ("0x401800", True, False, True),
        ("0xffffc90000101800", False, True, False),
        ("0xffffffff81000800", False, False, True),
        ("0xffff888000001800", False, True, False),
    }


def test_who_maps_shared_table_is_one_line(tmp_path: Path) -> None:
    """A frame under a table linked 8 times: the first walk's mapping, and one line for the 7
    links after it, 2 MiB apart (not 7 lines)."""
    status, doc = who_maps_json([*sim(tmp_path), "0x2000000"])
    assert status == 0
    got = [(m["vaddr"], m["copies"], m["repeats"]) for m in doc["mappings"]]
    assert got == [("0xffffff0000000000", 1, []), ("0xffffff0000200000", 7, [[7, "0x200000"]])]
    status, text = cli_text(["who-maps", *sim(tmp_path), "0x2000000"])
    assert "x7 (7 every 0x200000)" in text
    assert text.startswith("physical 0x2000000 ") and "8 mappings" in text


def test_who_maps_range(tmp_path: Path) -> None:
    """``PADDR-END``: every mapping meeting the range, clipped to it."""
    status, doc = who_maps_json([*sim(tmp_path), "0x3000000-0x3002000"])
    assert status == 0
    sizes = {(m["vaddr"], m["size"]) for m in doc["mappings"]}
    assert sizes == {
        ("0x400000", 0x2000),
        ("0xffffc90000100000", 0x2000),
        ("0xffffffff81000000", 0x1000),
        ("0xffff888000000000", 0x2000),
    }


@pytest.mark.parametrize(
    ("operand", "status"),
    [("0x5000000", 1), ("0xzz", 2), ("0x3000-0x2000", 2), ("1-", 2), ("0x" + "f" * 15, 2)],
)
def test_who_maps_exit_status(
    tmp_path: Path, operand: str, status: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not mapped: 1, with a line saying so; bad input: 2, one line on stderr."""
    got = cli.main(["who-maps", *sim(tmp_path), operand])
    out, err = capsys.readouterr()
    assert got == status
    if status == 1:
        assert "not mapped" in out and not err
    else:
        assert not out and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("name", KERNEL_DUMPS)
def test_who_maps_kernel_text_frame(name: str, kernel_dump: Callable[[str], Path]) -> None:
    """A kernel text frame (found through QEMU's ``info tlb``) is mapped at its kernel image
    address and in the direct map, and nowhere else."""
    tlb = info_tlb(f"{name}.info-tlb")
    text_va = min(va for va, (_, flags) in tlb.items() if va >= IMAGE and flags[0] == "-")
    va, pa = text_va + 0x5123, tlb[text_va][0] + 0x5123
    # The direct map: the lowest kernel-half address QEMU shows mapping physical 0.
    direct = min(va for va, (p, _) in tlb.items() if p == 0 and KERNEL_HALF <= va < IMAGE)
    status, doc = who_maps_json([str(kernel_dump(name)), hex(pa)])
    assert status == 0
    found = [(m["vaddr"], m["region"]) for m in doc["mappings"]]
    assert sorted(v for v, _ in found) == sorted([hex(va), hex(direct + pa)])
    regions = dict(found)
    assert regions[hex(direct + pa)] == "direct mapping of all physical memory"
    assert regions[hex(va)].startswith("kernel text mapping")


def test_aliases_scenario(tmp_path: Path) -> None:
    """Frames 0x3000000-0x3004000 are user r-x and kernel rw- (some kernel r-x too): W/X
    splits, one finding per set of mappings."""
    status, out = cli_text(["aliases", *sim(tmp_path), "--json"])
    assert status == 0
    doc = json.loads(out)
    findings = doc["findings"]
    wx = "writable and executable"
    assert [(f["start"], f["end"], f["kind"]) for f in findings] == [
        ("0x3000000", "0x3001000", wx),
        ("0x3001000", "0x3003000", wx),
        ("0x3003000", "0x3004000", wx),
    ]
    assert {m["vaddr"] for m in findings[1]["mappings"]} == {
        "0x401000", "0xffffc90000101000", "0xffffffff81000000", "0xffff888000001000"
    }  # fmt: skip
    # The shared table's frames are mapped 8 times with the same permissions: no finding.
    assert not any(f["start"] == "0x2000000" for f in findings)
    assert doc["direct_map"] is None  # not a Linux target: no direct map to set apart


def test_aliases_kernel_direct_map_is_one_fact(kernel_dump: Callable[[str], Path]) -> None:
    """On a Linux dump, no finding lists a direct-map address; the direct map's copies of the
    kernel image (executable there, another permission in the direct map) are counted in its
    one line."""
    status, out = cli_text(["aliases", str(kernel_dump("kaslr-pti")), "--json"])
    assert status == 0
    doc = json.loads(out)
    dm = doc["direct_map"]
    assert dm is not None and dm["ranges"] > 0
    base = int(dm["base"], 16)
    for f in doc["findings"]:
        for m in f["mappings"]:
            assert int(m["vaddr"], 16) - int(m["paddr"], 16) != base
    status, text = cli_text(["aliases", str(kernel_dump("kaslr-pti"))])
    assert text.splitlines()[-1].startswith(f"direct map (0x{base:x} + PA)")


@pytest.mark.parametrize("levels", [4, 5])
def test_who_maps_all_roots(levels: int, tmp_path: Path) -> None:
    """A frame two processes share (at different addresses): --all-roots lists the kernel's
    direct-map address once, then each of the two processes at its own address, and no other
    address space; without it only the selected table's."""
    from support.roots import DIRECT, build_roots_machine

    from gdbext.flags import NO_EXECUTE, USER_ACCESSIBLE, WRITABLE, PageTableFlags
    from gdbext.x86.paging import SIZE_4K, X86PageTable
    from gdbext_sim.elfcore import write_qemu_elf_core

    m = build_roots_machine(levels)
    frame = 0x1F0_0000  # free, and in the 32 MiB the direct map maps
    flags = PageTableFlags(USER_ACCESSIBLE | WRITABLE | NO_EXECUTE)
    for root, va in ((0x24_0000, 0x90_0000), (0x27_0000, 0xA0_0000)):
        pt = X86PageTable(m.memory, root, levels, allow_writes=True)
        pt.map_range(va, frame, SIZE_4K, SIZE_4K, flags, m.allocator)
    core = tmp_path / "shared.elf"
    write_qemu_elf_core(core, m.memory, [m.cpu(0x24_0000)])
    where = f"{frame + 0x10:#x}"
    status, doc = who_maps_json([str(core), "--all-roots", where])
    # No VMCOREINFO: the kernel half is read in CPU 0's table (roots' kernel table).
    assert status == 0 and doc["root"] == "0x240000"
    assert [h["vaddr"] for h in doc["mappings"]] == [f"{DIRECT[levels] + frame + 0x10:#x}"]
    spaces = {s["id"]: [h["vaddr"] for h in s["mappings"]] for s in doc["address_spaces"]}
    assert {k: v for k, v in spaces.items() if v} == {
        "0x240000": ["0x900010"],
        "0x270000": ["0xa00010"],
    }
    named = {s["id"]: s["identity"] for s in doc["address_spaces"]}
    assert named["0x240000"] == "sleep 100007" and named["0x270000"] == "./jit"
    status, text = cli_text(["who-maps", str(core), "--all-roots", where])
    assert status == 0
    assert "address space 0x240000 sleep 100007:" in text.splitlines()
    # The selected table alone (CPU 0's: the sleep process): its two addresses.
    status, doc = who_maps_json([str(core), where])
    assert [h["vaddr"] for h in doc["mappings"]] == [
        "0x900010",
        f"{DIRECT[levels] + frame + 0x10:#x}",
    ]
