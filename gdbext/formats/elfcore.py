"""Write an ELF core as QEMU 7.2 ``dump-guest-memory`` writes it (x86-64): the simulator's
machines and ``gdbext snapshot``'s page tables.

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
from collections.abc import Iterable, Sequence

from gdbext.addr import AddrRange
from gdbext.cpu import CpuState
from gdbext.formats.elf import (
    ELF64_EHDR,
    ELF64_PHDR,
    ELF64_SHDR,
    ELFMAG,
    NHDR,
    NOTE_ALIGN,
    NT_PRSTATUS,
    PRSTATUS64,
)
from gdbext.formats.qemu import (
    QEMU_CPU_STATE_EFER,
    QEMU_CPU_STATE_GS,
    QEMU_CPU_STATE_VERSION,
)

# --- ELF constants ---------------------------------------------------------------------------

ELFCLASS64 = 2
ELFDATA2LSB = 1
EV_CURRENT = 1
ET_CORE = 4
EM_X86_64 = 62
PT_LOAD = 1
PT_NOTE = 4
SHT_STRTAB = 3
#: ``e_phnum`` value meaning "the count is in section header 0's ``sh_info``".
PN_XNUM = 0xFFFF

_EHDR_OFFSET = 0
_SHDR_OFFSET = ELF64_EHDR.size
_SHDR_COUNT = 2
_PHDR_OFFSET = _SHDR_OFFSET + ELF64_SHDR.size * _SHDR_COUNT
_SHSTRTAB = b"\0.shstrtab\0"
_SHSTRTAB_NAME = 1


def _pad4(data: bytes) -> bytes:
    return data + bytes(-len(data) % NOTE_ALIGN)


def elf_note(name: str, note_type: int, desc: bytes) -> bytes:
    """One ELF64 note: header, NUL-terminated name and desc, each padded to 4 bytes.

    >>> len(elf_note("CORE", NT_PRSTATUS, bytes(PRSTATUS64.size)))
    356
    """
    name_bytes = name.encode("ascii") + b"\0"
    header = NHDR.pack(n_namesz=len(name_bytes), n_descsz=len(desc), n_type=note_type)
    return header + _pad4(name_bytes) + _pad4(desc)


def prstatus_desc(pid: int) -> bytes:
    """An NT_PRSTATUS desc with ``pr_pid = pid`` and every register zero."""
    return PRSTATUS64.pack(**dict.fromkeys(PRSTATUS64.names, 0) | {"pr_pid": pid})


def qemu_cpu_state_desc(cpu: CpuState, *, efer: bool = False) -> bytes:
    """A 440-byte ``QEMUCPUState`` holding ``cpu``'s CR0, CR3 and CR4 (unknown ones as 0).

    With ``efer`` and a known EFER, the 448-byte layout that carries EFER after
    ``kernel_gs_base`` (:data:`~gdbext.formats.qemu.QEMU_CPU_STATE_EFER`), which the ``core``
    backend reads: a snapshot keeps NXE as it was."""
    layout = QEMU_CPU_STATE_EFER if efer and cpu.efer is not None else QEMU_CPU_STATE_GS
    fields = dict.fromkeys(layout.names, 0)
    fields |= {"version": QEMU_CPU_STATE_VERSION, "size": layout.size}
    fields |= {"cr0": cpu.cr0 or 0, "cr3": cpu.cr3 or 0, "cr4": cpu.cr4 or 0}
    if layout is QEMU_CPU_STATE_EFER:
        fields["efer"] = cpu.efer or 0
    return layout.pack(**fields)


def qemu_notes(
    cpus: Sequence[CpuState],
    vmcoreinfo: str | None = None,
    *,
    efer: bool = False,
    extra: bytes = b"",
) -> bytes:
    """The note data of the dump: CORE notes, then QEMU notes (with EFER when ``efer``, see
    :func:`qemu_cpu_state_desc`), then VMCOREINFO if given, then ``extra`` (whole notes)."""
    notes = [elf_note("CORE", NT_PRSTATUS, prstatus_desc(i + 1)) for i in range(len(cpus))]
    notes += [elf_note("QEMU", 0, qemu_cpu_state_desc(cpu, efer=efer)) for cpu in cpus]
    if vmcoreinfo is not None:
        notes.append(elf_note("VMCOREINFO", 0, vmcoreinfo.encode("utf-8")))
    notes.append(extra)
    return b"".join(notes)


#: QEMU 7.2 writes 8 in e_ehsize (not 64): observed in a real `dump-guest-memory` core of a
#: Debian 6.1 guest. Copied so that a reader tested on these cores cannot rely on e_ehsize.
QEMU_E_EHSIZE = 8


def write_qemu_elf_core(
    path: str | os.PathLike[str],
    ranges: Sequence[AddrRange],
    frames: Iterable[tuple[int, bytes]],
    cpus: Sequence[CpuState],
    *,
    vmcoreinfo: str | None = None,
    efer: bool = False,
    extra_notes: bytes = b"",
) -> None:
    """Write RAM and ``cpus`` to ``path`` as QEMU 7.2 ``dump-guest-memory`` would.

    :param path: the core file to create (replaced if it exists).
    :param ranges: the RAM ranges, in address order; one PT_LOAD each.
    :param frames: ``(paddr, bytes)`` of the RAM that is not zeros, in address order, each
        inside one range (the rest reads as zeros).
    :param cpus: the CPUs, in CPU-index order (CPU ``i`` gets ``pr_pid = i + 1``).
    :param vmcoreinfo: the text of a VMCOREINFO note, written after the QEMU notes.
    :param efer: write each known EFER in its QEMU note (:func:`qemu_cpu_state_desc`).
    :param extra_notes: whole notes written last.
    :raises ValueError: without CPUs.
    """
    if not cpus:
        raise ValueError("a QEMU dump has at least one CPU")
    notes = qemu_notes(cpus, vmcoreinfo, efer=efer, extra=extra_notes)
    phnum = 1 + len(ranges)
    note_offset = _PHDR_OFFSET + ELF64_PHDR.size * phnum
    memory_offset = note_offset + len(notes)
    total_size = sum(r.size for r in ranges)
    section_offset = memory_offset + total_size

    ehdr = ELF64_EHDR.pack(
        e_ident=ELFMAG + bytes([ELFCLASS64, ELFDATA2LSB, EV_CURRENT]) + bytes(9),
        e_type=ET_CORE,
        e_machine=EM_X86_64,
        e_version=EV_CURRENT,
        e_entry=0,
        e_phoff=_PHDR_OFFSET,
        e_shoff=_SHDR_OFFSET,
        e_flags=0,
        e_ehsize=QEMU_E_EHSIZE,
        e_phentsize=ELF64_PHDR.size,
        e_phnum=min(phnum, PN_XNUM),
        e_shentsize=ELF64_SHDR.size,
        e_shnum=_SHDR_COUNT,
        e_shstrndx=_SHDR_COUNT - 1,  # .shstrtab is the last section
    )
    no_section = dict.fromkeys(ELF64_SHDR.names, 0)
    shdr_null = ELF64_SHDR.pack(**no_section | {"sh_info": phnum if phnum >= PN_XNUM else 0})
    shdr_strtab = ELF64_SHDR.pack(
        **no_section
        | {
            "sh_name": _SHSTRTAB_NAME,
            "sh_type": SHT_STRTAB,
            "sh_offset": section_offset,
            "sh_size": len(_SHSTRTAB),
        }
    )

    def phdr(p_type: int, offset: int, paddr: int, size: int) -> bytes:
        return ELF64_PHDR.pack(
            p_type=p_type,
            p_flags=0,
            p_offset=offset,
            p_vaddr=paddr,
            p_paddr=paddr,
            p_filesz=size,
            p_memsz=size,
            p_align=0,
        )

    phdrs = [phdr(PT_NOTE, memory_offset - len(notes), 0, len(notes))]
    load_offsets: list[int] = []
    offset = memory_offset
    for r in ranges:
        phdrs.append(phdr(PT_LOAD, offset, r.start, r.size))
        load_offsets.append(offset)
        offset += r.size

    with open(path, "wb") as f:
        f.write(ehdr + shdr_null + shdr_strtab + b"".join(phdrs) + notes)
        index = 0
        for paddr, data in frames:
            while ranges[index].end <= paddr:
                index += 1
            f.seek(load_offsets[index] + paddr - ranges[index].start)
            f.write(data)
        f.seek(section_offset)
        f.write(_SHSTRTAB)
        f.truncate(section_offset + len(_SHSTRTAB))
