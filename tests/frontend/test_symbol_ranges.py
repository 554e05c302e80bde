"""Symbol names in ranges and the other address options (``walk --range``, ``search --range``,
``--has``, ``--u64``, ``--pointer-into``, ``kaslr --range``, ``diff --range``) on the committed
kernel dumps.

Each command given names must print what it prints given the numbers, which are computed here
from the tests' own ``System.map`` (:mod:`support.symfiles`) and the dump's VMCOREINFO
``KERNELOFFSET`` read with pyelftools; the output is checked against QEMU's ``info tlb`` of that
stop (the golden) where it says where an address is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from support.cli import cli_outcome
from support.goldens import info_tlb
from support.symfiles import INIT_TASK, JIFFIES, kernel_offset, write_system_map

#: The test map's addresses (unslid).
TEXT, ETEXT, SDATA, EDATA, END = (
    0xFFFFFFFF81000000,
    0xFFFFFFFF81E00000,
    0xFFFFFFFF82600000,
    0xFFFFFFFF82800000,
    0xFFFFFFFF83200000,
)


_run = cli_outcome


@pytest.fixture
def system_map(tmp_path: Path) -> Path:
    return write_system_map(tmp_path / "System.map")


def _spans(text: str) -> list[tuple[int, int]]:
    """The VA ranges of a text walk's lines."""
    return [
        (int(a, 16), int(b, 16))
        for line in text.splitlines()
        if " -> " in line and not line.startswith("#")
        for a, b in [line.split()[0].split("-")]
    ]


@pytest.mark.parametrize("name", ["4level", "kaslr-pti"])
def test_walk_range_by_names(
    name: str, system_map: Path, kernel_dump: Callable[[str], Path]
) -> None:
    dump = kernel_dump(name)
    slide = kernel_offset(dump)
    syms: list[str | Path] = ["--kernel", "--system-map", system_map]
    for named, start, end in (
        ("_text-_etext", TEXT, ETEXT),
        ("_text + 0x10 - _etext", TEXT + 0x10, ETEXT),
        ("_sdata+2M", SDATA, SDATA + (2 << 20)),
        ("jiffies-0x10000+0x8000", JIFFIES - 0x10000, JIFFIES - 0x8000),
        ("init_task-jiffies", INIT_TASK, JIFFIES),
    ):
        lo, hi = start + slide, end + slide
        by_name = _run("walk", dump, *syms, "--range", named)
        assert by_name == _run("walk", dump, *syms, "--range", f"{lo:#x}-{hi:#x}"), named
        assert by_name[0] == 0, named
        # Each line holds pages of the range (whole pages: the walk does not cut them).
        spans = _spans(by_name[1])
        assert spans and all(a < hi and lo < b for a, b in spans), named
    # The page holding _text, in QEMU's own format: the line QEMU's info tlb has.
    tlb = info_tlb(f"{name}.info-tlb-kernel")
    status, out, _ = _run("walk", dump, *syms, "--range", "_text+4K", "--format", "qemu-tlb")
    assert status == 0
    ((va, rest),) = [line.split(": ") for line in out.splitlines()]
    assert int(va, 16) <= TEXT + slide < int(va, 16) + (2 << 20)
    paddr, flags = rest.split()
    assert tlb[int(va, 16)] == (int(paddr, 16), flags)


def test_search_options_by_names(system_map: Path, kernel_dump: Callable[[str], Path]) -> None:
    dump = kernel_dump("kaslr-pti")
    slide = kernel_offset(dump)
    syms: list[str | Path] = ["--kernel", "--system-map", system_map, "--max", "4"]
    text, sdata, edata, end = (a + slide for a in (TEXT, SDATA, EDATA, END))
    cases = (
        (
            ["--range", "_sdata-_edata", "--u64", "_text"],
            ["--range", f"{sdata:#x}-{edata:#x}", "--u64", f"{text:#x}"],
        ),
        (
            ["--has", "jiffies", "--pointer-into", "_text-_end"],
            ["--has", f"{JIFFIES + slide:#x}", "--pointer-into", f"{text:#x}-{end:#x}"],
        ),
        (
            ["--range", "_text+1M", "--string", "Linux"],
            ["--range", f"{text:#x}+1M", "--string", "Linux"],
        ),
    )
    for named, numbered in cases:
        by_name = _run("search", dump, *syms, *named)
        assert by_name == _run("search", dump, *syms, *numbered), named
        assert by_name[0] in (0, 1) and by_name[2] == "", named
    # Physical search takes no names; a name without symbols is the error it always was.
    status, _, err = _run("search", dump, *syms, "--phys", "--range", "_text-_etext", "--u64", "1")
    assert status == 2
    assert "--phys takes a physical range, not symbols: _text-_etext" in err
    assert _run("search", dump, "--u64", "_text") == (
        2,
        "",
        "search: argument --u64: not a number: _text",
    )


def test_kaslr_and_diff_ranges_by_names(
    system_map: Path, kernel_dump: Callable[[str], Path]
) -> None:
    dump = kernel_dump("kaslr-pti")
    slide = kernel_offset(dump)
    sdata, edata, text, end = (a + slide for a in (SDATA, EDATA, TEXT, END))
    syms: list[str | Path] = ["--system-map", system_map]
    leaks = ["kaslr", dump, "--kernel", "--leaks", "--all-pages", "--max", "3", *syms]
    by_name = _run(*leaks, "--range", "_sdata-_edata")
    assert by_name == _run(*leaks, "--range", f"{sdata:#x}-{edata:#x}")
    assert by_name[2] == ""
    # The PTI pair's halves over the kernel image: what the user half lacks of it.
    diff = ["diff", dump, "--b-user-pgd", *syms]
    by_name = _run(*diff, "--range", "_text-_end")
    assert by_name == _run(*diff, "--range", f"{text:#x}-{end:#x}")
    assert by_name[0] == 1  # PTI's user half maps only the entry text of the image
    for line in by_name[1].splitlines():
        if line[:1] in "-+~" and " -> " in line:
            a, b = (int(x, 16) for x in line[1:].split()[0].split("-"))
            assert text <= a < b <= end, line


def test_range_errors(system_map: Path, kernel_dump: Callable[[str], Path]) -> None:
    dump = kernel_dump("4level")
    syms: list[str | Path] = ["--kernel", "--system-map", system_map]
    # Without symbols: the numbers' error, as before names were taken.
    assert _run("walk", dump, "--range", "init_task-jiffies") == (
        2,
        "",
        "walk: argument --range: not a number: init_task",
    )
    status, _, err = _run("walk", dump, *syms, "--range", "init_tsak-jiffies")
    assert status == 2
    assert err.endswith(f"no symbol 'init_tsak' in {system_map}")
    status, _, err = _run("walk", dump, *syms, "--range", "jiffies-init_task")
    assert status == 2
    assert err.startswith("walk: argument --range: jiffies-init_task: bad address range")
    status, _, err = _run("walk", dump, *syms, "--range", "_text+lots")
    assert (status, err) == (2, "walk: argument --range: not a size: lots")
    status, _, err = _run("walk", dump, *syms, "--range", "_text")
    assert (status, err) == (
        2,
        "walk: argument --range: not an address range (START-END or START+SIZE, of numbers or "
        "symbols): '_text'",
    )
