"""The ``gdbext`` command line on simulator scenarios.

Expected values are computed from the scenario documents themselves (an independent expansion
of their ``mappings`` and ``links``), never from the engine's own output.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gdbext import cli
from gdbext.flags import PageTableFlags
from gdbext.plugin.host import Host
from gdbext.units import parse_int, parse_size

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "fixtures" / "scenarios" / "demo.json"
LA57 = ROOT / "fixtures" / "scenarios" / "la57.json"

QEMU_CHARS = [
    (63, "X"),
    (8, "G"),
    (7, "P"),
    (6, "D"),
    (5, "A"),
    (4, "C"),
    (3, "T"),
    (2, "U"),
    (1, "W"),
]


def canonical(va: int, va_bits: int) -> int:
    va &= (1 << va_bits) - 1
    if va >> (va_bits - 1):
        va |= (1 << 64) - (1 << va_bits)
    return va


def expand(doc: dict[str, Any]) -> dict[int, tuple[int, int, int]]:
    """Reference model: vaddr -> (paddr, page_size, leaf flag bits) for every leaf."""
    leaves: dict[int, tuple[int, int, int]] = {}
    for m in doc["mappings"]:
        size = parse_size(m["size"])
        flags = int(PageTableFlags.PRESENT)
        for name in m.get("flags", []):
            flags |= int(PageTableFlags[name])
        if size > 4096:
            flags |= int(PageTableFlags.HUGE_PAGE)
        va, pa = parse_int(m["vaddr"]), parse_int(m["paddr"])
        for k in range(parse_int(m.get("count", 1))):
            leaves[va + k * size] = (pa + k * size, size, flags)
    va_bits = 12 + 9 * doc["levels"]
    for link in doc.get("links", []):
        # Entries at `level` linking the table that maps `table_of`: copies of its leaves.
        span = 1 << (12 + 9 * (link["level"] - 1))
        src = parse_int(link["table_of"]) & ~(span - 1)
        dst = parse_int(link["vaddr"])
        copies = {va - src: leaf for va, leaf in leaves.items() if src <= va < src + span}
        for k in range(parse_int(link.get("count", 1))):
            for off, leaf in copies.items():
                leaves[canonical(dst + k * span + off, va_bits)] = leaf
    return leaves


def qemu_line(va: int, leaf: tuple[int, int, int]) -> str:
    pa, size, flags = leaf
    shown = flags & ~(1 << 7) if size == 4096 else flags
    chars = "".join(c if shown >> bit & 1 else "-" for bit, c in QEMU_CHARS)
    return f"{va:016x}: {pa:016x} {chars}"


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = cli.main(args)
    out, err = capsys.readouterr()
    return status, out, err


def sim(path: Path) -> list[str]:
    return ["--backend", "sim", "--scenario", str(path)]


@pytest.mark.parametrize("path", [DEMO, LA57], ids=["demo", "la57"])
def test_walk_qemu_tlb_equals_reference(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(path.read_text())
    expected = [qemu_line(va, leaf) for va, leaf in sorted(expand(doc).items())]
    status, out, _ = run(["walk", *sim(path), "--format", "qemu-tlb"], capsys)
    assert status == 0
    assert out.splitlines() == expected


@pytest.mark.parametrize("path", [DEMO, LA57], ids=["demo", "la57"])
def test_walk_json_no_merge_lists_every_leaf(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = json.loads(path.read_text())
    ref = expand(doc)
    status, out, _ = run(["walk", *sim(path), "--json", "--no-merge"], capsys)
    assert status == 0
    got = json.loads(out)
    assert got["levels"] == doc["levels"]
    assert int(got["root"], 16) % 4096 == 0
    assert [int(m["vaddr"], 16) for m in got["mappings"]] == sorted(ref)
    for m in got["mappings"]:
        pa, size, flags = ref[int(m["vaddr"], 16)]
        assert int(m["paddr"], 16) == pa and m["page_size"] == size == m["size"]
        assert m["writable"] == bool(flags & 2)
        assert m["user"] == bool(flags & 4)
        assert m["executable"] == (not flags >> 63)
        assert "PRESENT" in m["flags"]


def test_walk_json_merges_contiguous_leaves(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["walk", *sim(DEMO), "--json"], capsys)
    assert status == 0
    mappings = json.loads(out)["mappings"]
    by_va = {int(m["vaddr"], 16): m for m in mappings}
    direct = by_va[0xFFFF888000000000]  # 128 x 2M, contiguous, same flags: one record
    assert direct["size"] == 128 << 21 and direct["page_size"] == 1 << 21
    assert direct["paddr"] == "0x0" and direct["flags"] == [
        "PRESENT",
        "WRITABLE",
        "HUGE_PAGE",
        "GLOBAL",
        "NO_EXECUTE",
    ]
    assert (direct["user"], direct["writable"], direct["executable"]) == (False, True, False)
    text = by_va[0xFFFFFFFF81000000]
    assert text["size"] == 512 * 4096 and text["paddr"] == "0x1000000"
    assert (text["writable"], text["executable"]) == (False, True)
    # Merged records cover exactly the reference leaves.
    total = sum(m["size"] for m in mappings)
    assert total == sum(size for _, size, _ in expand(json.loads(DEMO.read_text())).values())


def test_walk_text_collapses_linked_tables(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["walk", *sim(DEMO)], capsys)
    assert status == 0
    lines = out.splitlines()
    alias = [line for line in lines if " alias " in line]
    # 63 extra links of one page table, consecutive: one line with the count and span.
    assert len(alias) == 1
    assert alias[0].startswith("0xffffff0000200000-0xffffff0008000000")
    assert "PT 0x" in alias[0] and "x63 more, 2 leaves each" in alias[0]
    assert alias[0].endswith("as at 0xffffff0000000000")  # the same permissions as there
    direct = [line for line in lines if line.startswith("0xffff888000000000-")]
    assert direct == [
        "0xffff888000000000-0xffff888010000000     256M  2M  rw- kern G           -> 0x0"
    ]
    assert lines[-1].startswith("# ") and "128 + " not in lines[-1]
    leaves = len(expand(json.loads(DEMO.read_text())))
    assert f"{leaves} leaf entries" in lines[-1]


def test_walk_range_prunes(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(
        ["walk", *sim(DEMO), "--range", "0x400000-0x402000", "--format", "qemu-tlb"], capsys
    )
    assert status == 0
    assert out.splitlines() == [
        "0000000000400000: 0000000001000000 -------U-",
        "0000000000401000: 0000000001001000 -------U-",
    ]
    status, out, _ = run(["walk", *sim(DEMO), "--range", "0x10000000-0x20000000"], capsys)
    assert status == 1  # nothing there


def test_translate_json(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(
        ["translate", *sim(DEMO), "--json", "0xffff888001234567", "0x400010", "0x500000"],
        capsys,
    )
    assert status == 1  # one address is not mapped
    direct, user, missing = json.loads(out)
    assert direct["paddr"] == "0x1234567" and direct["page_size"] == 1 << 21
    assert [s["level"] for s in direct["steps"]] == [4, 3, 2]
    assert direct["steps"][0]["index"] == 0x111 and direct["steps"][2]["index"] == 9
    assert (direct["user"], direct["writable"], direct["executable"]) == (False, True, False)
    assert user["paddr"] == "0x1000010" and user["page_size"] == 4096
    assert (user["user"], user["writable"], user["executable"]) == (True, False, True)
    assert len(user["steps"]) == 4
    assert (
        missing["vaddr"] == "0x500000"
        and missing["level"] == 1
        and "not mapped" in missing["error"]
    )


def test_translate_la57_text(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["translate", *sim(LA57), "0x00fffffffffff123"], capsys)
    assert status == 0
    lines = out.splitlines()
    assert lines[0].startswith("0x00fffffffffff123 -> 0x201123  4K page  rw- user")
    assert [line.split()[0] for line in lines[1:]] == ["PML5", "PML4", "PDPT", "PD", "PT"]


def test_info_reports_control_registers(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["info", *sim(LA57), "--json"], capsys)
    assert status == 0
    doc = json.loads(out)
    cpu = doc["cpus"][0]
    assert cpu["levels"] == 5 and cpu["la57"] and cpu["nxe"] and cpu["wp"]
    assert int(cpu["cr4"], 16) & (1 << 12)
    assert doc["ram"] == [{"start": "0x0", "end": hex(128 << 20)}]


def test_heap_from_bootinfo(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(
        ["heap", *sim(DEMO), "--memmap", "bootinfo", "--at", "0x1000", "--json"], capsys
    )
    assert status == 0
    # Largest Usable region of the demo: 0x1400000-0x7fe0000, in the higher half.
    assert json.loads(out) == {"start": "0xffff888001400000", "end": "0xffff888007fe0000"}


def test_heap_from_json_memmap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    regions = tmp_path / "regions.json"
    regions.write_text(
        json.dumps(
            [
                {"start": "0x1001", "end": "0x9fff", "kind": "Usable"},
                {"start": "0x100000", "end": "0x100800", "kind": "Usable"},
            ]
        )
    )
    status, out, _ = run(
        [
            "heap",
            *sim(DEMO),
            "--memmap",
            "json",
            str(regions),
            "--phys-offset",
            "0xffff800000000000",
            "--json",
        ],
        capsys,
    )
    assert status == 0
    assert json.loads(out) == {"start": "0xffff800000002000", "end": "0xffff800000009000"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["walk"], "--backend NAME is required"),
        (["walk", "--backend", "sim"], "needs --scenario"),
        (["walk", "--backend", "sim", "--scenario", "/nonexistent.json"], "cannot read"),
        (["translate", "--backend", "sim", "--scenario", str(DEMO), "zzz"], "not a number"),
        (["walk", "--backend", "sim", "--scenario", str(DEMO), "--range", "5"], "range"),
        (["heap", "--backend", "sim", "--scenario", str(DEMO), "--memmap", "json"], "FILE"),
        (["walk", "--backend", "sim", "--scenario", str(DEMO), "--cpu", "3"], "no CPU 3"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_usage_is_one_line_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _out, err = run(args, capsys)
    assert status == 2
    assert err.count("\n") == 1 and message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("{", "not JSON"),
        ('{"levels": 3}', "levels: must be 4 or 5"),
        ('{"mappings": [{"vaddr": "0x1000", "paddr": "0", "size": "3K"}]}', "must be 4K, 2M or 1G"),
        ('{"mappings": [{"vaddr": "0x1001", "paddr": "0", "size": "4K"}]}', "not aligned"),
        (
            '{"mappings": [{"vaddr": "0x1000", "paddr": "0", "size": "4K", "flags": ["BOGUS"]}]}',
            "unknown page-table flag",
        ),
        (
            '{"mappings": [{"vaddr": "0x1000", "paddr": "0", "size": "4K"},'
            ' {"vaddr": "0x1000", "paddr": "0", "size": "4K"}]}',
            "already mapped",
        ),
        (
            '{"mappings": [{"vaddr": "0x800000000000", "paddr": "0", "size": "4K"}]}',
            "not canonical",
        ),
    ],
)
def test_bad_scenario_is_one_line_exit_2(
    doc: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(doc)
    status, _, err = run(["walk", *sim(path)], capsys)
    assert status == 2
    assert err.count("\n") == 1 and message in err and str(path) in err


def test_console_script_runs(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("gdbext")
    proc = subprocess.run(
        [str(exe), "walk", *sim(DEMO), "--range", "0x600000-0x601000", "--format", "qemu-tlb"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "0000000000600000: 0000000001010000 X------UW\n"


ALIAS_BOMB = {
    "levels": 4,
    "ram": "16M",
    "mappings": [{"vaddr": "0x0", "paddr": "0x100000", "size": "4K", "count": 512}],
    "links": [
        {"vaddr": "0x200000", "level": 2, "count": 511, "table_of": "0x0"},
        {"vaddr": "0x40000000", "level": 3, "count": 511, "table_of": "0x0"},
    ],
}


def test_alias_bomb_is_bounded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """512 x 512 x 512 leaves through two shared tables: the text walk collapses them, and the
    per-leaf outputs stop at --max-leaves with a one-line error instead of running for hours."""
    path = tmp_path / "bomb.json"
    path.write_text(json.dumps(ALIAS_BOMB))
    status, out, _ = run(["walk", *sim(path)], capsys)
    assert status == 0
    lines = out.splitlines()
    # The header, the leaves once, the PT linked 511 more times, the PD too, the summary.
    assert len(lines) == 5
    assert "x511 more, 512 leaves each" in lines[2]
    assert "PD 0x" in lines[3] and "x511 more, 262144 leaves each" in lines[3]
    assert f"{512**3} leaf entries" in lines[4]
    status, out, err = run(
        ["walk", *sim(path), "--format", "qemu-tlb", "--max-leaves", "100000"], capsys
    )
    assert status == 2
    assert err.count("\n") == 1 and "passed 100000 leaf entries" in err
    assert len(out.splitlines()) <= 100000


def test_translate_exit_status_is_the_worst_outcome(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, _ = run(["translate", *sim(DEMO), "0x400000", "0x500000"], capsys)
    assert status == 1  # not mapped
    status, out, err = run(["translate", *sim(DEMO), "0x500000", "0x800000000000"], capsys)
    assert status == 2  # a non-canonical address is bad input: its message is stderr's
    assert "not canonical" in err and "not canonical" not in out
    assert out.startswith("0x0000000000500000: 0x500000 is not mapped")


def test_maxphyaddr_of_the_target_is_honoured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m36.json"
    path.write_text(
        json.dumps(
            {
                "max_phys_bits": 36,
                "mappings": [{"vaddr": "0x400000", "paddr": "0x100000", "size": "4K"}],
                # Bit 40 of the PTE is reserved with MAXPHYADDR 36.
                "entries": [{"vaddr": "0x400000", "level": 1, "value": "0x10000100003"}],
            }
        )
    )
    status, out, err = run(["translate", *sim(path), "--json", "0x400000"], capsys)
    assert status == 2 and json.loads(out) == []  # an error (stderr's), not a result
    assert "PT entry 0x0000010000100003 has reserved bits 0x10000000000" in err
    status, out, _ = run(["walk", *sim(path), "--format", "qemu-tlb"], capsys)
    assert status == 1 and out == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cr3", str(1 << 64)], "--cr3"),
        (["--cr3", "0x7ff0000000000000"], "--cr3"),
    ],
)
def test_bad_cr3(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(["walk", *sim(DEMO), *args], capsys)
    assert status == 2 and message in err and err.count("\n") == 1


def test_heap_must_be_canonical(capsys: pytest.CaptureFixture[str]) -> None:
    status, _, err = run(
        ["heap", *sim(DEMO), "--memmap", "bootinfo", "--at", "0x1000",
         "--phys-offset", "0x800000000000"],
        capsys,
    )  # fmt: skip
    assert status == 2 and "not canonical" in err


def test_non_utf8_and_deep_json_are_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, data in (("latin.json", b"\xff"), ("deep.json", b"[" * 100000)):
        path = tmp_path / name
        path.write_bytes(data)
        status, _, err = run(["walk", *sim(path)], capsys)
        assert status == 2 and err.count("\n") == 1 and str(path) in err


def test_backends_lists_the_simulator_and_dumps(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["backends"], capsys)
    assert status == 0
    names = {line.split()[0]: line for line in out.splitlines()}
    assert set(names) == {"core", "gdb", "gdbstub", "lldb", "sim"}
    assert "simulator" in names["sim"] and "dump" in names["core"]
    assert "GDB" in names["gdb"]


def test_text_translate_decodes_every_level(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["translate", *sim(DEMO), "0xffffffff81000010"], capsys)
    assert status == 0
    head, *steps = out.splitlines()
    assert head == "0xffffffff81000010 -> 0x1000010  4K page  r-x kern"
    assert [s.split()[0] for s in steps] == ["PML4", "PDPT", "PD", "PT"]
    assert steps[-1].endswith("= 0x0000000001000101  PRESENT GLOBAL")


@pytest.mark.parametrize("unbuffered", ["1", ""])
def test_output_stopped_and_continued_in_a_pipe_arrives_whole(
    kernel_dump: Callable[[str], Path], unbuffered: str
) -> None:
    """Ctrl-Z then ``fg`` (SIGSTOP, SIGCONT) while the walk is blocked writing into a full pipe
    cuts a write short. Under PYTHONUNBUFFERED a text layer writing straight to the file drops
    what is left of the block (about half of a kernel's 3 MB ``qemu-tlb`` walk); the output
    arrives whole, byte for byte the in-process command line's, with and without it."""
    dump = str(kernel_dump("kaslr-pti"))
    expected = io.StringIO()
    cli.run(["walk", dump, "--format", "qemu-tlb"], Host.create(), expected)
    exe = Path(sys.executable).with_name("gdbext")
    env = dict(os.environ, PYTHONUNBUFFERED=unbuffered)
    proc = subprocess.Popen(
        [str(exe), "walk", dump, "--format", "qemu-tlb"], stdout=subprocess.PIPE, env=env
    )
    assert proc.stdout is not None
    got = b""
    try:
        for _ in range(10):
            time.sleep(0.1)  # the pipe fills and the writer blocks
            proc.send_signal(signal.SIGSTOP)
            proc.send_signal(signal.SIGCONT)
            got += os.read(proc.stdout.fileno(), 1 << 16)
        got += proc.stdout.read()
    finally:
        proc.kill()
        proc.wait()
    assert len(expected.getvalue()) > 1 << 20
    assert got.decode() == expected.getvalue()
