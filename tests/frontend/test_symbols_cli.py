"""Symbol names where addresses go (``--system-map``, ``--vmlinux``) on the committed kernel dumps.

The symbol files are the tests' own (:mod:`support.symfiles`: addresses as a kernel is linked,
``_text`` at ``0xffffffff81000000``); the slide they are moved by is the dump's VMCOREINFO
``KERNELOFFSET`` read here with pyelftools, and where an address goes is QEMU's own ``info tlb``
of that stop (the golden), not gdbext's translation.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import pytest
from support.cli import cli_outcome
from support.goldens import kernel_paddr
from support.symfiles import kernel_offset, write_system_map, write_vmlinux

from gdbext import cli
from gdbext.plugin.host import Host

TOP = 1 << 64


_run = cli_outcome


@pytest.fixture
def system_map(tmp_path: Path) -> Path:
    return write_system_map(tmp_path / "System.map")


@pytest.mark.parametrize("name", ["4level", "kaslr-pti"])
def test_translate_a_symbol(
    name: str, system_map: Path, kernel_dump: Callable[[str], Path]
) -> None:
    dump = kernel_dump(name)
    slide = kernel_offset(dump)
    if name == "kaslr-pti":
        assert slide != 0
    vaddr = (0xFFFFFFFF82610000 + slide) % TOP
    status, out, _ = _run(
        "translate", dump, "--json", "--kernel", "--system-map", system_map, "init_task+0x10"
    )
    assert status == 0
    (record,) = json.loads(out)
    assert int(record["vaddr"], 16) == vaddr + 0x10
    assert record["symbol"] == "init_task+0x10"
    assert int(record["paddr"], 16) == kernel_paddr(name, vaddr + 0x10)
    # Text: the address, then its symbol; the rest as without symbols.
    _, text, _ = _run("translate", dump, "--kernel", "--system-map", system_map, "init_task")
    _, plain, _ = _run("translate", dump, "--kernel", hex(vaddr))
    first, *rest = text.splitlines()
    assert first.startswith(f"0x{vaddr:016x} <init_task> -> ")
    assert [first.replace(" <init_task>", ""), *rest] == plain.splitlines()


def test_vmlinux_on_a_kaslr_dump(tmp_path: Path, kernel_dump: Callable[[str], Path]) -> None:
    dump = kernel_dump("kaslr-pti")
    vmlinux = write_vmlinux(tmp_path / "vmlinux")
    slide = kernel_offset(dump)
    status, out, _ = _run("translate", dump, "--json", "--vmlinux", vmlinux, "init_task")
    assert status == 0
    (record,) = json.loads(out)
    assert int(record["vaddr"], 16) == 0xFFFFFFFF82600040 + slide
    assert record["symbol"] == "init_task"


def test_read_a_symbol(system_map: Path, kernel_dump: Callable[[str], Path]) -> None:
    dump = kernel_dump("kaslr-pti")
    vaddr = 0xFFFFFFFF82620000 + kernel_offset(dump)
    by_name = _run("read", dump, "--system-map", system_map, "jiffies", "8", "--format", "u64")
    by_number = _run("read", dump, hex(vaddr), "8", "--format", "u64")
    assert by_name == by_number
    assert by_name[0] == 0


def test_without_symbols_nothing_changes(kernel_dump: Callable[[str], Path]) -> None:
    dump = kernel_dump("4level")
    status, out, err = _run("translate", dump, "init_task")
    assert (status, out) == (2, "")
    assert "argument VADDR: not a number: init_task" in err
    _, out, _ = _run("translate", dump, "--json", "0xffffffff82610000")
    assert "symbol" not in json.loads(out)[0]


def test_symbol_errors(
    tmp_path: Path, system_map: Path, kernel_dump: Callable[[str], Path]
) -> None:
    dump = kernel_dump("4level")
    status, out, err = _run("translate", dump, "--system-map", system_map, "init_tsak")
    assert (status, out) == (2, "")
    assert err.strip().endswith(f"no symbol 'init_tsak' in {system_map}")
    bad = write_system_map(tmp_path / "bad.map", "ffffffff81000000 T _text\nnot a line\n")
    status, _, err = _run("translate", dump, "--system-map", bad, "_text")
    assert status == 2
    assert f"{bad}:2: not a System.map line" in err
    assert len(err.strip().splitlines()) == 1
    status, _, err = _run("read", dump, "--phys", "--system-map", system_map, "jiffies", "8")
    assert status == 2
    assert "--phys takes a physical address" in err
    status, _, err = _run(
        "translate", dump, "--system-map", system_map, "--vmlinux", system_map, "_text"
    )
    assert status == 2
    assert "not allowed with argument" in err


def test_walk_labels_sections(system_map: Path, kernel_dump: Callable[[str], Path]) -> None:
    """Each range under a ``Kernel image`` marker lies in that section, as the test's map
    bounds it moved by the dump's KERNELOFFSET; the walk covers what it covers without."""
    dump = kernel_dump("kaslr-pti")
    slide = kernel_offset(dump)
    sections = {
        ".text": (0xFFFFFFFF81000000, 0xFFFFFFFF81E00000),
        ".rodata": (0xFFFFFFFF82000000, 0xFFFFFFFF82400000),
        ".data": (0xFFFFFFFF82600000, 0xFFFFFFFF82800000),
        "init (freed)": (0xFFFFFFFF82A00000, 0xFFFFFFFF82C00000),
        ".bss": (0xFFFFFFFF82E00000, 0xFFFFFFFF83000000),
    }
    status, out, _ = _run("walk", dump, "--kernel", "--system-map", system_map)
    assert status == 0
    current = None
    seen = []
    covered = 0
    for line in out.splitlines():
        if line.startswith("---[ "):
            current = line[5:-5].removeprefix("Kernel image ")
            seen.append(current)
            continue
        if line.startswith("#") or " -> " not in line:
            continue
        start, end = (int(a, 16) for a in line.split()[0].split("-"))
        covered += end - start
        if current in sections:
            low, high = sections[current]
            assert low + slide <= start < end <= high + slide, line
    assert [s for s in seen if s in sections] == list(sections)
    _, plain, _ = _run("walk", dump, "--kernel")
    assert covered == sum(
        int(b, 16) - int(a, 16)
        for line in plain.splitlines()
        if " -> " in line and not line.startswith("#")
        for a, b in [line.split()[0].split("-")]
    )


@pytest.mark.parametrize("name", ["4level", "kaslr-pti", "la57"])
def test_the_slide_from_the_page_tables_alone(
    name: str, system_map: Path, kernel_dump: Callable[[str], Path]
) -> None:
    """Without VMCOREINFO (a live target that has none), ``_text`` is the first kernel-image
    leaf of the kernel's tables: the map moves by the slide VMCOREINFO would have given."""
    from gdbext.frontend.commands import RootOptions, open_page_table
    from gdbext.linux.kaslr import kernel_text
    from gdbext.linux.symbols import load_system_map, slide_for
    from gdbext.plugin.facts import KernelFacts
    from gdbext_dump.dump import open_dump

    dump = kernel_dump(name)
    target = open_dump(str(dump))
    try:
        pt = open_page_table(target, RootOptions(kernel=True))
        found = kernel_text(pt, KernelFacts())
    finally:
        if target.close is not None:
            target.close()
    assert found.how == "page-table evidence: first kernel-image leaf"
    table = load_system_map(system_map)
    assert slide_for(table, found.value, None) == kernel_offset(dump)


def test_debugger_commands_equal_the_command_line(
    system_map: Path, kernel_dump: Callable[[str], Path]
) -> None:
    """``pt-translate``, ``pt-read`` and ``pt-walk`` take the same options (one declaration)
    and print what the command line prints; ``--system-map`` completes file names."""
    import io

    from gdbext.frontend.completion import Completion
    from gdbext.session import Session

    dump = str(kernel_dump("kaslr-pti"))
    host = Host.create()
    session = Session(host)
    session.backend(["core", dump], io.StringIO())
    syms = ["--system-map", str(system_map)]
    for name, argv in (
        ("translate", [*syms, "init_task+0x10", "0xffffffff81000000"]),
        ("read", [*syms, "jiffies", "16"]),
        ("walk", ["--kernel", *syms]),
    ):
        out = io.StringIO()
        status = session.run(f"pt-{name}", argv, out)
        expected = _run(name, dump, *argv)
        assert (status, out.getvalue()) == expected[:2], name
    prefix = str(system_map)[:-3]
    got = session.complete("pt-translate", f"--system-map {prefix}")
    assert got == Completion.path(prefix)
    assert str(system_map) in got.candidates


def test_walk_has_a_symbol(system_map: Path, kernel_dump: Callable[[str], Path]) -> None:
    dump = kernel_dump("kaslr-pti")
    vaddr = 0xFFFFFFFF82610000 + kernel_offset(dump)
    by_name = _run("walk", dump, "--kernel", "--system-map", system_map, "--has", "init_task")
    by_number = _run("walk", dump, "--kernel", "--system-map", system_map, "--has", hex(vaddr))
    assert by_name == by_number
    assert by_name[0] == 0
    # The one mapping holding it, split where the image's sections start and end.
    spans = [
        [int(a, 16) for a in line.split()[0].split("-")]
        for line in by_name[1].splitlines()
        if " -> " in line and not line.startswith("#")
    ]
    assert all(a[1] == b[0] for a, b in pairwise(spans))
    assert any(start <= vaddr < end for start, end in spans)
    # Without symbols: the error a word that is not a number always gave.
    assert _run("walk", dump, "--has", "init_task") == (
        2,
        "",
        "walk: argument --has: not a number: init_task",
    )


def test_a_hex_word_that_is_no_symbol(system_map: Path, kernel_dump: Callable[[str], Path]) -> None:
    status, _, err = _run("translate", kernel_dump("4level"), "--system-map", system_map, "dead")
    assert status == 2
    assert err.endswith(f"no symbol 'dead' in {system_map} (did you mean 0xdead?)")


def test_another_kernels_symbols_are_warned_of(
    system_map: Path, kernel_dump: Callable[[str], Path]
) -> None:
    """The test's map is no real kernel's: its linux_banner does not hold the banner, which
    the kernel's does (read here from the dump with pyelftools at QEMU's translation)."""
    from support.dumps import elf_read

    dump = kernel_dump("kaslr-pti")
    warnings: list[str] = []
    out = io.StringIO()
    argv = ["translate", str(dump), "--kernel", "--system-map", str(system_map), "init_task"]
    assert cli.run(argv, Host.create(), out, warn=warnings.append) == 0
    banner = 0xFFFFFFFF82000100 + kernel_offset(dump)
    assert elf_read(dump, kernel_paddr("kaslr-pti", banner), 14) != b"Linux version "
    assert warnings == [
        f"{system_map}: linux_banner (0x{banner:x}) does not hold 'Linux version': "
        "the symbols may be another kernel's"
    ]
