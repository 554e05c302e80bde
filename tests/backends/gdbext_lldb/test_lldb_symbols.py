"""The symbols LLDB has loaded (``target create``, ``target modules load --slide``), where no
``--system-map``/``--vmlinux`` is given, in the real ``lldb`` on committed kernel dumps
(``pt-backend core``): each output equals the command line's with ``--system-map`` of the same
map byte for byte, as GDB's does (``tests/backends/gdbext_gdb/test_gdb_symbols.py``, which also
checks the addresses against QEMU's ``info tlb``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from support import lldbrun
from support.debuggers import cli_output
from support.symfiles import (
    INIT_TASK,
    SYMBOL_CASES,
    kernel_offset,
    write_system_map,
    write_vmlinux_from_map,
)

pytestmark = pytest.mark.skipif(not lldbrun.available(), reason="no lldb")


@pytest.mark.parametrize("name", ["4level", "kaslr-pti"])
def test_loaded_symbols_equal_the_command_line_with_the_map(
    name: str, tmp_path: Path, kernel_dump: Callable[[str], Path]
) -> None:
    dump = kernel_dump(name)
    slide = kernel_offset(dump)
    system_map = write_system_map(tmp_path / "System.map")
    elf = write_vmlinux_from_map(tmp_path / "vmlinux")
    # Before the driver: LLDB's commands that load run outside a Python command's context.
    load = [f"target create {elf}"]
    if slide:
        load.append(f"target modules load --file {elf.name} --slide {slide:#x}")
    commands = [f"pt-{command} {' '.join(argv)}" for command, argv in SYMBOL_CASES]
    run = lldbrun.run([f"pt-backend core {dump}", *commands], before=load)
    results = run.results[1:]
    assert all(r.ok for r in run.results), [r.err for r in run.results]
    for (command, argv), result in zip(SYMBOL_CASES, results, strict=True):
        expected = cli_output(command, str(dump), *argv, "--system-map", str(system_map))
        assert result.out == expected, (command, argv)
    assert results[0].out.startswith(
        f"0x{(INIT_TASK + 0x10 + slide) % (1 << 64):x} <init_task+0x10> -> "
    )


def test_unknown_names_and_no_symbols(kernel_dump: Callable[[str], Path], tmp_path: Path) -> None:
    dump = kernel_dump("4level")
    elf = write_vmlinux_from_map(tmp_path / "vmlinux")
    run = lldbrun.run([f"pt-backend core {dump}", "pt-translate init_task"])
    assert run.results[1].err == "error: pt-translate: argument VADDR: not a number: init_task\n"
    run = lldbrun.run([f"target create {elf}", f"pt-backend core {dump}", "pt-read nosuch 8"])
    assert run.results[2].err == "error: no symbol 'nosuch' in LLDB's loaded symbols\n"
