"""The symbols GDB has loaded, where no ``--system-map``/``--vmlinux`` is given, in the real
``gdb -nx -batch`` on committed kernel dumps (``pt-backend core``).

The symbol file is the tests' ``System.map`` (:mod:`support.symfiles`) written as an ELF
symbol table and loaded with ``symbol-file`` (``-o SLIDE`` on the KASLR dump, the slide read
from the dump's VMCOREINFO with pyelftools). Each output must equal, byte for byte, the command
line's with ``--system-map`` of the same map; the translated address is checked against the
map's own address and QEMU's ``info tlb`` of that stop.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from support.debuggers import cli_output, gdb, marked, sections, without_progress
from support.goldens import kernel_paddr
from support.symfiles import (
    INIT_TASK,
    JIFFIES,
    SYMBOL_CASES,
    kernel_offset,
    write_system_map,
    write_vmlinux_from_map,
)

pytestmark = pytest.mark.skipif(shutil.which("gdb") is None, reason="no gdb")

TOP = 1 << 64


@pytest.mark.parametrize("name", ["4level", "kaslr-pti"])
def test_loaded_symbols_equal_the_command_line_with_the_map(
    name: str, tmp_path: Path, kernel_dump: Callable[[str], Path]
) -> None:
    dump = kernel_dump(name)
    slide = kernel_offset(dump)
    if name == "kaslr-pti":
        assert slide != 0
    system_map = write_system_map(tmp_path / "System.map")
    elf = write_vmlinux_from_map(tmp_path / "vmlinux")
    proc = gdb(
        f"symbol-file {elf} -o {slide:#x}",
        f"pt-backend core {dump}",
        *marked(*(f"pt-{command} {' '.join(argv)}" for command, argv in SYMBOL_CASES)),
    )
    got = sections(proc.stdout)
    assert len(got) == len(SYMBOL_CASES), proc.stderr
    for (command, argv), text in zip(SYMBOL_CASES, got, strict=True):
        expected = cli_output(command, str(dump), *argv, "--system-map", str(system_map))
        assert text == expected, (command, argv)
    # The map's address moved by the slide, and where QEMU maps it.
    vaddr = (INIT_TASK + 0x10 + slide) % TOP
    paddr = kernel_paddr(name, vaddr)
    assert got[0].startswith(f"0x{vaddr:x} <init_task+0x10> -> 0x{paddr:x} ")
    assert f"0x{(JIFFIES + slide) % TOP:x} <jiffies> -> " in got[0]
    # The tests' map is not this kernel's: its linux_banner warns, in GDB as on the command line.
    assert "linux_banner" in without_progress(proc.stderr)


def test_loaded_symbols_are_not_moved(kernel_dump: Callable[[str], Path], tmp_path: Path) -> None:
    """Symbols loaded without the slide stay where they were loaded: gdbext moves nothing (a
    ``--system-map`` given is moved by KERNELOFFSET, and wins)."""
    dump = kernel_dump("kaslr-pti")
    elf = write_vmlinux_from_map(tmp_path / "vmlinux")
    system_map = write_system_map(tmp_path / "System.map")
    given = ["--kernel", "init_task+0x10", "--system-map", str(system_map)]
    proc = gdb(
        f"symbol-file {elf}",
        f"pt-backend core {dump}",
        *marked("pt-translate --kernel init_task+0x10", f"pt-translate {' '.join(given)}"),
    )
    text, with_file = sections(proc.stdout)
    # A file given wins over the loaded symbols, and is moved by the slide.
    assert with_file == cli_output("translate", str(dump), *given)
    assert with_file != text
    vaddr = hex(INIT_TASK + 0x10)
    plain = cli_output("translate", str(dump), "--kernel", vaddr)
    # The file's address, named, and not mapped there on this KASLR kernel.
    assert "is not mapped" in plain
    assert text == plain.replace(f"{vaddr}:", f"{vaddr} <init_task+0x10>:", 1)


def test_unknown_names_and_no_symbols(kernel_dump: Callable[[str], Path], tmp_path: Path) -> None:
    dump = kernel_dump("4level")
    elf = write_vmlinux_from_map(tmp_path / "vmlinux")
    without = gdb(f"pt-backend core {dump}", "pt-translate init_task")
    # No symbols loaded: a word that is not a number is the usage error it always was.
    assert without.stderr == "pt-translate: argument VADDR: not a number: init_task\n"
    with_file = gdb(f"symbol-file {elf}", f"pt-backend core {dump}", "pt-read nosuch 8")
    assert "no symbol 'nosuch' in GDB's loaded symbols" in with_file.stderr
