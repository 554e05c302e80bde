"""The binary layouts of :mod:`gdbext.formats`, checked against independent declarations:
pyelftools' ELF structures, and the field offsets of the C headers (makedumpfile's
``diskdump_mod.h``, QEMU's ``target/i386/arch_dump.c``, the kernel's ``elf_prstatus``, LiME's
``lime.h``)."""

from __future__ import annotations

import pytest
from elftools.elf.structs import ELFStructs

from gdbext.formats.elf import (
    ELF32_EHDR,
    ELF32_PHDR,
    ELF32_SHDR,
    ELF64_EHDR,
    ELF64_PHDR,
    ELF64_SHDR,
    NHDR,
    PRSTATUS32,
    PRSTATUS64,
)
from gdbext.formats.kdump import (
    DISK_DUMP_HEADER,
    FLAT_HEADER,
    FLAT_RECORD,
    PAGE_DESC,
    SUB_HEADER,
    SUB_HEADER_SIZE_BY_VERSION,
)
from gdbext.formats.layout import Layout
from gdbext.formats.lime import LIME_HEADER, LIME_MAGIC_BYTES
from gdbext.formats.qemu import (
    QEMU_CPU_SEGMENT,
    QEMU_CPU_STATE,
    QEMU_CPU_STATE_EFER,
    QEMU_CPU_STATE_GS,
)


@pytest.mark.parametrize("elfclass", [32, 64])
def test_elf_headers_match_pyelftools(elfclass: int) -> None:
    structs = ELFStructs(little_endian=True, elfclass=elfclass)
    structs.create_basic_structs()
    structs.create_advanced_structs(e_type="ET_CORE", e_machine="EM_X86_64")
    ours = {
        64: (ELF64_EHDR, ELF64_PHDR, ELF64_SHDR),
        32: (ELF32_EHDR, ELF32_PHDR, ELF32_SHDR),
    }[elfclass]
    theirs = (structs.Elf_Ehdr, structs.Elf_Phdr, structs.Elf_Shdr)
    for layout, reference in zip(ours, theirs, strict=True):
        assert layout.size == reference.sizeof(), layout.name
        assert list(layout.names) == [sub.name for sub in reference.subcons], layout.name
        # Distinct values that no enum names: each must come back under its own name.
        values = {
            name: (bytes(16) if name == "e_ident" else 0x100 + 0x11 * i)
            for i, name in enumerate(layout.names)
        }
        parsed = reference.parse(layout.pack(**values))
        for name, value in values.items():
            if name != "e_ident":
                assert parsed[name] == value, (layout.name, name)
        assert layout.unpack(layout.pack(**values)) == values
    assert NHDR.size == structs.Elf_Nhdr.sizeof() == 12


def test_kdump_layouts_have_the_c_offsets() -> None:
    """Offsets of ``disk_dump_header``/``kdump_sub_header``/``page_desc`` (64-bit)."""
    assert DISK_DUMP_HEADER.size == 464
    header = {"header_version": 8, "utsname": 12, "timestamp": 408, "status": 424}
    header |= {"block_size": 428, "sub_hdr_size": 432, "bitmap_blocks": 436, "max_mapnr": 440}
    header |= {"total_ram_blocks": 444, "written_blocks": 452, "current_cpu": 456, "nr_cpus": 460}
    for name, offset in header.items():
        assert DISK_DUMP_HEADER.offset(name) == offset, name
    assert SUB_HEADER.size == 104
    sub = {"dump_level": 8, "split": 12, "start_pfn": 16, "offset_vmcoreinfo": 32}
    sub |= {"offset_note": 48, "size_note": 56, "offset_eraseinfo": 64, "max_mapnr_64": 96}
    for name, offset in sub.items():
        assert SUB_HEADER.offset(name) == offset, name
    assert SUB_HEADER_SIZE_BY_VERSION == {1: 16, 2: 32, 3: 48, 4: 64, 5: 80, 6: 104}
    assert PAGE_DESC.size == 24
    assert [PAGE_DESC.offset(n) for n in ("offset", "size", "flags", "page_flags")] == [
        0,
        8,
        12,
        16,
    ]
    flat = FLAT_HEADER.pack(signature=b"makedumpfile", type=1, version=2)
    assert flat[16:] == bytes(7) + b"\1" + bytes(7) + b"\2"  # big-endian
    assert FLAT_RECORD.pack(offset=-1, size=-1) == b"\xff" * 16


def test_qemu_cpu_state_has_the_c_offsets() -> None:
    assert QEMU_CPU_SEGMENT.size == 24 and QEMU_CPU_SEGMENT.offset("base") == 16
    assert (QEMU_CPU_STATE.size, QEMU_CPU_STATE_GS.size, QEMU_CPU_STATE_EFER.size) == (
        432,
        440,
        448,
    )
    offsets = {"size": 4, "rax": 8, "r15": 128, "rip": 136, "rflags": 144, "cs_selector": 152}
    offsets |= {"ds_selector": 176, "idt_selector": 368, "idt_base": 384, "cr0": 392}
    offsets |= {"cr3": 416, "cr4": 424, "kernel_gs_base": 432, "efer": 440}
    for name, offset in offsets.items():
        assert QEMU_CPU_STATE_EFER.offset(name) == offset, name


def test_prstatus_has_the_kernel_offsets() -> None:
    assert PRSTATUS64.size == 336 and PRSTATUS32.size == 144
    assert (PRSTATUS64.offset("pr_pid"), PRSTATUS64.offset("r15"), PRSTATUS64.offset("gs")) == (
        32,
        112,
        112 + 26 * 8,
    )
    assert (PRSTATUS32.offset("pr_pid"), PRSTATUS32.offset("ebx")) == (24, 72)
    # ds es fs gs are u16 each followed by 2 bytes of padding; ss is the last register.
    assert (PRSTATUS32.offset("ds"), PRSTATUS32.offset("orig_eax")) == (100, 116)
    assert PRSTATUS32.offset("ss") == 136


def test_layout_checks_its_declaration_and_its_arguments() -> None:
    with pytest.raises(ValueError, match="not one value"):
        Layout("bad", [("two", "2Q")])
    with pytest.raises(ValueError, match="not one value"):
        Layout("bad", [("", "Q")])
    with pytest.raises(ValueError, match="twice"):
        Layout("bad", [("a", "Q"), ("a", "I")])
    with pytest.raises(ValueError, match="byte order"):
        Layout("bad", [("a", "Q")], "@")
    pair = Layout("pair", [("kind", "I"), ("", "4x"), ("value", "Q")])
    assert (pair.size, pair.offset("value"), pair.end("kind"), pair.index("value")) == (16, 8, 4, 1)
    assert pair.unpack(b"\0" * 8 + pair.pack(kind=7, value=9), 8) == {"kind": 7, "value": 9}
    with pytest.raises(TypeError, match=r"missing fields \['value'\], unknown fields \['x'\]"):
        pair.pack(kind=1, x=2)


def test_lime_header_has_the_c_offsets() -> None:
    assert LIME_HEADER.size == 32
    offsets = [LIME_HEADER.offset(n) for n in ("magic", "version", "s_addr", "e_addr")]
    assert offsets == [0, 4, 8, 16]
    assert LIME_MAGIC_BYTES == b"EMiL"
