"""The simulator's QEMU ``dump-guest-memory`` ELF writer, checked independently with pyelftools."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.segments import NoteSegment

from gdbext.addr import AddrRange
from gdbext.cpu import CpuState
from gdbext_sim.elfcore import prstatus_desc, qemu_cpu_state_desc, write_qemu_elf_core
from gdbext_sim.memory import SparsePhysMemory

MIB = 1 << 20
CPU0 = CpuState(cr0=0x8005_0033, cr3=0x1C0_D000, cr4=0x3206_F0, efer=0xD01)
CPU1 = CpuState(cr0=0x8005_0033, cr3=0x7FF_E000, cr4=0x3216_F0, efer=0xD01)
VMCOREINFO = "OSRELEASE=6.1.0-sim\nPAGESIZE=4096\nSYMBOL(init_top_pgt)=ffffffff82a10000\n"
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")


def u32(data: bytes, offset: int) -> int:
    return int(U32.unpack_from(data, offset)[0])


def u64(data: bytes, offset: int) -> int:
    return int(U64.unpack_from(data, offset)[0])


def qemu_like_memory(size: int = 256 * MIB) -> SparsePhysMemory:
    """A q35-like RAM layout: [0, 0xa0000) and [0xc0000, size), a few frames written."""
    mem = SparsePhysMemory(size, ram=[AddrRange(0, 0xA0000), AddrRange(0xC0000, size)])
    mem.write(0x1000, b"low RAM")
    mem.write(0x9F000, bytes(range(256)) * 16)
    mem.write(0xC0000, b"\x5a" * 4096)
    mem.write(0x1C0_D000, U64.pack(0x1C0_E067) + bytes(4088))  # a PML4 entry
    mem.write(size - 8, b"the end!")
    return mem


def file_offset(elf: Any, paddr: int) -> int:
    """The file offset of ``paddr``, found through the PT_LOADs as a reader would."""
    for seg in elf.iter_segments():
        if (
            seg["p_type"] == "PT_LOAD"
            and seg["p_paddr"] <= paddr < seg["p_paddr"] + seg["p_filesz"]
        ):
            return int(seg["p_offset"] + paddr - seg["p_paddr"])
    raise AssertionError(f"0x{paddr:x} is in no PT_LOAD")


def sparse_files_supported(directory: Path) -> bool:
    probe = directory / "probe"
    with open(probe, "wb") as f:
        f.seek(64 * MIB)
        f.write(b"x")
    supported = os.stat(probe).st_blocks * 512 < MIB
    probe.unlink()
    return supported


@pytest.fixture
def core(tmp_path: Path) -> Path:
    path = tmp_path / "vmcore.elf"
    write_qemu_elf_core(path, qemu_like_memory(), [CPU0, CPU1], vmcoreinfo=VMCOREINFO)
    return path


def test_descs_have_the_documented_sizes_and_offsets() -> None:
    prstatus = prstatus_desc(0xA1B2C3D4)
    assert len(prstatus) == 336 and u32(prstatus, 32) == 0xA1B2C3D4
    assert prstatus == bytes(32) + U32.pack(0xA1B2C3D4) + bytes(300)
    desc = qemu_cpu_state_desc(CpuState(cr0=0x11, cr3=0x33000, cr4=0x44))
    assert (u32(desc, 0), u32(desc, 4)) == (1, 440)
    assert (u64(desc, 392), u64(desc, 416), u64(desc, 424)) == (0x11, 0x33000, 0x44)
    assert u64(desc, 400) == u64(desc, 408) == u64(desc, 432) == 0
    assert qemu_cpu_state_desc(CpuState()) == U32.pack(1) + U32.pack(440) + bytes(432)


def read_at(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(size)


def test_elf_header_and_sections(core: Path) -> None:
    size = os.path.getsize(core)
    with open(core, "rb") as f:
        elf = ELFFile(f)
        assert elf.elfclass == 64 and elf.little_endian
        header = elf.header
        assert header["e_ident"]["EI_VERSION"] == "EV_CURRENT"
        assert header["e_type"] == "ET_CORE"
        assert header["e_machine"] == "EM_X86_64"
        assert header["e_version"] == "EV_CURRENT"
        assert (header["e_shoff"], header["e_phoff"]) == (64, 192)
        assert (header["e_shnum"], header["e_shstrndx"], header["e_phnum"]) == (2, 1, 3)
        assert (header["e_ehsize"], header["e_phentsize"], header["e_shentsize"]) == (
            8,
            56,
            64,
        )  # QEMU 7.2 writes 8 (observed)
        assert header["e_entry"] == header["e_flags"] == 0
        sections = list(elf.iter_sections())
        assert [s.name for s in sections] == ["", ".shstrtab"]
        assert sections[0]["sh_type"] == "SHT_NULL" and sections[0]["sh_info"] == 0
        strtab = sections[1]
        assert strtab["sh_type"] == "SHT_STRTAB"
        assert strtab["sh_offset"] + strtab["sh_size"] == size  # at the end of the file
    assert read_at(core, size - 11, 11) == b"\0.shstrtab\0"


def test_program_headers(core: Path) -> None:
    with open(core, "rb") as f:
        elf = ELFFile(f)
        segs = list(elf.iter_segments())
        assert [s["p_type"] for s in segs] == ["PT_NOTE", "PT_LOAD", "PT_LOAD"]
        note, low, high = segs
        assert note["p_offset"] == 192 + 3 * 56
        assert note["p_offset"] == low["p_offset"] - note["p_filesz"]
        assert note["p_filesz"] == note["p_memsz"]
        assert (low["p_paddr"], low["p_vaddr"], low["p_filesz"]) == (0, 0, 0xA0000)
        assert (high["p_paddr"], high["p_vaddr"]) == (0xC0000, 0xC0000)
        assert high["p_filesz"] == high["p_memsz"] == 256 * MIB - 0xC0000
        assert high["p_offset"] == low["p_offset"] + 0xA0000
        for seg in segs:
            assert seg["p_flags"] == 0 and seg["p_align"] == 0
        assert os.path.getsize(core) == high["p_offset"] + high["p_filesz"] + 11


def test_notes(core: Path) -> None:
    with open(core, "rb") as f:
        elf = ELFFile(f)
        note_seg = next(elf.iter_segments())
        assert isinstance(note_seg, NoteSegment)
        notes = list(note_seg.iter_notes())
    assert [(n["n_name"], n["n_type"]) for n in notes] == [
        ("CORE", "NT_PRSTATUS"),
        ("CORE", "NT_PRSTATUS"),
        ("QEMU", 0),
        ("QEMU", 0),
        ("VMCOREINFO", 0),
    ]
    assert [n["n_namesz"] for n in notes] == [5, 5, 5, 5, 11]
    prstatus = [bytes(n["n_descdata"]) for n in notes[:2]]
    assert [len(d) for d in prstatus] == [336, 336]
    assert [u32(d, 32) for d in prstatus] == [1, 2]  # pr_pid = cpu index + 1
    assert all(d[112 : 112 + 27 * 8] == bytes(216) for d in prstatus)
    for note, cpu in zip(notes[2:4], [CPU0, CPU1], strict=True):
        desc = bytes(note["n_descdata"])
        assert len(desc) == note["n_descsz"] == 440
        assert (u32(desc, 0), u32(desc, 4)) == (1, 440)
        assert u64(desc, 392) == cpu.cr0
        assert u64(desc, 416) == cpu.cr3
        assert u64(desc, 424) == cpu.cr4
    vmcoreinfo = notes[4]
    assert bytes(vmcoreinfo["n_descdata"]).decode() == VMCOREINFO
    assert vmcoreinfo["n_descsz"] == len(VMCOREINFO)
    # 356 bytes per CORE note, 460 per QEMU note, then the padded VMCOREINFO note.
    assert [n["n_offset"] - notes[0]["n_offset"] for n in notes] == [0, 356, 712, 1172, 1632]
    assert note_seg["p_filesz"] == 1632 + 12 + 12 + (len(VMCOREINFO) + 3) // 4 * 4


def test_notes_without_vmcoreinfo(tmp_path: Path) -> None:
    path = tmp_path / "core"
    write_qemu_elf_core(path, SparsePhysMemory(MIB), [CpuState(cr3=0x1000)])
    with open(path, "rb") as f:
        elf = ELFFile(f)
        note_seg = next(elf.iter_segments())
        assert isinstance(note_seg, NoteSegment)
        notes = list(note_seg.iter_notes())
        assert [n["n_name"] for n in notes] == ["CORE", "QEMU"]
        assert note_seg["p_filesz"] == 816
        desc = bytes(notes[1]["n_descdata"])
        assert (u64(desc, 392), u64(desc, 416), u64(desc, 424)) == (0, 0x1000, 0)


def test_memory_round_trips(core: Path) -> None:
    mem = qemu_like_memory()
    with open(core, "rb") as f:
        elf = ELFFile(f)
        checks = [0x1000, 0x9F000, 0xC0000, 0x1C0_D000, 256 * MIB - 4096, 0x5000, 0x200_0000]
        offsets = {paddr: file_offset(elf, paddr) for paddr in [*checks, 256 * MIB - 8]}
    for paddr in checks:
        assert read_at(core, offsets[paddr], 4096) == mem.read(paddr, 4096), hex(paddr)
    assert u64(read_at(core, offsets[0x1C0_D000], 8), 0) == 0x1C0_E067
    assert read_at(core, offsets[256 * MIB - 8], 8) == b"the end!"


def test_small_memory_is_stored_byte_for_byte(tmp_path: Path) -> None:
    mem = SparsePhysMemory(4 * MIB, ram=[AddrRange(0, MIB), AddrRange(2 * MIB, 4 * MIB)])
    for i, paddr in enumerate(range(0, 4 * MIB, 0x3_3000)):
        if mem.in_ram(paddr, 4096):
            mem.write(paddr + i, bytes([i + 1]) * 100)
    path = tmp_path / "core"
    write_qemu_elf_core(path, mem, [CPU0])
    data = path.read_bytes()
    with open(path, "rb") as f:
        loads = [s for s in ELFFile(f).iter_segments() if s["p_type"] == "PT_LOAD"]
    stored = b"".join(data[s["p_offset"] : s["p_offset"] + s["p_filesz"]] for s in loads)
    assert stored == mem.read(0, MIB) + mem.read(2 * MIB, 2 * MIB)


def test_256mib_core_is_sparse_on_disk(core: Path, tmp_path: Path) -> None:
    assert os.path.getsize(core) > 256 * MIB - 0x20000
    if not sparse_files_supported(tmp_path):
        pytest.skip("the file system of tmp_path does not keep holes")
    assert os.stat(core).st_blocks * 512 <= 256 * 1024


def test_an_existing_larger_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "core"
    path.write_bytes(b"\xff" * (2 * MIB))
    write_qemu_elf_core(path, SparsePhysMemory(MIB), [CPU0])
    data = path.read_bytes()
    assert len(data) == 192 + 2 * 56 + 816 + MIB + 11
    assert data[192 + 2 * 56 + 816 :][:MIB] == bytes(MIB)


def test_pn_xnum_for_65535_or_more_program_headers(tmp_path: Path) -> None:
    count = 0xFFFF  # RAM ranges: with the PT_NOTE, 0x10000 program headers
    ram = [AddrRange(2 * i * 4096, (2 * i + 1) * 4096) for i in range(count)]
    mem = SparsePhysMemory(2 * count * 4096, ram=ram)
    mem.write(2 * 1234 * 4096 + 16, b"frame 1234")
    path = tmp_path / "core"
    write_qemu_elf_core(path, mem, [CPU0])
    with open(path, "rb") as f:
        elf = ELFFile(f)
        assert elf.header["e_phnum"] == 0xFFFF
        assert elf.get_section(0)["sh_info"] == count + 1
        assert elf.num_segments() == count + 1
        seg = elf.get_segment(1235)
        assert seg["p_paddr"] == 2 * 1234 * 4096
        f.seek(seg["p_offset"] + 16)
        assert f.read(10) == b"frame 1234"


def test_at_least_one_cpu(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_qemu_elf_core(tmp_path / "core", SparsePhysMemory(MIB), [])
