"""Simulator scenario -> dump file -> reader -> the identical walk and translations.

The simulator's ``write_qemu_elf_core`` writes QEMU's ELF layout; LiME and raw images are
written here from the same simulated memory. Every renderer's output on the dump must equal
its output on the simulator target.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from pathlib import Path

import pytest
from support.paths import ROOT

from gdbext import cli
from gdbext.addr import AddrRange
from gdbext.errors import NotMappedError, TableOutsideRamError
from gdbext.frontend import commands
from gdbext.mapper import is_captured
from gdbext.plugin.target import Target
from gdbext.render import jsonout, qemu_tlb, text
from gdbext.x86.records import Anomaly
from gdbext_dump.dump import open_dump
from gdbext_sim.memory import SparsePhysMemory
from gdbext_sim.scenario import SimMachine, load_scenario

SCENARIOS = ["demo", "la57"]


def machine(name: str) -> SimMachine:
    return load_scenario(ROOT / "fixtures" / "scenarios" / f"{name}.json")


def _split(ranges: Iterable[AddrRange], skip: Iterable[int]) -> list[AddrRange]:
    """``ranges`` without the 4 KiB frames in ``skip``."""
    out = list(ranges)
    for frame in sorted(skip):
        kept = []
        for r in out:
            if r.start <= frame < r.end:
                if r.start < frame:
                    kept.append(AddrRange(r.start, frame))
                if frame + 0x1000 < r.end:
                    kept.append(AddrRange(frame + 0x1000, r.end))
            else:
                kept.append(r)
        out = kept
    return out


def write_lime(path: Path, memory: SparsePhysMemory, skip: Iterable[int] = ()) -> None:
    """LiME: per range a 32-byte header (magic, version 1, inclusive start and end), then the
    bytes. Written sparsely: only frames that are not all zeros."""
    ranges = _split(memory.ram_ranges, skip)
    offsets = []
    pos = 0
    with path.open("wb") as f:
        for r in ranges:
            f.seek(pos)
            f.write(struct.pack("<IIQQ8x", 0x4C694D45, 1, r.start, r.end - 1))
            offsets.append(pos + 32)
            pos += 32 + r.size
        for paddr, data in memory.iter_frames():
            for r, off in zip(ranges, offsets, strict=True):
                if r.start <= paddr < r.end:
                    f.seek(off + paddr - r.start)
                    f.write(data)
        f.truncate(pos)


def write_raw(path: Path, memory: SparsePhysMemory) -> None:
    """The physical memory from 0 to the end of the last RAM range, holes as zeros."""
    with path.open("wb") as f:
        for paddr, data in memory.iter_frames():
            f.seek(paddr)
            f.write(data)
        f.truncate(memory.ram_ranges[-1].end)


def renders(target: Target, **kw: object) -> dict[str, list[str]]:
    out = {}
    for name, module in (("qemu-tlb", qemu_tlb), ("json", jsonout), ("text", text)):
        result = commands.walk(target, commands.WalkOptions(**kw))  # type: ignore[arg-type]
        out[name] = list(module.render_walk(result))
    return out


@pytest.mark.parametrize("name", SCENARIOS)
def test_elf_lime_raw_walks_equal_the_simulator(tmp_path: Path, name: str) -> None:
    sim = machine(name)
    expected = renders(sim.to_target())
    assert len(expected["qemu-tlb"]) > 10
    sim.write_core(tmp_path / "sim.core")
    write_lime(tmp_path / "sim.lime", sim.memory)
    write_raw(tmp_path / "sim.raw", sim.memory)
    for file in ("sim.core", "sim.lime", "sim.raw"):
        # LiME and raw carry no CPU state: the root comes from --cr3 (and levels from --levels).
        root = commands.RootOptions()
        if not file.endswith(".core"):
            root = commands.RootOptions(cr3=sim.cpus[0].cr3, levels=sim.cpus[0].levels)
        target = open_dump(str(tmp_path / file), format_in="raw" if file == "sim.raw" else None)
        try:
            assert renders(target, root=root) == expected, file
            assert list(target.ram or []) == list(sim.memory.ram_ranges)
        finally:
            assert target.close is not None
            target.close()


@pytest.mark.parametrize("name", SCENARIOS)
def test_translations_equal_the_simulator(tmp_path: Path, name: str) -> None:
    sim = machine(name)
    sim.write_core(tmp_path / "sim.core")
    target = open_dump(str(tmp_path / "sim.core"))
    sim_pt = commands.open_page_table(sim.to_target())
    dump_pt = commands.open_page_table(target)
    vaddrs = [m.vaddr + 0x123 for m in sim_pt.iter_mappings()][::7]
    assert vaddrs
    for va in vaddrs:
        assert dump_pt.translate(va) == sim_pt.translate(va)


def test_not_in_the_dump_is_not_not_mapped(tmp_path: Path) -> None:
    sim = machine("demo")
    sim_pt = commands.open_page_table(sim.to_target())
    text_steps = sim_pt.translate(0x400000).steps
    pt_of_text = text_steps[-1].table  # the 4 KiB table holding 0x400000's leaf
    data_leaf = sim_pt.translate(0x600000).paddr  # a leaf frame (user data)
    assert pt_of_text != sim_pt.translate(0x600000).steps[-1].table
    write_lime(tmp_path / "partial.lime", sim.memory, skip=[pt_of_text, data_leaf])
    target = open_dump(str(tmp_path / "partial.lime"))
    root = commands.RootOptions(cr3=sim.cpus[0].cr3)
    pt = commands.open_page_table(target, root)
    # Leaf frame outside the dump: the address is mapped, the frame just is not captured.
    t = pt.translate(0x600010)
    assert t.paddr == data_leaf + 0x10
    assert not is_captured(target.mapper, t.paddr)
    assert is_captured(target.mapper, sim_pt.translate(0x400000).paddr)
    # Table outside the dump: not "not mapped" (exit 1) but a table we cannot read (exit 2).
    with pytest.raises(TableOutsideRamError) as err:
        pt.translate(0x400000)
    assert err.value.table == pt_of_text
    assert err.value.exit_status == 2
    with pytest.raises(NotMappedError) as missing:
        pt.translate(0x800000)
    assert missing.value.exit_status == 1
    # The walk reports the table as an anomaly and still lists everything else.
    result = commands.walk(target, commands.WalkOptions(root=root))
    records = list(result.runs())
    anomalies = [r for r in records if isinstance(r, Anomaly)]
    assert [(a.kind, a.table) for a in anomalies] == [("table-outside-ram", text_steps[-2].table)]
    assert anomalies[0].detail == f"table 0x{pt_of_text:x}"
    sim_lines = list(qemu_tlb.render_walk(commands.walk(sim.to_target())))
    dump_lines = list(qemu_tlb.render_walk(commands.walk(target, commands.WalkOptions(root=root))))
    lost = AddrRange(0x400000, 0x600000)  # the span of the missing table
    assert dump_lines == [line for line in sim_lines if int(line.split(":")[0], 16) not in lost]


@pytest.mark.parametrize("name", SCENARIOS)
def test_command_line_on_the_dump_equals_the_simulator(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sim = machine(name)
    core = tmp_path / "sim.core"
    sim.write_core(core)
    scenario = str(ROOT / "fixtures" / "scenarios" / f"{name}.json")
    vaddrs = [
        hex(m.vaddr + 0x10) for m in commands.open_page_table(sim.to_target()).iter_mappings()
    ]
    for argv in (
        ["walk", "--format", "qemu-tlb"],
        ["walk", "--json"],
        ["translate", "--json", *vaddrs[::50], "0x1000"],
    ):
        assert cli.main([*argv, "--backend", "sim", "--scenario", scenario]) in (0, 1)
        expected = capsys.readouterr()
        assert cli.main([argv[0], str(core), *argv[1:]]) in (0, 1)  # gdbext CMD DUMP ...
        got = capsys.readouterr()
        assert got.out == expected.out, argv
        assert got.err == expected.err == ""
