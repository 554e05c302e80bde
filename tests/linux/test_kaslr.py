"""``kaslr``: the randomised bases against what the dumps' own VMCOREINFO and QEMU's goldens say,
and ``--leaks`` against pointers the test plants in a simulated machine's user pages.

The VMCOREINFO note is read here with pyelftools (not gdbext's parser); the direct map's base is
the lowest higher-half address that QEMU's ``info tlb`` shows mapping physical address 0.
"""

from __future__ import annotations

import io
import json
import lzma
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.dumps import elf_vmcoreinfo
from support.paths import KERNELS

from gdbext import cli
from gdbext.frontend.kaslr import KaslrOptions, kaslr
from gdbext.plugin.host import Host
from gdbext_sim.scenario import build_machine

KERNEL_NAMES = ("4level", "kaslr-pti", "la57")
START_KERNEL, START_KERNEL_MAP = 0xFFFFFFFF81000000, 0xFFFFFFFF80000000
TOP = 1 << 64


def _run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return cli.run(list(argv), Host.create(), out), out.getvalue()


def _direct_map_from_golden(name: str) -> int:
    """The lowest higher-half address of QEMU's ``info tlb`` (the kernel root) mapping PA 0."""
    with lzma.open(KERNELS / f"{name}.info-tlb-kernel.txt.xz", "rt") as f:
        text = f.read()
    found = [
        int(va, 16)
        for va, pa in (line.split()[:2] for line in text.splitlines() if ": " in line)
        if int(pa, 16) == 0 and int(va.rstrip(":"), 16) >= 1 << 63
        for va in [va.rstrip(":")]
    ]
    return min(found)


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_kaslr_equals_vmcoreinfo_and_golden(kernel_dump: Callable[[str], Path], name: str) -> None:
    path = kernel_dump(name)
    vmci = elf_vmcoreinfo(path)
    status, out = _run("kaslr", str(path), "--json")
    assert status == 0
    bases: dict[str, Any] = json.loads(out)["bases"]
    offset = int(vmci["KERNELOFFSET"], 16)
    text = (START_KERNEL + offset) % TOP
    phys_base = int(vmci["NUMBER(phys_base)"]) % TOP
    assert bases["kaslr_slide"]["value"] == hex(offset)
    assert bases["kernel_text"]["value"] == hex(text)
    assert bases["kernel_phys"]["value"] == hex((text - START_KERNEL_MAP + phys_base) % TOP)
    # The physical load comes from the tables, VMCOREINFO's phys_base is the check.
    assert bases["kernel_phys"]["how"].startswith("page tables")
    assert bases["direct_map"]["value"] == hex(_direct_map_from_golden(name))
    assert json.loads(out)["disagreements"] == []


def test_kaslr_text_names_sources(kernel_dump: Callable[[str], Path]) -> None:
    status, out = _run("kaslr", str(kernel_dump("kaslr-pti")))
    assert status == 0
    assert "(VMCOREINFO KERNELOFFSET)" in out
    assert "agrees: page-table evidence: first kernel-image leaf: 0x" in out
    assert "disagreement" not in out


# --- --leaks on a simulated machine ----------------------------------------------------------

TEXT = 0xFFFFFFFF9A000000
IMAGE_SIZE = 512 * 4096
DIRECT = 0xFFFF9A0000000000
RAM = 128 << 20
MODULES, MODULES_END = 0xFFFFFFFFC0000000, 0xFFFFFFFFFF000000
#: The modules loaded: two pages of the modules area (the region is what is mapped there).
MOD_LO, MOD_HI = MODULES + 0x2000, MODULES + 0x4000
USER_FRAME, ALIAS_FRAME, KERN_FRAME = 0x3000000, 0x3001000, 0x3002000


def _machine() -> Any:
    user = ["USER_ACCESSIBLE", "WRITABLE", "NO_EXECUTE"]
    doc = {
        "levels": 4,
        "ram": "128M",
        "mappings": [
            {"vaddr": "0x400000", "paddr": hex(USER_FRAME), "size": "4K", "flags": user},
            # One frame at two user addresses: read once, reported at both.
            {"vaddr": "0x500000", "paddr": hex(ALIAS_FRAME), "size": "4K", "flags": user},
            {
                "vaddr": "0x600000",
                "paddr": hex(ALIAS_FRAME),
                "size": "4K",
                "flags": ["USER_ACCESSIBLE"],
            },
            # A supervisor page in the user half: searched only with --all-pages.
            {"vaddr": "0x700000", "paddr": hex(KERN_FRAME), "size": "4K", "flags": ["WRITABLE"]},
            {
                "vaddr": hex(DIRECT),
                "paddr": "0x0",
                "size": "2M",
                "count": 64,
                "flags": ["WRITABLE", "NO_EXECUTE", "GLOBAL"],
            },
            {
                "vaddr": hex(TEXT),
                "paddr": "0x1000000",
                "size": "4K",
                "count": 512,
                "flags": ["GLOBAL"],
            },
            {
                "vaddr": hex(MOD_LO),
                "count": 2,
                "paddr": "0x2000000",
                "size": "4K",
                "flags": ["GLOBAL", "WRITABLE", "NO_EXECUTE"],
            },
        ],
    }
    machine = build_machine(doc)
    inside = [TEXT, TEXT + IMAGE_SIZE - 8, MOD_LO, MOD_HI - 1, DIRECT, DIRECT + RAM - 1]
    outside = [
        TEXT - 8,
        TEXT + IMAGE_SIZE,
        MOD_LO - 8,
        MOD_HI,
        MODULES,
        MODULES_END,
        DIRECT - 1,
        DIRECT + RAM,
        0xFFFF800000000000,
        0x00007FFFFFFFF000,
        0xFFFFFFFFFFFFFFFF,
    ]
    words = [v for pair in zip(inside, outside, strict=False) for v in pair] + outside[
        len(inside) :
    ]
    page = bytearray(4096)
    for i, v in enumerate(words):
        page[i * 16 : i * 16 + 8] = v.to_bytes(8, "little")
    page[2052:2060] = TEXT.to_bytes(8, "little")  # unaligned: not a pointer slot
    machine.memory.write(USER_FRAME, bytes(page))
    machine.memory.write(ALIAS_FRAME + 0x80, (DIRECT + 0x1000).to_bytes(8, "little"))
    machine.memory.write(KERN_FRAME + 0x10, (TEXT + 0x40).to_bytes(8, "little"))
    expected = {(0x400000 + (2 * i) * 16, v) for i, v in enumerate(inside)}
    expected |= {(0x500080, DIRECT + 0x1000), (0x600080, DIRECT + 0x1000)}
    return machine, expected


def test_leaks_finds_exactly_the_planted_pointers() -> None:
    machine, expected = _machine()
    result = kaslr(machine.to_target(), KaslrOptions(leaks=True))
    assert result.leaks is not None
    assert {(x.vaddr, x.value) for x in result.leaks} == expected
    assert result.total_leaks == len(expected)
    regions = {r.name: (r.range.start, r.range.end) for r in result.regions}
    assert regions == {
        "kernel image": (TEXT, TEXT + IMAGE_SIZE),
        "modules": (MOD_LO, MOD_HI),
        "direct map": (DIRECT, DIRECT + RAM),
    }
    by_va = {x.vaddr: x for x in result.leaks}
    assert by_va[0x400000].paddr == USER_FRAME and by_va[0x400000].region == "kernel image"
    assert by_va[0x600080].paddr == ALIAS_FRAME + 0x80 and by_va[0x600080].perms == "r-x user"
    assert by_va[0x500080].perms == "rw- user"
    report = result.report
    assert report.item("kernel_text").value == TEXT
    assert report.item("kaslr_slide").value == TEXT - START_KERNEL
    assert report.item("kernel_phys").value == 0x1000000
    assert report.item("direct_map").value == DIRECT


def test_leaks_all_pages_range_and_max() -> None:
    machine, expected = _machine()
    target = machine.to_target()
    every = kaslr(target, KaslrOptions(leaks=True, user_only=False))
    assert {(x.vaddr, x.value) for x in every.leaks or ()} == expected | {(0x700010, TEXT + 0x40)}
    from gdbext.addr import AddrRange

    ranged = kaslr(target, KaslrOptions(leaks=True, range=AddrRange(0x500000, 0x600000)))
    assert {(x.vaddr, x.value) for x in ranged.leaks or ()} == {(0x500080, DIRECT + 0x1000)}
    capped = kaslr(target, KaslrOptions(leaks=True, max_leaks=2))
    assert len(capped.leaks or ()) == 2 and capped.total_leaks == len(expected)
    groups = capped.groups()
    assert sum(len(v) for v in groups.values()) == 2


def test_leaks_read_each_frame_once() -> None:
    machine, expected = _machine()
    memory = machine.memory
    reads: list[tuple[int, int]] = []
    read = memory.read

    def counting(paddr: int, size: int) -> bytes:
        reads.append((paddr, size))
        return bytes(read(paddr, size))

    memory.read = counting
    result = kaslr(machine.to_target(), KaslrOptions(leaks=True))
    assert {(x.vaddr, x.value) for x in result.leaks or ()} == expected
    for frame in (USER_FRAME, ALIAS_FRAME):
        assert sum(p <= frame < p + n for p, n in reads) == 1, frame


def test_leaks_hold_a_bounded_number_of_pointers(monkeypatch: pytest.MonkeyPatch) -> None:
    """With room for one pointer and pieces of one page, the leaks are the same: frames whose
    pointers were forgotten are read again, and a long run is taken page by page."""
    from gdbext.frontend import kaslr as core

    machine, expected = _machine()
    whole = kaslr(machine.to_target(), KaslrOptions(leaks=True, user_only=False))
    reads: list[int] = []
    read = machine.memory.read

    def counting(paddr: int, size: int) -> bytes:
        reads.append(size)
        return bytes(read(paddr, size))

    machine.memory.read = counting
    monkeypatch.setattr(core, "KEPT_POINTERS", 1)
    monkeypatch.setattr(core, "PIECE", 4096)
    small = kaslr(machine.to_target(), KaslrOptions(leaks=True, user_only=False))
    assert small.leaks == whole.leaks and small.total_leaks == whole.total_leaks
    assert {(x.vaddr, x.value) for x in small.leaks or ()} >= expected
    assert max(reads) <= 4096


def test_a_vmcoreinfo_that_disagrees_with_the_tables_is_said() -> None:
    """A VMCOREINFO whose KERNELOFFSET (and phys_base) is 2 MiB off the tables: its value is
    shown (VMCOREINFO first) and the page tables' evidence is a disagreement, in text too."""
    import dataclasses

    from gdbext.plugin.facts import KernelFacts, VmcoreFacts
    from gdbext.render.kaslr import render_text

    machine, _ = _machine()
    slide = TEXT - START_KERNEL
    info = VmcoreFacts({"KERNELOFFSET": f"{slide + 0x200000:x}", "NUMBER(phys_base)": "0"})
    target = dataclasses.replace(machine.to_target(), facts=KernelFacts(vmcoreinfo_source=info))
    report = kaslr(target).report
    assert report.item("kaslr_slide").value == slide + 0x200000
    assert report.item("kernel_phys").value == 0x1000000  # the tables: _text is mapped there
    lines = report.disagreements
    assert (
        "kernel image (_text): page-table evidence: first kernel-image leaf says "
        f"{TEXT:#x}, not {TEXT + 0x200000:#x}" in lines
    )
    # phys_base 0 puts a _text of TEXT + 2 MiB at TEXT + 2 MiB - __START_KERNEL_map.
    wrong_phys = TEXT + 0x200000 - START_KERNEL_MAP
    assert any(
        line.startswith("kernel physical load: VMCOREINFO NUMBER(phys_base)")
        and f"{wrong_phys:#x}" in line
        for line in lines
    )
    text = "\n".join(render_text(kaslr(target)))
    assert f"DISAGREES: page-table evidence: first kernel-image leaf: {TEXT:#x}" in text
