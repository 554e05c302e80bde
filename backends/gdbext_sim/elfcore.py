"""Write a simulated machine as the ELF core QEMU 7.2 ``dump-guest-memory`` writes (x86-64).

The layout is that of a guest in long mode dumped without paging (``-p`` off):

====================  =======================================================================
file offset           contents
====================  =======================================================================
0                     ``Elf64_Ehdr`` (ELFCLASS64, little-endian, ET_CORE, EM_X86_64)
64 (``e_shoff``)      two ``Elf64_Shdr``: the NULL section and ``.shstrtab``
192 (``e_phoff``)     ``Elf64_Phdr``: one PT_NOTE, then one PT_LOAD per RAM range
note offset           for each CPU a ``"CORE"`` NT_PRSTATUS note; then for each CPU a
                      ``"QEMU"`` note (type 0, a ``QEMUCPUState``); then, optionally, the
                      ``"VMCOREINFO"`` note (type 0)
memory offset         the RAM ranges, in address order, back to back
end                   the ``.shstrtab`` bytes (``"\\0.shstrtab\\0"``)
====================  =======================================================================

The memory offset directly follows the notes (it is not page-aligned), the PT_NOTE's
``p_offset`` is ``memory offset - note size``, and each PT_LOAD has ``p_paddr = p_vaddr`` =
the range start, ``p_filesz = p_memsz`` = its size, ``p_flags = p_align = 0``. With
``0xffff`` or more program headers, ``e_phnum`` is ``PN_XNUM`` and the count is in the NULL
section header's ``sh_info``.

The file is written sparsely: frames that are all zeros are skipped with a seek, so a
256 MiB guest with a few page tables costs a few KiB of disk (on a file system with holes).

Only the CPU's CR0, CR3 and CR4 are known to the simulator: general registers and segments
are written as zeros. The format has no EFER.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence

from gdbext.cpu import CpuState
from gdbext_sim.memory import SparsePhysMemory

# --- ELF constants ---------------------------------------------------------------------------

ELFMAG = b"\x7fELF"
ELFCLASS64 = 2
ELFDATA2LSB = 1
EV_CURRENT = 1
ET_CORE = 4
EM_X86_64 = 62
PT_LOAD = 1
PT_NOTE = 4
SHT_STRTAB = 3
NT_PRSTATUS = 1
#: ``e_phnum`` value meaning "the count is in section header 0's ``sh_info``".
PN_XNUM = 0xFFFF

# --- Layouts (little-endian) -----------------------------------------------------------------

#: ``Elf64_Ehdr``, 64 bytes: e_ident[16] @0, e_type @16, e_machine @18, e_version @20,
#: e_entry @24, e_phoff @32, e_shoff @40, e_flags @48, e_ehsize @52, e_phentsize @54,
#: e_phnum @56, e_shentsize @58, e_shnum @60, e_shstrndx @62.
EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
#: ``Elf64_Phdr``, 56 bytes: p_type @0, p_flags @4, p_offset @8, p_vaddr @16, p_paddr @24,
#: p_filesz @32, p_memsz @40, p_align @48.
PHDR = struct.Struct("<IIQQQQQQ")
#: ``Elf64_Shdr``, 64 bytes: sh_name @0, sh_type @4, sh_flags @8, sh_addr @16, sh_offset @24,
#: sh_size @32, sh_link @40, sh_info @44, sh_addralign @48, sh_entsize @56.
SHDR = struct.Struct("<IIQQQQIIQQ")
#: ``Elf64_Nhdr``, 12 bytes: n_namesz @0, n_descsz @4, n_type @8. The name (with its NUL)
#: and the desc follow, each padded to 4 bytes.
NHDR = struct.Struct("<III")
#: ``x86_64_elf_prstatus`` (QEMU's NT_PRSTATUS desc), 336 bytes: pr_pid u32 @32; pr_reg @112,
#: 27 u64: r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs eflags
#: rsp ss fs_base gs_base ds es fs gs; 8 bytes of padding @328.
PRSTATUS = struct.Struct("<32xI76x27Q8x")
PRSTATUS_PID_OFFSET = 32
PRSTATUS_REG_OFFSET = 112
#: ``QEMUCPUSegment``, 24 bytes: selector u32 @0, limit u32 @4, flags u32 @8, pad u32 @12,
#: base u64 @16.
QEMU_CPU_SEGMENT = struct.Struct("<IIIIQ")
#: ``QEMUCPUState`` version 1, 440 bytes: version u32 @0, size u32 @4; u64 rax rbx rcx rdx
#: rsi rdi rsp rbp r8..r15 @8..128; rip @136; rflags @144; QEMUCPUSegment cs @152, ds @176,
#: es @200, fs @224, gs @248, ss @272, ldt @296, tr @320, gdt @344, idt @368; u64 cr[0..4]
#: @392, 400, 408, 416, 424; kernel_gs_base @432 (present when size >= 440).
QEMU_CPU_STATE = struct.Struct("<II16QQQ" + "IIIIQ" * 10 + "5QQ")
QEMU_CPU_STATE_VERSION = 1
QEMU_CR0_OFFSET = 392
QEMU_CR3_OFFSET = 416
QEMU_CR4_OFFSET = 424
#: The fields QEMU_CPU_STATE packs before cr[0]: version, size, 18 registers, 10 segments.
_QEMU_FIELDS_BEFORE_CR = 2 + 18 + 5 * 10

_EHDR_OFFSET = 0
_SHDR_OFFSET = EHDR.size
_SHDR_COUNT = 2
_PHDR_OFFSET = _SHDR_OFFSET + SHDR.size * _SHDR_COUNT
_SHSTRTAB = b"\0.shstrtab\0"
_SHSTRTAB_NAME = 1


def _pad4(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def elf_note(name: str, note_type: int, desc: bytes) -> bytes:
    """One ELF64 note: header, NUL-terminated name and desc, each padded to 4 bytes.

    >>> len(elf_note("CORE", NT_PRSTATUS, bytes(PRSTATUS.size)))
    356
    """
    name_bytes = name.encode("ascii") + b"\0"
    return NHDR.pack(len(name_bytes), len(desc), note_type) + _pad4(name_bytes) + _pad4(desc)


def prstatus_desc(pid: int) -> bytes:
    """An NT_PRSTATUS desc with ``pr_pid = pid`` and every register zero."""
    return PRSTATUS.pack(pid, *([0] * 27))


def qemu_cpu_state_desc(cpu: CpuState) -> bytes:
    """A 440-byte ``QEMUCPUState`` holding ``cpu``'s CR0, CR3 and CR4 (unknown ones as 0)."""
    values = [QEMU_CPU_STATE_VERSION, QEMU_CPU_STATE.size]
    values += [0] * (_QEMU_FIELDS_BEFORE_CR - 2)
    values += [cpu.cr0 or 0, 0, 0, cpu.cr3 or 0, cpu.cr4 or 0]
    values.append(0)  # kernel_gs_base
    return QEMU_CPU_STATE.pack(*values)


def qemu_notes(cpus: Sequence[CpuState], vmcoreinfo: str | None = None) -> bytes:
    """The note data of the dump: CORE notes, then QEMU notes, then VMCOREINFO if given."""
    notes = [elf_note("CORE", NT_PRSTATUS, prstatus_desc(i + 1)) for i in range(len(cpus))]
    notes += [elf_note("QEMU", 0, qemu_cpu_state_desc(cpu)) for cpu in cpus]
    if vmcoreinfo is not None:
        notes.append(elf_note("VMCOREINFO", 0, vmcoreinfo.encode("utf-8")))
    return b"".join(notes)


#: QEMU 7.2 writes 8 in e_ehsize (not 64): observed in a real `dump-guest-memory` core of a
#: Debian 6.1 guest. Copied so that a reader tested on these cores cannot rely on e_ehsize.
QEMU_E_EHSIZE = 8


def write_qemu_elf_core(
    path: str | os.PathLike[str],
    memory: SparsePhysMemory,
    cpus: Sequence[CpuState],
    *,
    vmcoreinfo: str | None = None,
) -> None:
    """Write ``memory`` and ``cpus`` to ``path`` as QEMU 7.2 ``dump-guest-memory`` would.

    :param path: the core file to create (replaced if it exists).
    :param memory: the RAM; one PT_LOAD per range of :attr:`SparsePhysMemory.ram_ranges`.
    :param cpus: the CPUs, in CPU-index order (CPU ``i`` gets ``pr_pid = i + 1``).
    :param vmcoreinfo: the text of a VMCOREINFO note, written after the QEMU notes.
    :raises ValueError: without CPUs.
    """
    if not cpus:
        raise ValueError("a QEMU dump has at least one CPU")
    ranges = memory.ram_ranges
    notes = qemu_notes(cpus, vmcoreinfo)
    phnum = 1 + len(ranges)
    note_offset = _PHDR_OFFSET + PHDR.size * phnum
    memory_offset = note_offset + len(notes)
    total_size = sum(r.size for r in ranges)
    section_offset = memory_offset + total_size

    ehdr = EHDR.pack(
        ELFMAG + bytes([ELFCLASS64, ELFDATA2LSB, EV_CURRENT]) + bytes(9),
        ET_CORE,
        EM_X86_64,
        EV_CURRENT,
        0,  # e_entry
        _PHDR_OFFSET,
        _SHDR_OFFSET,
        0,  # e_flags
        QEMU_E_EHSIZE,
        PHDR.size,
        min(phnum, PN_XNUM),
        SHDR.size,
        _SHDR_COUNT,
        _SHDR_COUNT - 1,  # e_shstrndx: .shstrtab is the last section
    )
    shdr_null = SHDR.pack(0, 0, 0, 0, 0, 0, 0, phnum if phnum >= PN_XNUM else 0, 0, 0)
    shdr_strtab = SHDR.pack(
        _SHSTRTAB_NAME, SHT_STRTAB, 0, 0, section_offset, len(_SHSTRTAB), 0, 0, 0, 0
    )
    phdrs = [PHDR.pack(PT_NOTE, 0, memory_offset - len(notes), 0, 0, len(notes), len(notes), 0)]
    load_offsets: list[int] = []
    offset = memory_offset
    for r in ranges:
        phdrs.append(PHDR.pack(PT_LOAD, 0, offset, r.start, r.start, r.size, r.size, 0))
        load_offsets.append(offset)
        offset += r.size

    with open(path, "wb") as f:
        f.write(ehdr + shdr_null + shdr_strtab + b"".join(phdrs) + notes)
        index = 0
        for paddr, data in memory.iter_frames():
            while ranges[index].end <= paddr:
                index += 1
            f.seek(load_offsets[index] + paddr - ranges[index].start)
            f.write(data)
        f.seek(section_offset)
        f.write(_SHSTRTAB)
        f.truncate(section_offset + len(_SHSTRTAB))
