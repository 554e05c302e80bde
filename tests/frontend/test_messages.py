"""Messages a person can act on: exit-2 errors on stderr, walks shown up to where they stopped,
options named in their errors.

Dumps are written here from hand-built tables; expected entries are read back from the
simulated memory by the test itself, never taken from the engine's output.
"""

from __future__ import annotations

import json
import mmap
import re
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from support.paths import ROOT

from gdbext import cli
from gdbext.cpu import CpuState
from gdbext.flags import PageTableFlags
from gdbext.geometry import index_shift
from gdbext.mapper import read_u64
from gdbext.x86.paging import X86PageTable
from gdbext_sim.elfcore import write_qemu_elf_core
from gdbext_sim.kdump import write_kdump_from_memory
from gdbext_sim.memory import SparsePhysMemory, TopDownFrameAllocator

CR0, CR4, EFER = 0x80050033, 0x6A0, 0xD01
ROOT_DIR = ROOT
DEMO = ROOT_DIR / "fixtures" / "scenarios" / "demo.json"


class Machine:
    """16 MiB: 0x400000 (4K, user) and 0xffffffff81000000 (a 2M page whose PD entry has
    reserved bit 13 set) mapped; 0x600000 has a PT but no entry."""

    def __init__(self) -> None:
        self.mem = SparsePhysMemory(16 << 20)
        alloc = TopDownFrameAllocator(self.mem)
        root = alloc.allocate_frame()
        assert root is not None
        self.root = root
        pt = X86PageTable(self.mem, root, 4, allow_writes=True)
        pt.map_range(0x400000, 0x300000, 0x1000, 0x1000, PageTableFlags.USER_ACCESSIBLE, alloc)
        pt.map_range(0x601000, 0x301000, 0x1000, 0x1000, PageTableFlags(0), alloc)
        pt.map_range(0xFFFFFFFF81000000, 0x200000, 1 << 21, 1 << 21, PageTableFlags(0), alloc)
        # Bit 13 of a 2 MiB leaf is reserved (bits 13..20 must be zero).
        pd_entry = self.entry_addr(0xFFFFFFFF81000000, 2)
        self.mem.write(pd_entry, (read_u64(self.mem, pd_entry) | 1 << 13).to_bytes(8, "little"))
        self.cpu = CpuState(cr0=CR0, cr3=root, cr4=CR4, efer=EFER)

    def entry_addr(self, vaddr: int, level: int) -> int:
        """Physical address of the level-``level`` entry for ``vaddr``, by hand."""
        table = self.root
        for lvl in range(4, level, -1):
            entry = read_u64(self.mem, table + ((vaddr >> index_shift(lvl)) & 0x1FF) * 8)
            table = entry & 0x000F_FFFF_FFFF_F000
        return table + ((vaddr >> index_shift(level)) & 0x1FF) * 8

    def steps(self, vaddr: int, down_to: int) -> list[tuple[int, int, int, int]]:
        """(level, table, index, entry) from the root down to ``down_to``, read by hand."""
        out = []
        for level in range(4, down_to - 1, -1):
            addr = self.entry_addr(vaddr, level)
            table, index = addr & ~0xFFF, (addr & 0xFFF) // 8
            out.append((level, table, index, read_u64(self.mem, addr)))
        return out


@pytest.fixture(scope="module")
def machine() -> Machine:
    return Machine()


@pytest.fixture(scope="module")
def core(machine: Machine, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("msg") / "m.elf"
    write_qemu_elf_core(path, machine.mem, [machine.cpu])
    return path


def main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """The console script's entry point, with its real stdout and stderr."""
    status = cli.main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


# --- Exit 2 on stderr ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vaddr", "message"),
    [
        ("0x800000000000", "0x800000000000 is not canonical for 48-bit virtual addresses"),
        ("0x10000000000000000", "0x10000000000000000 is out of range: addresses are 64-bit"),
        ("0xffffffff81000000", "PD entry 0x0000000000"),
    ],
    ids=["non-canonical", "past-64-bits", "reserved-bits"],
)
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_exit_2_is_stderr_only(
    core: Path, capsys: pytest.CaptureFixture[str], vaddr: str, message: str, fmt: str
) -> None:
    status, out, err = main(["translate", str(core), vaddr, "--format", fmt], capsys)
    assert status == 2
    assert out == ("[]\n" if fmt == "json" else "")
    assert err.count("\n") == 1 and err.startswith("gdbext: translate: ")
    assert message in err
    if vaddr == "0xffffffff81000000":
        assert "has reserved bits 0x2000 set" in err


def test_exit_2_after_results_keeps_the_results(
    core: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = main(["translate", str(core), "0x400000", "0x800000000000"], capsys)
    assert status == 2
    assert out.startswith("0x0000000000400000 -> 0x300000  4K page")
    assert "canonical" not in out and "not canonical" in err


def test_unreadable_kdump_page_is_stderr_only(
    machine: Machine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A page table whose compressed page does not decompress: an error, not a result."""
    path = tmp_path / "bad.kdump"
    write_kdump_from_memory(path, machine.mem, [machine.cpu], flattened=False)
    pt_table = machine.entry_addr(0x400000, 1) & ~0xFFF
    blob = zlib.compress(machine.mem.read(pt_table, 0x1000), 1)
    data = bytearray(path.read_bytes())
    at = data.find(blob)
    assert at > 0 and data.count(blob) == 1
    data[at + 2 : at + len(blob)] = b"\xff" * (len(blob) - 2)
    path.write_bytes(bytes(data))
    status, out, err = main(["translate", str(path), "0x400000"], capsys)
    assert (status, out) == (2, "")
    assert err.count("\n") == 1 and "does not decompress" in err


# --- Walks shown up to where they stopped -------------------------------------------------


def test_unmapped_shows_each_level(
    machine: Machine, core: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = main(["translate", str(core), "0x600000"], capsys)
    assert (status, err) == (1, "")
    lines = out.splitlines()
    assert lines[0] == (
        "0x0000000000600000: 0x600000 is not mapped: its PT entry is not present (value 0x0)"
    )
    steps = machine.steps(0x600000, 1)
    assert len(lines) == 1 + len(steps)
    for line, (_level, table, index, entry) in zip(lines[1:], steps, strict=True):
        assert f" 0x{table:x}[{index:3}] = 0x{entry:016x}  " in line
    assert lines[-1].endswith("(not present)") and "  PRESENT " in lines[1]
    status, out, _ = main(["translate", str(core), "0x600000", "--json"], capsys)
    [record] = json.loads(out)
    assert [(s["level"], int(s["table"], 16), s["index"], int(s["entry"], 16))
            for s in record["steps"]] == steps  # fmt: skip
    assert record["steps"][-1]["flags"] == [] and "PRESENT" in record["steps"][0]["flags"]


def test_not_captured_shows_each_level(
    machine: Machine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pt_table = machine.entry_addr(0x400000, 1) & ~0xFFF
    path = tmp_path / "no-pt.kdump"
    write_kdump_from_memory(path, machine.mem, [machine.cpu], excluded=[pt_table >> 12])
    status, out, _ = main(["translate", str(path), "0x400000"], capsys)
    assert status == 1
    lines = out.splitlines()
    assert "not captured in the dump" in lines[0]
    steps = machine.steps(0x400000, 2)
    for line, (_level, table, index, entry) in zip(lines[1:4], steps, strict=True):
        assert f" 0x{table:x}[{index:3}] = 0x{entry:016x}  PRESENT" in line
    index = (0x400000 >> 12) & 0x1FF
    assert lines[4] == (
        f"      PT 0x{pt_table:x}[{index:3}] unknown: the table is not captured in the dump"
    )
    status, out, _ = main(["translate", str(path), "0x400000", "--json"], capsys)
    [record] = json.loads(out)
    assert len(record["steps"]) == 3
    assert record["unread"] == {
        "level": 1,
        "table": f"0x{pt_table:x}",
        "index": index,
        "reason": "not captured in the dump",
    }


# --- VMCOREINFO numbers are range-checked -------------------------------------------------


def _mutated_dump(source: Path, dest: Path, old: bytes, new: bytes) -> Path:
    """A copy of ``source`` whose VMCOREINFO note has the line ``old`` replaced by ``new``;
    the text keeps its length (padded with NULs, or shortened by the BUILD-ID line, which
    gdbext does not use). The copy keeps the dump's holes (it is 144 MiB, mostly holes)."""
    from minimize import copy_sparse

    copy_sparse(source, dest)
    with open(dest, "r+b") as f, mmap.mmap(f.fileno(), 0) as data:
        start = data.find(b"OSRELEASE=")
        end = data.find(b"\0", start)
        assert 0 <= start < end
        text = bytes(data[start:end])
        assert text.count(old) == 1
        text = text.replace(old, new)
        if len(text) > end - start:
            build = text.index(b"BUILD-ID=")
            cut = len(text) - (end - start)
            text = text[: build + 9] + text[build + 9 + cut :]
        data[start:end] = text.ljust(end - start, b"\0")
    return dest


@pytest.mark.parametrize(
    "value", [b"-1", b"415848733842", b"8805336009", b"0"], ids=["neg", "huge", "big", "zero"]
)
def test_absurd_max_physmem_bits_is_ignored_with_a_warning(
    kernel_dump: Callable[[str], Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    value: bytes,
) -> None:
    """With NUMBER(MAX_PHYSMEM_BITS)=-1 a labelled walk once died (MemoryError);
    8805336009 took 9 s and 2.3 GB. Now the value is ignored, said so, and the walk is the same
    as on the clean dump."""
    clean = kernel_dump("4level")
    bad = _mutated_dump(
        clean,
        tmp_path / "bad.elf",
        b"NUMBER(MAX_PHYSMEM_BITS)=46\n",
        b"NUMBER(MAX_PHYSMEM_BITS)=" + value + b"\n",
    )
    args = ["walk", "--kernel", "--range", "0xffff888000000000+64G"]
    status, want, err = main([args[0], str(clean), *args[1:]], capsys)
    assert (status, err) == (0, "")
    status, got, err = main([args[0], str(bad), *args[1:]], capsys)
    assert status == 0 and got == want
    assert err == (
        f"gdbext: warning: VMCOREINFO (note): NUMBER(MAX_PHYSMEM_BITS)={value.decode()} is out "
        "of range (32..52); ignored\n"
    )
    status, info, _ = main(["info", "--json", str(bad)], capsys)
    problems = json.loads(info)["details"]["VMCOREINFO problems"]
    assert f"NUMBER(MAX_PHYSMEM_BITS)={value.decode()} is out of range" in problems


# --- --user-pgd without a PTI pair --------------------------------------------------------


@pytest.mark.parametrize("command", ["translate", "walk"])
def test_user_pgd_without_pti_pair_warns(
    kernel_dump: Callable[[str], Path], capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """The 4level dump runs with PTI off (the twin pages are zero), kaslr-pti with it on
    (see gdbext.audit.pti's evidence): only the first gets the warning, on stderr."""
    extra = ["0xffffffff81000000"] if command == "translate" else ["--range", "0x0-0x1000"]
    cr3 = {"4level": 0x61B6000, "kaslr-pti": 0x61C4000}  # the dumps' info-registers.txt
    for name, warned in (("4level", True), ("kaslr-pti", False)):
        dump = kernel_dump(name)
        _, out, err = main([command, str(dump), "--user-pgd", *extra], capsys)
        if warned:
            assert err == (
                f"gdbext: warning: --user-pgd: 0x{cr3[name] | 0x1000:x} is not the user half of "
                "a PTI pair (the user halves differ: entry 0 is present only in the kernel "
                "table (0x6302067 vs 0x0)); this is the table at root | 0x1000 all the same\n"
            )
        else:
            assert err == ""
        assert "PTI" not in out


# --- Options: sizes, hex without 0x, typos, negatives, reprs --------------------------------


def test_range_takes_a_size_with_a_suffix(core: Path, capsys: pytest.CaptureFixture[str]) -> None:
    by_suffix = main(["walk", str(core), "--json", "--range", "0x0+16M"], capsys)
    by_number = main(["walk", str(core), "--json", "--range", "0x0-0x1000000"], capsys)
    assert by_suffix == by_number and by_suffix[0] == 0
    mapped = [int(m["vaddr"], 16) for m in json.loads(by_suffix[1])["mappings"]]
    assert mapped == [0x400000, 0x601000]  # what Machine maps below 16 MiB


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["translate", "{core}", "dead"],
            "translate: argument VADDR: not a number: dead (did you mean 0xdead?)",
        ),
        (
            ["translate", "ffffffff81000000"],
            "translate: argument VADDR: not a number: "
            "ffffffff81000000 (did you mean 0xffffffff81000000?)",
        ),
        (
            ["walk", "{core}", "--has", "ffffffff81000000"],
            "walk: argument --has: not a number: "
            "ffffffff81000000 (did you mean 0xffffffff81000000?)",
        ),
        (
            ["walk", "{core}", "--range", "ffffffff81000000+16M"],
            "walk: argument --range: not a "
            "number: ffffffff81000000 (did you mean 0xffffffff81000000?)",
        ),
        (
            ["walk", "{core}", "--rnage", "0x0-0x1000"],
            "walk: unrecognized arguments: --rnage 0x0-0x1000 (did you mean --range?)",
        ),
        (
            ["walk", "{core}", "--max-leafs=5"],
            "walk: unrecognized arguments: --max-leafs=5 (did you mean --max-leaves?)",
        ),
        (
            ["wlak", "{core}"],
            "argument COMMAND: invalid choice: wlak (choose from info, walk, "
            "translate, read, search, who-maps, aliases, heap, audit, kaslr, roots, tasks, "
            "snapshot, diff, map, backends) (did you mean walk?)",
        ),
        (
            ["walk", "{core}", "--format", "jsno"],
            "walk: argument --format: invalid choice: jsno "
            "(choose from json, ptdump, qemu-tlb, text) (did you mean json?)",
        ),
        (["walk", "{core}", "--cr3", "-4096"], "walk: argument --cr3: -4096 is negative"),
        (["walk", "{core}", "--cpu", "-1"], "walk: argument --cpu: -1 is negative"),
        (["walk", "{core}", "--max-leaves", "-1"], "walk: argument --max-leaves: -1 is negative"),
        (["walk", "{core}", "--range", "0x1000+-5"], "walk: argument --range: -5 is negative"),
        (["translate", "{core}", "--", "-5"], "translate: argument VADDR: -5 is negative"),
        (["heap", "{core}", "--at", "-1"], "heap: argument --at: -1 is negative"),
        (["heap", "{core}", "--memmap", "e820", "--at", "0x1000"], 'no setup header magic "HdrS"'),
    ],
)
def test_option_errors_say_what_to_type(
    core: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    status, out, err = main([a.replace("{core}", str(core)) for a in argv], capsys)
    assert (status, out) == (2, "")
    assert err.count("\n") == 1 and message in err, err
    assert "b'" not in err and "'" not in err.replace("'!'", "")  # no Python reprs


def test_unknown_cr3_names_the_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A dump without CPU state (a raw image): CR3 is unknown, and the message says --cr3."""
    path = tmp_path / "ram.raw"
    path.write_bytes(bytes(0x10000))
    status, _, err = main(["translate", str(path), "--format-in", "raw", "0x1000"], capsys)
    assert status == 2
    assert "CR3 is unknown (CPU 0); give the page-table root with --cr3 ADDR" in err


# --- info --json is typed -----------------------------------------------------------------


def test_info_json_values_are_typed(
    kernel_dump: Callable[[str], Path], machine: Machine, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    elf = kernel_dump("4level")
    path = tmp_path / "m.kdump"
    write_kdump_from_memory(path, machine.mem, [machine.cpu], flattened=True)
    for dump in (elf, path):
        status, out, _ = main(["info", "--json", str(dump)], capsys)
        assert status == 0
        details = json.loads(out)["details"]

        def check(value: object) -> None:
            if isinstance(value, dict):
                for v in value.values():
                    check(v)
            elif isinstance(value, str):
                # Text is a description, never a bare number, a number with a unit or yes/no.
                assert not re.fullmatch(r"-?\d+( \w+)?|yes|no|true|false", value), value
            else:
                assert isinstance(value, int | bool), value

        for value in details.values():
            check(value)
        assert details["file size"] == dump.stat().st_size
        assert details["CPUs"] == 1
    assert details["dumped pages"] == (16 << 20) >> 12  # all of RAM (zero pages too)
    assert details["max_mapnr"].startswith("0x") and isinstance(details["nr_cpus"], int)
    assert isinstance(details["records"], int) and details["header version"] == 6


# --- Address bits beyond MAXPHYADDR -------------------------------------------------------


def _pd_points_high(tmp_path: Path, max_phys_bits: int | None) -> Path:
    """A scenario whose PD entry for 0x400000 links a table at 0x2000_0000_1000 (bit 45):
    beyond RAM, and beyond a 40-bit CPU's addresses."""
    doc: dict[str, object] = {
        "mappings": [{"vaddr": "0x400000", "paddr": "0x100000", "size": "4K"}],
        "entries": [{"vaddr": "0x400000", "level": 2, "value": "0x200000001003"}],
    }
    if max_phys_bits is not None:
        doc["max_phys_bits"] = max_phys_bits
    path = tmp_path / "high.json"
    path.write_text(json.dumps(doc))
    return path


def test_address_bits_beyond_a_known_width_are_reserved_bits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = _pd_points_high(tmp_path, 40)  # QEMU's qemu64
    status, out, err = main(["translate", "--backend", "sim", "--scenario", str(scenario),
                             "0x400000"], capsys)  # fmt: skip
    assert (status, out) == (2, "")
    assert "PD entry 0x0000200000001003 has reserved bits 0x200000000000 set" in err
    assert "outside physical memory" not in err


def test_address_bits_beyond_an_unknown_width_are_named(
    machine: Machine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dump says nothing of MAXPHYADDR: 52 is assumed (no false "reserved"), and the message
    names the bit a narrower CPU would reserve. The table is outside RAM either way (exit 2)."""
    mem = machine.mem
    pd_entry = machine.entry_addr(0x400000, 2)
    saved = mem.read(pd_entry, 8)
    mem.write(pd_entry, (0x200000001003).to_bytes(8, "little"))
    try:
        path = tmp_path / "high.elf"
        write_qemu_elf_core(path, mem, [machine.cpu])
    finally:
        mem.write(pd_entry, saved)
    status, out, err = main(["translate", str(path), "0x400000"], capsys)
    assert (status, out) == (2, "")
    assert (
        "PD entry 0x0000200000001003 points to table 0x200000001000, which is outside physical "
        "memory (address bit 45 is set: reserved bits on a CPU whose MAXPHYADDR is 45 or less"
    ) in err
