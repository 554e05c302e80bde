"""Committed real-kernel dumps (``fixtures/kernels``) against QEMU's own answers.

Each fixture is a QEMU ``dump-guest-memory`` ELF of Debian's 6.1 kernel, minimized (see
``fixtures/README.md``). The goldens beside it were printed by QEMU for the same frozen VM:
``info tlb`` with CPU 0's CR3 (and, set through the gdbstub, with the kernel's root and the PTI
user PGD), ``info registers``, ``gva2gpa`` of sampled addresses, and the kernel's serial log.
The walk must equal ``info tlb`` line for line.
"""

from __future__ import annotations

import functools
import io
import json
import mmap
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from make_dumps import kernel_root, parse_gva2gpa
from minimize import first_difference, golden_path, golden_roots, read_golden
from support.goldens import registers
from support.paths import KERNELS

from gdbext import cli
from gdbext.errors import UntranslatedError
from gdbext.frontend import commands
from gdbext.geometry import geometry
from gdbext.plugin.host import Host
from gdbext.render.qemu_tlb import render_walk
from gdbext_dump.dump import open_dump

NAMES = sorted(p.name.removesuffix(".elf.xz") for p in KERNELS.glob("*.elf.xz"))
#: Goldens: ``info tlb`` with CPU 0's CR3, the kernel's root, the PTI user PGD.
KINDS = ("info-tlb", "info-tlb-kernel", "info-tlb-user")
CASES = [(n, k) for n in NAMES for k in KINDS if golden_path(KERNELS, n, k) is not None]
#: The CLI options that select each golden's root.
CLI_ROOT = {"info-tlb": [], "info-tlb-kernel": ["--kernel"], "info-tlb-user": ["--user-pgd"]}
QEMU_TLB_LINE = re.compile(r"^[0-9a-f]{16}: [0-9a-f]{16} [-XGPDACTUW]{9}$")

DumpFactory = Callable[[str], Path]


def test_the_three_configurations_are_committed() -> None:
    assert {"4level", "kaslr-pti", "la57"} <= set(NAMES)
    assert ("kaslr-pti", "info-tlb-user") in CASES
    for name in NAMES:
        assert (name, "info-tlb-kernel") in CASES


@functools.cache
def golden(name: str, kind: str) -> tuple[str, ...]:
    path = golden_path(KERNELS, name, kind)
    assert path is not None
    return tuple(read_golden(path))


@functools.cache
def host() -> Host:
    return Host.create()


def run_cli(argv: Sequence[str]) -> tuple[int, list[str]]:
    out = io.StringIO()
    status = cli.run(list(argv), host(), out)
    return status, out.getvalue().splitlines()


def assert_same(got: Sequence[str], expected: Sequence[str]) -> None:
    diff = first_difference(got, expected)
    assert diff is None, diff


# --- the goldens themselves ----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_golden_is_qemu_info_tlb(name: str, kind: str) -> None:
    lines = golden(name, kind)
    assert len(lines) > 60_000  # ESPFIX alone is 65,536 lines in the kernel's tables
    bad = [line for line in lines if not QEMU_TLB_LINE.match(line)]
    assert bad == []
    vaddrs = [int(line[:16], 16) for line in lines]
    assert vaddrs == sorted(vaddrs) and len(set(vaddrs)) == len(vaddrs)


# --- the reader on real notes ---------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_cpu_state_from_qemu_notes(name: str, kernel_dump: DumpFactory) -> None:
    regs = registers(name)
    target = open_dump(str(kernel_dump(name)))
    cpu = target.cpu(0)
    assert (cpu.cr0, cpu.cr3, cpu.cr4) == (regs["CR0"], regs["CR3"], regs["CR4"])
    assert cpu.levels == (5 if regs["CR4"] & 1 << 12 else 4)
    assert cpu.levels == (5 if name == "la57" else 4)


@pytest.mark.parametrize("name", NAMES)
def test_vmcoreinfo_facts(name: str, kernel_dump: DumpFactory) -> None:
    dump = kernel_dump(name)
    target = open_dump(str(dump))
    assert target.facts.kernel_root == kernel_root(dump)
    assert target.facts.kernel_levels == (5 if name == "la57" else 4)
    serial = (KERNELS / f"{name}.serial.log").read_text()
    release = re.search(r"Linux version (\S+)", serial)
    assert release is not None
    assert target.facts.vmcoreinfo is not None
    vmcoreinfo = target.facts.vmcoreinfo.entries
    assert vmcoreinfo["OSRELEASE"] == release.group(1)
    offset = target.facts.kernel_offset
    assert (offset != 0) == (name == "kaslr-pti")


@pytest.mark.parametrize("name", NAMES)
def test_boot_params_e820_is_kept(name: str, kernel_dump: DumpFactory) -> None:
    """The fixture keeps Linux's boot_params; its e820 table is what the kernel printed."""
    serial = (KERNELS / f"{name}.serial.log").read_text()
    printed = [
        (int(a, 16), int(b, 16) + 1 - int(a, 16))
        for a, b in re.findall(r"BIOS-e820: \[mem 0x([0-9a-f]+)-0x([0-9a-f]+)\]", serial)
    ]
    assert printed
    tables = []
    with (
        open(kernel_dump(name), "rb") as f,
        mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data,
    ):
        pos = 0
        while (pos := data.find(b"HdrS", pos + 1)) >= 0:
            base = pos - 0x202
            count = data[base + 0x1E8]
            if 1 <= count <= 128:
                table = data[base + 0x2D0 : base + 0x2D0 + 20 * count]
                tables.append([
                    (int.from_bytes(table[i : i + 8], "little"),
                     int.from_bytes(table[i + 8 : i + 16], "little"))
                    for i in range(0, len(table), 20)
                ])  # fmt: skip
    assert printed in tables


# --- walks: line for line -------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_walk_equals_info_tlb(name: str, kind: str, kernel_dump: DumpFactory) -> None:
    """The command layer and the qemu-tlb renderer on the opened dump, root given as ``cr3``."""
    dump = kernel_dump(name)
    root = golden_roots(KERNELS, name, dump)[kind]
    target = open_dump(str(dump))
    try:
        options = commands.WalkOptions(commands.RootOptions(cr3=root))
        assert_same(list(render_walk(commands.walk(target, options))), golden(name, kind))
    finally:
        if target.close is not None:
            target.close()


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_cli_walk_equals_info_tlb(name: str, kind: str, kernel_dump: DumpFactory) -> None:
    """``gdbext walk DUMP --format qemu-tlb`` (``--kernel``, ``--user-pgd``)."""
    argv = ["walk", str(kernel_dump(name)), "--format", "qemu-tlb", *CLI_ROOT[kind]]
    status, lines = run_cli(argv)
    assert status == 0
    assert_same(lines, golden(name, kind))


@pytest.mark.parametrize("name", NAMES)
def test_cli_walk_cr3_equals_kernel_info_tlb(name: str, kernel_dump: DumpFactory) -> None:
    """``--cr3 ROOT`` with the kernel's root (computed here from the note's text)."""
    dump = kernel_dump(name)
    root = kernel_root(dump)
    assert root is not None
    status, lines = run_cli(["walk", str(dump), "--format", "qemu-tlb", "--cr3", hex(root)])
    assert status == 0
    assert_same(lines, golden(name, "info-tlb-kernel"))


# --- translations ---------------------------------------------------------------------------------


def gva2gpa(name: str) -> list[tuple[int, int | None]]:
    pairs = parse_gva2gpa((KERNELS / f"{name}.gva2gpa.txt").read_text())
    assert any(pa is None for _, pa in pairs) and any(pa is not None for _, pa in pairs)
    return pairs


@pytest.mark.parametrize("name", NAMES)
def test_translate_equals_gva2gpa(name: str, kernel_dump: DumpFactory) -> None:
    pairs = gva2gpa(name)
    target = open_dump(str(kernel_dump(name)))
    result = commands.translate(target, [va for va, _ in pairs])
    got = [(o.vaddr, None if o.translation is None else o.translation.paddr)
           for o in result.outcomes]  # fmt: skip
    assert got == pairs


@pytest.mark.parametrize("name", NAMES)
def test_cli_translate_equals_gva2gpa(name: str, kernel_dump: DumpFactory) -> None:
    pairs = gva2gpa(name)
    argv = ["translate", str(kernel_dump(name)), "--json", *[hex(va) for va, _ in pairs]]
    out = io.StringIO()
    with pytest.raises(UntranslatedError) as info:  # some samples are not canonical: exit 2
        cli.run(argv, host(), out)
    geo = geometry(5 if name == "la57" else 4)
    records = json.loads(out.getvalue())
    got = [(int(r["vaddr"], 16), int(r["paddr"], 16) if "paddr" in r else None) for r in records]
    assert got == [(va, pa) for va, pa in pairs if geo.is_canonical(va)]
    # The others are the error's (stderr's), and QEMU could not translate them either.
    assert [e.vaddr for e in info.value.errors] == [
        va for va, pa in pairs if not geo.is_canonical(va) and pa is None
    ]
    assert len(info.value.errors) + len(records) == len(pairs)
