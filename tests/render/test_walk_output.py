"""Walk output for people: widths, the column header, section markers, ``--merge va``, and the
bound on outputs that expand shared tables (alias bombs).

Expected values come from the scenarios built here (their frames are chosen by hand) and from
other outputs of the same dump (ptdump's own markers, the layout ``info`` shows).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from depth import kernels
from support.cli import cli_lines as run

from gdbext import cli, defaults

DUMPS = ["4level", "kaslr-pti", "la57"]


def scenario(tmp_path: Path, doc: dict[str, Any], name: str = "s.json") -> list[str]:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return ["--backend", "sim", "--scenario", str(path)]


# --- widths, header, markers on the committed dumps -------------------------------------------


@pytest.mark.parametrize("name", kernels())
@pytest.mark.parametrize(
    "options", [[], ["--kernel"], ["--no-merge"], ["--merge", "va"], ["--labels", "none"]]
)
def test_text_walk_lines_fit_120_columns(
    kernel_dump: Callable[[str], Path], name: str, options: list[str]
) -> None:
    status, lines = run(["walk", str(kernel_dump(name)), *options])
    assert status == 0
    wide = [line for line in lines if len(line) > 120]
    assert wide == []
    # The ESPfix aliases of the kernel half are there, within the width.
    if "--no-merge" not in options:
        assert any(" alias " in line for line in lines)


@pytest.mark.parametrize("name", DUMPS)
def test_header_names_the_columns(kernel_dump: Callable[[str], Path], name: str) -> None:
    status, lines = run(["walk", str(kernel_dump(name))])
    assert status == 0
    header = lines[1]
    assert header.split() == ["#", "start", "end", "size", "page", "perms", "attrs", "->",
                              "physical"]  # fmt: skip
    # Each column's name stands over its values: the first range line's fields end (or
    # start) where the header's do.
    first = next(line for line in lines if line.startswith("0x"))
    assert header.index("end") == first.index("-") + 1
    assert header.index("page") + 4 == first.index(" ", 48)  # the page size ends there
    assert header.index("perms") == first.index(" ", 49) + 2
    assert header.index("->") == first.index("->")


@pytest.mark.parametrize("name", DUMPS)
def test_text_markers_only_before_sections_with_lines(
    kernel_dump: Callable[[str], Path], name: str
) -> None:
    dump = str(kernel_dump(name))
    status, lines = run(["walk", dump])
    assert status == 0
    for i, line in enumerate(lines):
        if line.startswith("---["):
            assert lines[i + 1].startswith("0x"), f"empty section {line}"
    # ptdump (Linux's format) has the empty sections: the text shows a subset of its markers,
    # in its order.
    status, ptdump = run(["walk", dump, "--format", "ptdump"])
    assert status == 0
    text_markers = [line for line in lines if line.startswith("---[")]
    ptdump_markers = [line for line in ptdump if line.startswith("---[")]
    assert [m.split(" (default")[0] for m in text_markers] == [
        m for m in ptdump_markers if any(t.startswith(m) for t in text_markers)
    ]
    # ... and some of ptdump's sections have no mapping, so the text has fewer.
    assert len(text_markers) < len(ptdump_markers)


@pytest.mark.parametrize("name", DUMPS)
def test_info_shows_the_layout_bases(kernel_dump: Callable[[str], Path], name: str) -> None:
    dump = str(kernel_dump(name))
    status, lines = run(["info", dump])
    assert status == 0
    at = lines.index(next(line for line in lines if line.startswith("layout:")))
    assert lines[at].endswith("-level layout")
    names = [line.split(":")[0].strip() for line in lines[at + 1 : at + 7]]
    assert names == ["direct map", "vmalloc", "vmemmap", "kernel image", "modules", "fixmap"]
    direct = int(lines[at + 1].split()[2], 16)
    # The direct map's base maps physical 0 (QEMU's gva2gpa, recorded with the dump).
    status, out = run(["translate", dump, hex(direct)])
    assert status == 0 and out[0].split()[2] == "0x0"
    # JSON: the same bases, typed.
    status, out = run(["info", dump, "--json"])
    layout = json.loads("\n".join(out))["layout"]
    assert layout["bases"]["page_offset_base"]["value"] == hex(direct)
    assert layout["bases"]["page_offset_base"]["source"] == "page tables"


# --- --merge va -----------------------------------------------------------------------------

#: Eight 4 KiB user pages at 0x400000, read-only: two frames contiguous, then frames scattered
#: by hand; then two writable pages whose frames are contiguous; then a 2 MiB page.
SCATTERED: dict[str, Any] = {
    "levels": 4,
    "ram": "64M",
    "nxe": True,
    "mappings": [
        {"vaddr": "0x400000", "paddr": "0x100000", "size": "4K", "count": 2,
         "flags": ["USER_ACCESSIBLE"]},
        {"vaddr": "0x402000", "paddr": "0x900000", "size": "4K", "flags": ["USER_ACCESSIBLE"]},
        {"vaddr": "0x403000", "paddr": "0x205000", "size": "4K", "count": 3,
         "flags": ["USER_ACCESSIBLE"]},
        {"vaddr": "0x406000", "paddr": "0x7000", "size": "4K", "count": 2,
         "flags": ["USER_ACCESSIBLE"]},
        {"vaddr": "0x408000", "paddr": "0x300000", "size": "4K", "count": 2,
         "flags": ["USER_ACCESSIBLE", "WRITABLE", "NO_EXECUTE"]},
        {"vaddr": "0x600000", "paddr": "0x1000000", "size": "2M",
         "flags": ["USER_ACCESSIBLE", "WRITABLE", "NO_EXECUTE"]},
    ],
}  # fmt: skip


def test_merge_va_merges_scattered_frames(tmp_path: Path) -> None:
    sim = scenario(tmp_path, SCATTERED)
    status, pa = run(["walk", *sim])
    assert status == 0
    assert [line.split()[0] for line in pa if line.startswith("0x")] == [
        "0x0000000000400000-0x0000000000402000",
        "0x0000000000402000-0x0000000000403000",
        "0x0000000000403000-0x0000000000406000",
        "0x0000000000406000-0x0000000000408000",
        "0x0000000000408000-0x000000000040a000",
        "0x0000000000600000-0x0000000000800000",
    ]
    status, va = run(["walk", *sim, "--merge", "va"])
    assert status == 0
    assert va[0] == pa[0]  # the header
    assert [line for line in va if line.startswith("0x")] == [
        "0x0000000000400000-0x0000000000408000      32K  4K  r-x user             -> scattered",
        # The writable pages: other permissions; their frames are contiguous.
        "0x0000000000408000-0x000000000040a000       8K  4K  rw- user             -> 0x300000",
        "0x0000000000600000-0x0000000000800000       2M  2M  rw- user             -> 0x1000000",
    ]
    assert va[-1].startswith("# 3 lines, 11 leaf entries")
    # JSON: the scattered record's paddr is null, the others' as ever.
    status, out = run(["walk", *sim, "--merge", "va", "--json"])
    assert status == 0
    doc = json.loads("\n".join(out))
    assert [(m["vaddr"], m["paddr"], m["size"]) for m in doc["mappings"]] == [
        ("0x400000", None, 8 * 4096),
        ("0x408000", "0x300000", 2 * 4096),
        ("0x600000", "0x1000000", 2 << 20),
    ]
    # --merge va and --no-merge exclude each other; the default is pa.
    with pytest.raises(Exception, match="not allowed with"):
        run(["walk", *sim, "--merge", "va", "--no-merge"])
    assert run(["walk", *sim, "--merge", "pa"])[1] == pa


def test_merge_va_splits_at_section_markers(tmp_path: Path) -> None:
    """A range merged by VA that crosses into the fixmap's section is split there, and each
    part says whether its own frames are scattered: here only the first part's are."""
    flags = ["WRITABLE", "NO_EXECUTE", "GLOBAL"]
    doc = {
        "levels": 4,
        "ram": "64M",
        "mappings": [
            {"vaddr": "0xffffffffff577000", "paddr": "0x600000", "size": "4K", "flags": flags},
            {"vaddr": "0xffffffffff578000", "paddr": "0x700000", "size": "4K", "flags": flags},
            {"vaddr": "0xffffffffff579000", "paddr": "0x800000", "size": "4K", "count": 2,
             "flags": flags},
        ],
    }  # fmt: skip
    status, lines = run(["walk", *scenario(tmp_path, doc), "--labels", "linux", "--merge", "va"])
    assert status == 0
    assert lines[2:-1] == [
        "---[ End Modules ]---",
        "0xffffffffff577000-0xffffffffff579000       8K  4K  rw- kern G           -> scattered",
        "---[ Fixmap Area ]--- (default base)",
        "0xffffffffff579000-0xffffffffff57b000       8K  4K  rw- kern G           -> 0x800000",
    ]
    status, lines = run(["walk", *scenario(tmp_path, doc), "--merge", "va"])
    assert lines[1] == (
        "0xffffffffff577000-0xffffffffff57b000      16K  4K  rw- kern G           -> scattered"
    )


# --- alias bombs: outputs that expand shared tables stop at a bound ---------------------------


def ptdump_bomb() -> dict[str, Any]:
    """A PT whose entries alternate read-only and writable (ptdump prints a line per entry),
    linked under every entry of its PD, that PD under every entry of its PDPT: 512^3 lines."""
    mappings = [
        {"vaddr": hex(i * 4096), "paddr": hex(0x100000 + i * 4096), "size": "4K",
         "flags": ["WRITABLE"] if i % 2 else []}
        for i in range(512)
    ]  # fmt: skip
    return {
        "levels": 4,
        "ram": "16M",
        "mappings": mappings,
        "links": [
            {"vaddr": "0x200000", "level": 2, "count": 511, "table_of": "0x0"},
            {"vaddr": "0x40000000", "level": 3, "count": 511, "table_of": "0x0"},
        ],
    }


@pytest.mark.parametrize(
    ("fmt", "limit"),
    [("ptdump", 3000), ("qemu-tlb", 5000), ("json", 4000), ("text --no-merge", 2000)],
)
def test_per_leaf_outputs_stop_at_max_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str, limit: int
) -> None:
    sim = scenario(tmp_path, ptdump_bomb())
    words = fmt.split()
    args = ["walk", *sim, "--format", words[0], *words[1:], "--max-lines", str(limit)]
    status = cli.main(args)
    out, err = capsys.readouterr()
    assert status == 2
    assert err.count("\n") == 1
    assert err.startswith(f"gdbext: --format {fmt} stopped after {limit} lines, at 0x")
    assert "--max-lines" in err
    lines = out.splitlines()
    # Lines up to the bound (JSON: its records, after the opening line), nothing more;
    # qemu-tlb stops before a link's lines that would pass it (512 here).
    assert limit - 512 <= len(lines) <= limit + 3
    # The text output collapses the shared tables: the PT's 512 lines once, however many
    # leaves.
    status = cli.main(["walk", *sim])
    out, err = capsys.readouterr()
    assert status == 0 and len(out.splitlines()) == 516 and err == ""
    assert out.splitlines()[-1].startswith(f"# 514 lines, {512**3} leaf entries")


def test_ptdump_default_bound_is_lower(tmp_path: Path) -> None:
    """Without --max-lines, ptdump stops at its default (lower than the others'), in a
    separate process whose whole output is measured."""
    sim = scenario(tmp_path, ptdump_bomb())
    exe = Path(sys.executable).with_name("gdbext")
    proc = subprocess.run(
        [str(exe), "walk", *sim, "--format", "ptdump"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2
    limit = defaults.DEFAULT_MAX_LINES_PTDUMP
    assert limit < defaults.DEFAULT_MAX_LINES
    assert proc.stderr.startswith(f"gdbext: --format ptdump stopped after {limit} lines")
    assert proc.stderr.count("\n") == 1
    assert len(proc.stdout.splitlines()) == limit
    assert len(proc.stdout) < 100 * limit  # about 90 bytes a line
