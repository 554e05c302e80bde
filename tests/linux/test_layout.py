"""Linux's x86-64 layout (:mod:`gdbext.linux.layout`) and region labels in text output.

The expected region tables are ``Documentation/arch/x86/x86_64/mm.rst`` as the reference
(``paging-semantics.md`` 6.2) gives it, written out here; the markers are
``dump_pagetables.c``'s (6.1). Bases found in real kernels are checked against what QEMU
translates (``gva2gpa`` goldens) and, in a freshly booted KASLR guest, against the kernel's own
``page_offset_base``, ``vmalloc_base`` and ``vmemmap_base`` variables read from the dump at the
addresses ``/proc/kallsyms`` printed.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from gdbext import cli
from gdbext.errors import AddressOutOfRangeError, GdbextError, LayoutError
from gdbext.frontend import commands
from gdbext.linux.detect import detect_layout, labels_wanted
from gdbext.linux.layout import Base, MarkerCursor, linux_layout
from gdbext.mapper import read_u64
from gdbext.plugin.facts import KernelFacts, VmcoreFacts
from gdbext.plugin.host import Host
from gdbext_sim.scenario import build_machine

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "fixtures" / "scenarios" / "demo.json"
KERNELS = ROOT / "fixtures" / "kernels"
T = 1 << 40


def rows(lay: Any) -> list[tuple[int, int, str]]:
    return [(r.start, r.end - 1, r.name) for r in lay.regions]


# mm.rst, 4-level, with KASAN (its table lists the KASAN shadow).
MM_RST_4 = [
    (0x0000000000000000, 0x00007FFFFFFFFFFF, "user space"),
    (0x0000800000000000, 0xFFFF7FFFFFFFFFFF, "non-canonical hole"),
    (0xFFFF800000000000, 0xFFFF87FFFFFFFFFF, "guard hole, reserved for hypervisor"),
    (0xFFFF880000000000, 0xFFFF887FFFFFFFFF, "LDT remap for PTI"),
    (0xFFFF888000000000, 0xFFFFC87FFFFFFFFF, "direct mapping of all physical memory"),
    (0xFFFFC88000000000, 0xFFFFC8FFFFFFFFFF, "unused hole"),
    (0xFFFFC90000000000, 0xFFFFE8FFFFFFFFFF, "vmalloc/ioremap space"),
    (0xFFFFE90000000000, 0xFFFFE9FFFFFFFFFF, "unused hole"),
    (0xFFFFEA0000000000, 0xFFFFEAFFFFFFFFFF, "virtual memory map (vmemmap)"),
    (0xFFFFEB0000000000, 0xFFFFEBFFFFFFFFFF, "unused hole"),
    (0xFFFFEC0000000000, 0xFFFFFBFFFFFFFFFF, "KASAN shadow memory"),
    (0xFFFFFC0000000000, 0xFFFFFDFFFFFFFFFF, "unused hole"),
]
MM_RST_5 = [
    (0x0000000000000000, 0x00FFFFFFFFFFFFFF, "user space"),
    (0x0100000000000000, 0xFEFFFFFFFFFFFFFF, "non-canonical hole"),
    (0xFF00000000000000, 0xFF0FFFFFFFFFFFFF, "guard hole, reserved for hypervisor"),
    (0xFF10000000000000, 0xFF10FFFFFFFFFFFF, "LDT remap for PTI"),
    (0xFF11000000000000, 0xFF90FFFFFFFFFFFF, "direct mapping of all physical memory"),
    (0xFF91000000000000, 0xFF9FFFFFFFFFFFFF, "unused hole"),
    (0xFFA0000000000000, 0xFFD1FFFFFFFFFFFF, "vmalloc/ioremap space"),
    (0xFFD2000000000000, 0xFFD3FFFFFFFFFFFF, "unused hole"),
    (0xFFD4000000000000, 0xFFD5FFFFFFFFFFFF, "virtual memory map (vmemmap)"),
    (0xFFD6000000000000, 0xFFDEFFFFFFFFFFFF, "unused hole"),
    (0xFFDF000000000000, 0xFFFFFBFFFFFFFFFF, "KASAN shadow memory"),
    (0xFFFFFC0000000000, 0xFFFFFDFFFFFFFFFF, "unused hole"),
]
# Both layouts, from cpu_entry_area up (Debian 6.1: 1 GB kernel image, 646 fixmap slots).
MM_RST_TAIL = [
    (0xFFFFFE0000000000, 0xFFFFFE7FFFFFFFFF, "cpu_entry_area mapping"),
    (0xFFFFFE8000000000, 0xFFFFFEFFFFFFFFFF, "unused hole"),
    (0xFFFFFF0000000000, 0xFFFFFF7FFFFFFFFF, "%esp fixup stacks (ESPfix)"),
    (0xFFFFFF8000000000, 0xFFFFFFEEFFFFFFFF, "unused hole"),
    (0xFFFFFFEF00000000, 0xFFFFFFFEFFFFFFFF, "EFI region mapping space"),
    (0xFFFFFFFF00000000, 0xFFFFFFFF7FFFFFFF, "unused hole"),
    (0xFFFFFFFF80000000, 0xFFFFFFFFBFFFFFFF, "kernel text mapping, mapped to physical 0"),
    (0xFFFFFFFFC0000000, 0xFFFFFFFFFEFFFFFF, "module mapping space"),
    (0xFFFFFFFFFF000000, 0xFFFFFFFFFF578FFF, "unused hole (early boot fixmap slots)"),
    (0xFFFFFFFFFF579000, 0xFFFFFFFFFF5FFFFF, "kernel-internal fixmap range"),
    (0xFFFFFFFFFF600000, 0xFFFFFFFFFF600FFF, "legacy vsyscall ABI"),
    (0xFFFFFFFFFF601000, 0xFFFFFFFFFFDFFFFF, "unused hole"),
    (0xFFFFFFFFFFE00000, 0xFFFFFFFFFFFFFFFF, "unused hole (STACKLEAK_POISON)"),
]
MARKERS_4 = [
    (0x0000000000000000, "User Space"),
    (0x8000000000000000, "Kernel Space"),
    (0xFFFF880000000000, "LDT remap"),
    (0xFFFF888000000000, "Low Kernel Mapping"),
    (0xFFFFC90000000000, "vmalloc() Area"),
    (0xFFFFEA0000000000, "Vmemmap"),
    (0xFFFFFE0000000000, "CPU entry Area"),
    (0xFFFFFF0000000000, "ESPfix Area"),
    (0xFFFFFFEF00000000, "EFI Runtime Services"),
    (0xFFFFFFFF80000000, "High Kernel Mapping"),
    (0xFFFFFFFFC0000000, "Modules"),
    (0xFFFFFFFFFF000000, "End Modules"),
    (0xFFFFFFFFFF579000, "Fixmap Area"),
]


def test_default_tables_are_mm_rst() -> None:
    assert rows(linux_layout(4, kasan=True)) == MM_RST_4 + MM_RST_TAIL
    assert rows(linux_layout(5, kasan=True)) == MM_RST_5 + MM_RST_TAIL
    # Without KASAN (Debian) its shadow range is plain unused space.
    assert rows(linux_layout(4))[9] == (0xFFFFEB0000000000, 0xFFFFFDFFFFFFFFFF, "unused hole")


def test_markers() -> None:
    lay = linux_layout(4)
    assert [(m.start, m.name) for m in lay.markers] == MARKERS_4
    assert [m.max_lines for m in lay.markers if m.max_lines] == [16]
    assert lay.markers[7].name == "ESPfix Area" and lay.markers[7].max_lines == 16
    five = [(m.start, m.name) for m in linux_layout(5).markers]
    assert five[2:6] == [
        (0xFF10000000000000, "LDT remap"),
        (0xFF11000000000000, "Low Kernel Mapping"),
        (0xFFA0000000000000, "vmalloc() Area"),
        (0xFFD4000000000000, "Vmemmap"),
    ]
    assert five[6:] == MARKERS_4[6:]
    kasan = [m.name for m in linux_layout(4, kasan=True).markers]
    assert kasan[6:8] == ["KASAN shadow", "KASAN shadow end"]
    bare = [m.name for m in linux_layout(4, ldt=False, espfix=False, efi=False).markers]
    assert "LDT remap" not in bare and "ESPfix Area" not in bare
    assert "EFI Runtime Services" not in bare


def test_defaults_are_marked_assumed() -> None:
    lay = linux_layout(4)
    assert all(lay.bases[k].assumed for k in ("page_offset_base", "vmalloc_base", "fixmap"))
    assert lay.label(0xFFFF888000001000).assumed
    assert not lay.label(0xFFFFFE0000001000).assumed  # cpu_entry_area: a fixed address
    assert [m.name for m in lay.markers if m.assumed] == [
        "Low Kernel Mapping", "vmalloc() Area", "Vmemmap", "Modules", "Fixmap Area"
    ]  # fmt: skip
    given = linux_layout(4, page_offset_base=0xFFFF888000000000)
    assert not given.bases["page_offset_base"].assumed
    assert given.bases["page_offset_base"].source == "hint"


def test_kaslr_bases_move_the_regions() -> None:
    # The bases of the committed KASLR fixture (kaslr-pti).
    lay = linux_layout(
        4,
        page_offset_base=0xFFFF8D1480000000,
        vmalloc_base=0xFFFFCFF1C0000000,
        vmemmap_base=0xFFFFF89A00000000,
        kernel_offset=0x26A00000,
    )
    assert rows(lay)[4:11] == [
        (0xFFFF888000000000, 0xFFFF8D147FFFFFFF, "unused hole"),
        (0xFFFF8D1480000000, 0xFFFFCD147FFFFFFF, "direct mapping of all physical memory"),
        (0xFFFFCD1480000000, 0xFFFFCFF1BFFFFFFF, "unused hole"),
        (0xFFFFCFF1C0000000, 0xFFFFEFF1BFFFFFFF, "vmalloc/ioremap space"),
        (0xFFFFEFF1C0000000, 0xFFFFF899FFFFFFFF, "unused hole"),
        (0xFFFFF89A00000000, 0xFFFFF999FFFFFFFF, "virtual memory map (vmemmap)"),
        (0xFFFFF99A00000000, 0xFFFFFDFFFFFFFFFF, "unused hole"),
    ]
    assert lay.label(0xFFFF8D1480000000).name == "direct mapping of all physical memory"
    assert lay.label(0xFFFF8D147FFFFFFF).name == "unused hole"
    assert lay.label(0xFFFFCFF1C0004000).name == "vmalloc/ioremap space"
    assert lay.bases["kernel_image"].value == 0xFFFFFFFFA7A00000
    # A region is cut where the next one starts.
    tight = linux_layout(4, vmalloc_base=0xFFFF889000000000, vmemmap_base=0xFFFF88A000000000)
    assert rows(tight)[4:7] == [
        (0xFFFF888000000000, 0xFFFF888FFFFFFFFF, "direct mapping of all physical memory"),
        (0xFFFF889000000000, 0xFFFF889FFFFFFFFF, "vmalloc/ioremap space"),
        (0xFFFF88A000000000, 0xFFFF89A000000000 - 1, "virtual memory map (vmemmap)"),
    ]


def test_kernel_image_and_modules() -> None:
    lay = linux_layout(4, kernel_offset=0x10000000, kernel_image_size=512 << 20)
    assert lay.bases["kernel_image"].value == 0xFFFFFFFF91000000
    assert lay.bases["modules"].value == 0xFFFFFFFFA0000000
    assert [m.start for m in lay.markers if m.name == "Modules"] == [0xFFFFFFFFA0000000]
    assert lay.label(0xFFFFFFFF9FFFFFFF).name == "kernel text mapping, mapped to physical 0"
    assert lay.label(0xFFFFFFFFA0000000).name == "module mapping space"
    stext = linux_layout(4, kernel_image_start=Base(0xFFFFFFFF9D000000, "VMCOREINFO"))
    assert stext.bases["kernel_image"].describe() == "0xffffffff9d000000 (VMCOREINFO)"


@pytest.mark.parametrize(
    "kw",
    [
        {"page_offset_base": 0xFFFF888000001000},  # not 1 GiB aligned
        {"page_offset_base": 0xFFFF800000000000},  # below the randomisable range
        {"vmemmap_base": 0xFFFFFE0000000000},  # at cpu_entry_area
        {"vmalloc_base": 0xFFFF888000000000},  # not above the direct map
        {"kernel_image_size": 0},
        {"kernel_image_start": 0xFFFFFFFFC0000000},
        {"fixaddr_start": 0xFFFFFFFFFF600000},
    ],
)
def test_bad_bases(kw: dict[str, int]) -> None:
    with pytest.raises(LayoutError):
        linux_layout(4, **kw)  # type: ignore[arg-type]


def test_marker_cursor() -> None:
    cur = MarkerCursor(linux_layout(4))
    assert [m.name for m in cur.advance(0xFFFF888000000000)] == ["Low Kernel Mapping"]
    assert cur.advance(0xFFFF888000200000) == []
    assert [m.name for m in cur.advance(0xFFFFFF8000000000)] == [
        "vmalloc() Area", "Vmemmap", "CPU entry Area", "ESPfix Area"
    ]  # fmt: skip
    assert cur.next_start() == 0xFFFFFFEF00000000
    assert [m.name for m in cur.advance((1 << 64) - 1)][-1] == "Fixmap Area"
    assert cur.next_start() == 1 << 64


def test_labels_wanted() -> None:
    dump = KernelFacts(vmcoreinfo_source=VmcoreFacts({"OSRELEASE": "6.1"}))
    assert labels_wanted("linux", KernelFacts())
    assert not labels_wanted("none", dump)
    assert labels_wanted("auto", dump)
    assert labels_wanted("auto", KernelFacts(os="linux"))  # e.g. GDB with the kernel's symbols
    assert not labels_wanted("auto", KernelFacts(os="other"))
    assert not labels_wanted("auto", KernelFacts())


# --- bases found in tables ------------------------------------------------------------------

#: A KASLR-like kernel in the simulator, at the bases of the kaslr-pti fixture.
KASLR_SIM: dict[str, Any] = {
    "levels": 4,
    "ram": "64M",
    "mappings": [
        {"vaddr": "0xffff8d1480000000", "paddr": "0x0", "size": "2M", "count": 16,
         "flags": ["WRITABLE", "NO_EXECUTE", "GLOBAL"]},
        {"vaddr": "0xffffcff1c0004000", "paddr": "0x2000000", "size": "4K", "count": 4,
         "flags": ["WRITABLE", "NO_EXECUTE"]},
        {"vaddr": "0xffffefe000000000", "paddr": "0x2100000", "size": "4K", "count": 4,
         "flags": ["WRITABLE", "NO_EXECUTE"]},
        {"vaddr": "0xfffff89a00000000", "paddr": "0x2200000", "size": "2M",
         "flags": ["WRITABLE", "NO_EXECUTE"]},
        {"vaddr": "0xffffffffa7a00000", "paddr": "0x1000000", "size": "2M", "flags": ["GLOBAL"]},
    ],
}  # fmt: skip


def test_bases_found_in_tables() -> None:
    machine = build_machine(KASLR_SIM)
    lay = detect_layout(machine.page_table, KernelFacts())
    b = lay.bases
    assert b["page_offset_base"] == Base(
        0xFFFF8D1480000000, "page tables", "lowest 1 GiB boundary mapping physical 0"
    )
    # The percpu-like mapping near the end of vmalloc space does not move the base.
    assert b["vmalloc_base"] == Base(
        0xFFFFCFF1C0000000, "page tables", "first mapping above the direct map"
    )
    assert b["vmemmap_base"] == Base(
        0xFFFFF89A00000000, "page tables", "first mapping above VMALLOC_SIZE"
    )
    # The kernel image: the scenario's first mapping at __START_KERNEL_map.
    assert b["kernel_image"] == Base(
        0xFFFFFFFFA7A00000, "page tables", "first mapping at __START_KERNEL_map"
    )
    assert b["modules"].assumed


def test_vmcoreinfo_bases() -> None:
    machine = build_machine(KASLR_SIM)
    # mem_section with SPARSEMEM_EXTREME: SYMBOL(mem_section) is the root array (in the direct
    # map); root 0 points at the sections; section 0's section_mem_map is vmemmap | flags.
    direct = 0xFFFF8D1480000000
    mem = machine.memory
    mem.write(0x10000, (direct + 0x11000).to_bytes(8, "little"))
    mem.write(0x11000 + 32 * 3, (0xFFFFF8C000000000 | 0x7).to_bytes(8, "little"))
    vmci = {
        "SYMBOL(mem_section)": f"{direct + 0x10000:x}",
        "LENGTH(mem_section)": "4096",
        "SIZE(mem_section)": "32",
        "OFFSET(mem_section.section_mem_map)": "0",
        "NUMBER(SECTION_SIZE_BITS)": "27",
        "NUMBER(MAX_PHYSMEM_BITS)": "46",
        "SYMBOL(_stext)": "ffffffffa7a00000",
        "KERNELOFFSET": "26a00000",
        "NUMBER(KERNEL_IMAGE_SIZE)": "1073741824",
    }
    lay = detect_layout(machine.page_table, KernelFacts(vmcoreinfo_source=VmcoreFacts(vmci)))
    b = lay.bases
    assert b["vmemmap_base"] == Base(0xFFFFF8C000000000, "VMCOREINFO", "mem_section")
    assert b["kernel_image"] == Base(0xFFFFFFFFA7A00000, "VMCOREINFO", "SYMBOL(_stext)")
    assert b["modules"].value == 0xFFFFFFFFC0000000 and b["modules"].source == "VMCOREINFO"
    # Without _stext, KERNELOFFSET places the image.
    del vmci["SYMBOL(_stext)"]
    lay = detect_layout(machine.page_table, KernelFacts(vmcoreinfo_source=VmcoreFacts(vmci)))
    assert lay.bases["kernel_image"].value == 0xFFFFFFFFA7A00000
    assert lay.bases["kernel_image"].source == "VMCOREINFO"
    # Hints from the backend win; one that breaks the order is dropped for the default.
    lay = detect_layout(machine.page_table, KernelFacts(vmalloc_base=0xFFFF8D1480000000))
    assert lay.bases["vmalloc_base"].assumed
    assert lay.bases["page_offset_base"].value == 0xFFFF8D1480000000


def test_no_linux_here() -> None:
    # The demo's direct map is not at a Linux base: everything found is checked, defaults stay.
    doc = {"levels": 4, "mappings": [{"vaddr": "0xffff800000000000", "paddr": "0x0",
                                      "size": "2M", "flags": ["WRITABLE"]}]}  # fmt: skip
    lay = detect_layout(build_machine(doc).page_table, KernelFacts())
    assert all(lay.bases[k].assumed for k in ("page_offset_base", "vmalloc_base"))


# --- text output ----------------------------------------------------------------------------


def run(argv: list[str]) -> tuple[int, list[str]]:
    out = io.StringIO()
    status = cli.run(argv, Host.create(), out)
    return status, out.getvalue().split("\n")[:-1]


LABELLED: dict[str, Any] = {
    "levels": 4,
    "ram": "64M",
    "mappings": [
        {"vaddr": "0x400000", "paddr": "0x100000", "size": "4K", "count": 2,
         "flags": ["USER_ACCESSIBLE"]},
        {"vaddr": "0xffff888000000000", "paddr": "0x0", "size": "2M", "count": 2,
         "flags": ["WRITABLE", "NO_EXECUTE", "GLOBAL"]},
        {"vaddr": "0xffffc90000003000", "paddr": "0x500000", "size": "4K",
         "flags": ["WRITABLE", "NO_EXECUTE"]},
        {"vaddr": "0xffffffffff577000", "paddr": "0x600000", "size": "4K", "count": 4,
         "flags": ["WRITABLE", "NO_EXECUTE", "GLOBAL"]},
    ],
}  # fmt: skip


def test_text_markers_at_crossings(tmp_path: Path) -> None:
    path = tmp_path / "labelled.json"
    path.write_text(json.dumps(LABELLED))
    status, lines = run(["walk", "--backend", "sim", "--scenario", str(path), "--labels", "linux"])
    assert status == 0
    # The bases are in `info` (below); the walk says which layout labels it, names the columns.
    assert lines[0] == "# Linux x86-64 4-level layout (its bases: the info command)"
    assert lines[1] == (
        "# start            end                   size page  perms    attrs       -> physical"
    )
    # Markers only before sections that have lines (ptdump shows the empty ones too).
    assert lines[2:-1] == [
        "---[ User Space ]---",
        "0x0000000000400000-0x0000000000402000       8K  4K  r-x user             -> 0x100000",
        "---[ Low Kernel Mapping ]---",
        "0xffff888000000000-0xffff888000400000       4M  2M  rw- kern G           -> 0x0",
        "---[ vmalloc() Area ]---",
        "0xffffc90000003000-0xffffc90000004000       4K  4K  rw- kern             -> 0x500000",
        "---[ End Modules ]---",
        # One merged range, cut where the fixmap starts.
        "0xffffffffff577000-0xffffffffff579000       8K  4K  rw- kern G           -> 0x600000",
        "---[ Fixmap Area ]--- (default base)",
        "0xffffffffff579000-0xffffffffff57b000       8K  4K  rw- kern G           -> 0x602000",
    ]
    assert lines[-1].startswith("# 5 lines, 9 leaf entries, 0 anomalies; 4-level paging")
    # --no-merge: one line per leaf, the same sections.
    status, lines = run(["walk", "--backend", "sim", "--scenario", str(path), "--labels",
                         "linux", "--no-merge"])  # fmt: skip
    assert [line for line in lines if line.startswith("---")][-2:] == [
        "---[ End Modules ]---",
        "---[ Fixmap Area ]--- (default base)",
    ]
    assert lines.index("---[ Fixmap Area ]--- (default base)") == len(lines) - 4
    # ptdump keeps Linux's empty sections.
    status, lines = run(["walk", "--backend", "sim", "--scenario", str(path), "--labels",
                         "linux", "--format", "ptdump"])  # fmt: skip
    assert "---[ Vmemmap ]---" in lines and "---[ ESPfix Area ]---" in lines


def test_labels_off_is_the_plain_output() -> None:
    base = ["walk", "--backend", "sim", "--scenario", str(DEMO)]
    _, none = run([*base, "--labels", "none"])
    _, auto = run(base)  # the simulator carries no VMCOREINFO: auto is off
    assert none == auto
    assert not any(line.startswith(("---", "# Linux")) for line in none)
    _, linux = run([*base, "--labels", "linux"])
    assert [line for line in linux if not line.startswith(("---", "# Linux"))] == none


# --- real kernels ---------------------------------------------------------------------------


@functools.cache
def gva2gpa_zero(name: str) -> int:
    """The higher-half address QEMU translated to physical 0 (the direct map's base)."""
    text = (KERNELS / f"{name}.gva2gpa.txt").read_text()
    hits = [int(va, 16) for va, pa in re.findall(r"^([0-9a-f]{16}) ([0-9a-f]{16})$", text, re.M)
            if int(pa, 16) == 0 and int(va, 16) >> 63]  # fmt: skip
    assert hits
    return min(hits)


EXPECTED_BASES = {
    # nokaslr: Linux's documented defaults, found in the tables.
    "4level": (0xFFFF888000000000, 0xFFFFC90000000000, 0xFFFFEA0000000000),
    "la57": (0xFF11000000000000, 0xFFA0000000000000, 0xFFD4000000000000),
}


@pytest.mark.parametrize("name", ["4level", "kaslr-pti", "la57"])
def test_real_kernel_bases(kernel_dump: Any, name: str) -> None:
    from gdbext_dump.dump import open_dump

    target = open_dump(str(kernel_dump(name)))
    try:
        result = commands.walk(target, commands.WalkOptions(commands.RootOptions(kernel=True)))
        lay = detect_layout(result.page_table, result.facts)
    finally:
        if target.close is not None:
            target.close()
    b = lay.bases
    found = tuple(b[k].value for k in ("page_offset_base", "vmalloc_base", "vmemmap_base"))
    assert all(b[k].source == "page tables" for k in ("page_offset_base", "vmalloc_base"))
    assert found[0] == gva2gpa_zero(name)
    if name in EXPECTED_BASES:
        assert found == EXPECTED_BASES[name]
    else:
        # KASLR (kaslr.c): 1 GiB aligned, in order, the direct map's region at least RAM +
        # CONFIG_RANDOMIZE_MEMORY_PHYSICAL_PADDING (10 TB on Debian), vmalloc's 32 TB.
        assert all(v % (1 << 30) == 0 for v in found)
        assert found[1] >= found[0] + 11 * T and found[2] >= found[1] + 32 * T
    assert target.facts.vmcoreinfo is not None
    vmci = target.facts.vmcoreinfo.entries
    assert b["kernel_image"] == Base(int(vmci["SYMBOL(_stext)"], 16), "VMCOREINFO",
                                     "SYMBOL(_stext)")  # fmt: skip
    assert b["kernel_image"].value == 0xFFFFFFFF81000000 + int(vmci["KERNELOFFSET"], 16)


@pytest.mark.parametrize("name", ["4level", "kaslr-pti", "la57"])
@pytest.mark.parametrize("user_pgd", [False, True])
def test_real_kernel_bases_without_vmcoreinfo(kernel_dump: Any, name: str, user_pgd: bool) -> None:
    """A live target has no VMCOREINFO: the same bases come from the tables alone, from CPU 0's
    root or (under PTI) its user half, whose kernel twin at root & ~0x1000 is searched; the
    kernel image is the first mapping at __START_KERNEL_map, which is SYMBOL(_stext)."""
    import dataclasses

    from gdbext_dump.dump import open_dump

    if user_pgd and name != "kaslr-pti":
        pytest.skip("no PTI")
    target = open_dump(str(kernel_dump(name)))
    try:
        assert target.facts.vmcoreinfo is not None
        vmci = target.facts.vmcoreinfo.entries
        kernel = commands.walk(target, commands.WalkOptions(commands.RootOptions(kernel=True)))
        with_facts = detect_layout(kernel.page_table, target.facts).bases
        live = dataclasses.replace(target, facts=KernelFacts())
        result = commands.walk(live, commands.WalkOptions(commands.RootOptions(user_pgd=user_pgd)))
        bases = detect_layout(result.page_table, result.facts).bases
    finally:
        if target.close is not None:
            target.close()
    for key in ("page_offset_base", "vmalloc_base", "vmemmap_base"):
        assert bases[key].value == with_facts[key].value, key
        assert not bases[key].assumed, key
    assert bases["kernel_image"].value == int(vmci["SYMBOL(_stext)"], 16)
    assert bases["kernel_image"].source == "page tables"


def test_real_kernel_text_labels_on_by_default(kernel_dump: Any) -> None:
    status, lines = run(["walk", str(kernel_dump("kaslr-pti")), "--kernel"])
    assert status == 0
    assert lines[0] == "# Linux x86-64 4-level layout (its bases: the info command)"
    markers = [line for line in lines if line.startswith("---[")]
    assert markers[0] == "---[ Low Kernel Mapping ]---"
    assert markers[-1] == "---[ Fixmap Area ]--- (default base)"
    i = lines.index("---[ ESPfix Area ]---")
    assert " alias " in "\n".join(lines[i : i + 40])
    _, plain = run(["walk", str(kernel_dump("kaslr-pti")), "--kernel", "--labels", "none"])
    assert [x for x in lines if not x.startswith(("---[", "# Linux"))] == plain
    # `info` names the bases, and where each came from.
    _, info = run(["info", str(kernel_dump("kaslr-pti"))])
    assert (
        "  direct map:   0xffff8d1480000000 (page tables: lowest 1 GiB boundary mapping "
        "physical 0)" in info
    )
    # The PTI user half maps little of the kernel: the bases come from the kernel's root.
    _, user = run(["walk", str(kernel_dump("kaslr-pti")), "--user-pgd"])
    assert user[0] == lines[0]


# --- a fresh KASLR guest: the bases are the kernel's own variables ---------------------------

KALLSYMS = "page_offset_base|vmalloc_base|vmemmap_base|_text"


@pytest.mark.qemu
@pytest.mark.parametrize("cpu", ["qemu64", "max"])
def test_fresh_kaslr_bases_are_the_kernels(cpu: str, tmp_path: Path) -> None:
    """Boot a KASLR guest (4-level; LA57 with ``-cpu max``) whose /init prints the addresses of
    the kernel's base variables, dump it whole, and read the variables from the dump."""
    from conftest import require_qemu

    require_qemu()
    import qemu_guest

    from gdbext_dump.dump import open_dump

    script = qemu_guest.INIT_SCRIPT.replace(
        'echo "GDBEXT-READY"',
        f"/bin/busybox grep -E ' ({KALLSYMS})$' /proc/kallsyms | "
        'while read a t n; do echo "GDBEXT-SYM $a $n"; done\n'
        'echo "GDBEXT-READY"',
    )
    dump = tmp_path / "kaslr.elf"
    with qemu_guest.booted(qemu_guest.GuestConfig(cpu=cpu, kaslr=True, init=script)) as guest:
        guest.stop()
        guest.dump_elf(dump)
        serial = guest.serial_path.read_text(errors="replace")
    symbols = {m[1]: int(m[0], 16) for m in re.findall(r"GDBEXT-SYM ([0-9a-f]+) (\w+)", serial)}
    assert set(symbols) == set(KALLSYMS.split("|")), serial[-2000:]
    target = open_dump(str(dump))
    try:
        result = commands.walk(target, commands.WalkOptions(commands.RootOptions(kernel=True)))
        pt = result.page_table
        truth = {
            name: read_u64(pt.mapper, pt.translate(symbols[name]).paddr)
            for name in ("page_offset_base", "vmalloc_base", "vmemmap_base")
        }
        facts = result.facts
        lay = detect_layout(pt, facts)
        # And without mem_section: vmemmap from the tables alone.
        assert facts.vmcoreinfo is not None
        vmci = dict(facts.vmcoreinfo.entries)
        del vmci["SYMBOL(mem_section)"]
        info = dataclasses.replace(facts.vmcoreinfo, entries=vmci)
        bare = detect_layout(pt, dataclasses.replace(facts, vmcoreinfo_source=info))
    finally:
        if target.close is not None:
            target.close()
    assert pt.levels == (5 if cpu == "max" else 4)
    for name, value in truth.items():
        assert lay.bases[name].value == value, name
        assert bare.bases[name].value == value, name
    assert lay.bases["vmemmap_base"].how == "mem_section"
    assert lay.bases["kernel_image"].value == symbols["_text"]


@pytest.mark.parametrize("vaddr", [-1, 1 << 64])
def test_a_label_outside_64_bits_is_an_error_naming_the_address(vaddr: int) -> None:
    lay = linux_layout(4)
    assert lay.label((1 << 64) - 1).name and lay.label(0).name
    with pytest.raises(AddressOutOfRangeError) as caught:
        lay.label(vaddr)
    assert isinstance(caught.value, GdbextError) and caught.value.address == vaddr
