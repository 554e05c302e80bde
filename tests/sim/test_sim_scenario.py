"""Scenario files: what the simulator builds, and its ELF core of a scenario."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.segments import NoteSegment
from support.paths import DEMO

from gdbext import cli
from gdbext.errors import InputError
from gdbext.mapper import read_table
from gdbext.x86.records import Anomaly
from gdbext_sim.scenario import build_machine, load_scenario


def test_cpu_state_follows_the_scenario() -> None:
    m = build_machine({"levels": 5, "nxe": False, "cpus": 2, "ram": "8M"})
    assert len(m.cpus) == 2
    cpu = m.cpus[1]
    assert cpu.levels == 5 and not cpu.nxe and cpu.wp and cpu.paging and cpu.long_mode
    assert cpu.root == m.page_table.root
    assert m.memory.ram_ranges[0].end == 8 << 20
    # Page-table frames come from the top of RAM downward.
    assert m.page_table.root == (8 << 20) - 4096


def test_links_and_recursive_index_and_raw_entries() -> None:
    m = build_machine(
        {
            "mappings": [{"vaddr": "0x200000", "paddr": "0x5000", "size": "4K"}],
            "links": [{"vaddr": "0x400000", "level": 2, "count": 3, "table_of": "0x200000"}],
            "recursive_index": 511,
            "entries": [{"vaddr": "0x200000", "level": 1, "value": "0x8000000000005001"}],
        }
    )
    pt = m.page_table
    root_entries = read_table(m.memory, pt.root)
    assert root_entries[511] == pt.root | 0x3
    t = [pt.translate(v) for v in (0x200000, 0x400000, 0x600000, 0x800000)]
    assert {x.paddr for x in t} == {0x5000}
    assert {x.steps[-1].table for x in t} == {t[0].steps[-1].table}  # one shared PT
    assert not t[0].executable and not t[0].writable
    kinds = [a.kind for a in pt.iter_runs() if isinstance(a, Anomaly)]
    assert kinds == ["recursive"]


def test_bootinfo_v09_scenario_feeds_the_heap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "v09.json"
    path.write_text(
        json.dumps(
            {
                "ram": "64M",
                "bootinfo": {
                    "version": "0.9",
                    "at": "0x5000",
                    "features": ["map_physical_memory", "recursive_page_table"],
                    "physical_memory_offset": "0xffff800000000000",
                    "regions": [
                        {"start": "0x0", "end": "0x1000", "kind": "FrameZero"},
                        {"start": "0x1000", "end": "0x9f000", "kind": "Usable"},
                        {"start": "0x100000", "end": "0x400000", "kind": "Kernel"},
                        {"start": "0x400000", "end": "0x3fe0000", "kind": "Usable"},
                    ],
                },
            }
        )
    )
    # No --memmap: the simulator suggests its BootInfo, version and features.
    status = cli.main(["heap", "--backend", "sim", "--scenario", str(path), "--json"])
    assert status == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"start": "0xffff800000400000", "end": "0xffff800003fe0000"}
    # The v0.9 layout with both features puts the offset at 1552 (reference table).
    m = load_scenario(path)
    raw = m.memory.read(0x5000 + 1552, 8)
    assert struct.unpack("<Q", raw)[0] == 0xFFFF800000000000


def test_core_of_the_demo_scenario(tmp_path: Path) -> None:
    core = tmp_path / "demo.core"
    proc = subprocess.run(
        [sys.executable, "-m", "gdbext_sim", str(DEMO), "--core", str(core)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    machine = load_scenario(DEMO)
    root = machine.page_table.root
    with core.open("rb") as f:
        elf = ELFFile(f)
        assert elf["e_type"] == "ET_CORE" and elf["e_machine"] == "EM_X86_64"
        notes = [
            n
            for seg in elf.iter_segments()
            if isinstance(seg, NoteSegment)
            for n in seg.iter_notes()
        ]
        qemu = [n for n in notes if n["n_name"] == "QEMU"]
        assert len(qemu) == 1
        desc = qemu[0]["n_descdata"]
        assert struct.unpack_from("<Q", desc, 416)[0] == machine.cpus[0].cr3 == root
        loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
        seg = next(s for s in loads if s["p_paddr"] <= root < s["p_paddr"] + s["p_memsz"])
        f.seek(seg["p_offset"] + root - seg["p_paddr"])
        assert f.read(4096) == machine.memory.read(root, 4096)
    assert core.stat().st_blocks * 512 < 1 << 20  # sparse: 256M of RAM, a few KB on disk


def test_core_to_unwritable_path_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "gdbext_sim", str(DEMO), "--core", str(tmp_path / "no/such/x")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"links": [{"vaddr": "0x0", "level": 2, "table_of": "0x200000"}]}, "no table maps"),
        ({"recursive_index": 600}, "must be 0..511"),
        ({"entries": [{"vaddr": "0x0", "level": 9, "value": 0}]}, "must be 1..4"),
        ({"cpus": 0}, "must be 1..64"),
        ({"bootinfo": {"version": "0.10", "at": "0x1000"}}, "must be 0.11 or 0.9"),
        (
            {"mappings": [{"vaddr": "0x0", "paddr": "0x0", "size": "4K", "count": 0}]},
            "must be 1..16777216",
        ),
    ],
)
def test_bad_scenarios(doc: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        build_machine(doc, "x.json")
