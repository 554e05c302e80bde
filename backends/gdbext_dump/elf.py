"""ELF core files of a whole machine: QEMU ``dump-guest-memory`` and Linux ``/proc/vmcore``.

Both store physical memory as PT_LOAD segments and CPU/kernel facts as notes:

- PT_LOADs are mapped by ``p_paddr``, never ``p_vaddr`` (QEMU's ``-p`` dumps put wrong virtual
  addresses there; ``/proc/vmcore`` puts direct-map addresses). ``p_filesz < p_memsz`` means the
  rest reads as zeros.
- Program headers are found at ``e_phoff`` (QEMU 7.2 writes them at 192 after two section
  headers; older QEMU at 64). With 0xffff or more, ``e_phnum`` is ``PN_XNUM`` and the count is
  in section header 0's ``sh_info`` (at ``e_shoff``).
- The PT_NOTE segments are parsed by :mod:`gdbext_dump.notes`.

The headers are parsed with the layouts of :mod:`gdbext.formats.elf` (:mod:`struct`
underneath) over the file's ``mmap`` rather than with pyelftools: a core's only structures are
one header, the program headers (QEMU's paging dumps have 66,000) and the notes;
``struct.iter_unpack`` reads all program headers in one call, needs no file object and no
per-header Python objects from a library, and every bound can be checked where the file offset
of the field is known (for the error message).

ELFCLASS32 cores (QEMU's dump of a guest in protected mode, EM_386) have the same structure with
32-bit fields. Only little-endian x86 (EM_X86_64, EM_386) cores are accepted.
"""

from __future__ import annotations

import mmap
from typing import NamedTuple

from gdbext.errors import InputError
from gdbext.formats.elf import (
    ELF32_EHDR,
    ELF32_PHDR,
    ELF32_SHDR,
    ELF64_EHDR,
    ELF64_PHDR,
    ELF64_SHDR,
    ELFMAG,
)
from gdbext.formats.layout import Layout
from gdbext_dump.notes import DumpNotes, Note, parse_notes
from gdbext_dump.segments import Segment, SegmentMapper, open_mmap

ELFCLASS32 = 1
ELFCLASS64 = 2
ELFDATA2LSB = 1
ET_CORE = 4
EM_386 = 3
EM_X86_64 = 62
PT_LOAD = 1
PT_NOTE = 4
PN_XNUM = 0xFFFF
SHT_NULL = 0
SHT_NOBITS = 8
_E_TYPES = {0: "ET_NONE", 1: "a relocatable object", 2: "an executable", 3: "a shared object"}

#: ``e_ident``: magic @0, EI_CLASS @4, EI_DATA @5, EI_VERSION @6.
EI_CLASS = 4
EI_DATA = 5


class ElfLayout(NamedTuple):
    """The structures of one ELF class (:mod:`gdbext.formats.elf`), and the file offsets of
    the header fields named in errors."""

    bits: int
    ehdr: Layout
    phdr: Layout
    #: Only section 0 is read, for PN_XNUM; the others are checked to lie inside the file.
    shdr: Layout

    @property
    def off_phoff(self) -> int:
        return self.ehdr.offset("e_phoff")

    @property
    def off_shoff(self) -> int:
        return self.ehdr.offset("e_shoff")

    @property
    def off_phentsize(self) -> int:
        return self.ehdr.offset("e_phentsize")

    @property
    def off_phnum(self) -> int:
        return self.ehdr.offset("e_phnum")

    @property
    def off_shentsize(self) -> int:
        return self.ehdr.offset("e_shentsize")

    @property
    def off_sh_info(self) -> int:
        return self.shdr.offset("sh_info")


ELF64 = ElfLayout(64, ELF64_EHDR, ELF64_PHDR, ELF64_SHDR)
ELF32 = ElfLayout(32, ELF32_EHDR, ELF32_PHDR, ELF32_SHDR)


class ElfCore(NamedTuple):
    """An opened ELF core: its physical memory and its notes."""

    path: str
    #: 32 or 64.
    elfclass: int
    machine: int
    mapper: SegmentMapper
    notes: DumpNotes
    #: Program headers (after PN_XNUM), PT_LOADs among them, PT_NOTEs among them.
    phnum: int
    load_count: int
    note_count: int
    #: File offset of the first PT_NOTE's data, or None.
    notes_offset: int | None

    def close(self) -> None:
        self.mapper.close()


def read_elf_core(path: str) -> ElfCore:
    """Open and check the ELF core at ``path`` (mmapped read-only; never read whole).

    :raises InputError: naming the file and the offset of whatever is wrong: not an x86 ELF
        core, header fields pointing outside the file, segments the file cannot hold or that
        contradict each other, malformed notes.
    """
    data = open_mmap(path)
    try:
        return _parse(path, data)
    except BaseException:
        data.close()
        raise


def _parse(path: str, data: mmap.mmap) -> ElfCore:
    size = len(data)
    ident = data[:16]
    if len(ident) < 16 or ident[:4] != ELFMAG:
        raise InputError("not an ELF file (no \\x7fELF magic)", path, 0)
    elfclass = ident[EI_CLASS]
    if elfclass not in (ELFCLASS32, ELFCLASS64):
        raise InputError(f"unknown ELF class {elfclass}", path, EI_CLASS)
    if ident[EI_DATA] != ELFDATA2LSB:
        raise InputError(
            f"ELF data encoding {ident[EI_DATA]} is not little-endian (x86 cores are)",
            path,
            EI_DATA,
        )
    layout = ELF64 if elfclass == ELFCLASS64 else ELF32
    if size < layout.ehdr.size:
        raise InputError(
            f"truncated ELF header: the file has {size} bytes, the header needs {layout.ehdr.size}",
            path,
            0,
        )
    ehdr = layout.ehdr.unpack(data)
    e_type: int = ehdr["e_type"]
    e_machine: int = ehdr["e_machine"]
    e_phoff: int = ehdr["e_phoff"]
    e_shoff: int = ehdr["e_shoff"]
    e_phentsize: int = ehdr["e_phentsize"]
    e_phnum: int = ehdr["e_phnum"]
    e_shentsize: int = ehdr["e_shentsize"]
    e_shnum: int = ehdr["e_shnum"]
    # e_ehsize is not checked: QEMU 7.2 writes 8 there.
    if e_type != ET_CORE:
        what = _E_TYPES.get(e_type, f"ELF type {e_type}")
        raise InputError(
            f"{what}, not a core dump (e_type {e_type})", path, layout.ehdr.offset("e_type")
        )
    if e_machine not in (EM_X86_64, EM_386):
        raise InputError(
            f"machine {e_machine} is not x86 (EM_X86_64 or EM_386)",
            path,
            layout.ehdr.offset("e_machine"),
        )
    phnum = e_phnum
    if e_phnum == PN_XNUM:
        phnum = _xnum(path, data, layout, e_shoff, e_shentsize)
    if e_shoff:
        _check_sections(path, data, layout, e_shoff, e_shentsize, e_shnum)
    if phnum == 0:
        raise InputError("no program headers: nothing is in this core", path, layout.off_phnum)
    if e_phentsize != layout.phdr.size:
        raise InputError(
            f"e_phentsize {e_phentsize} is not the ELF{layout.bits} program header size "
            f"{layout.phdr.size}",
            path,
            layout.off_phentsize,
        )
    table_size = phnum * layout.phdr.size
    if e_phoff < layout.ehdr.size or e_phoff + table_size > size:
        raise InputError(
            f"program header table at e_phoff 0x{e_phoff:x} ({phnum} x {layout.phdr.size} "
            f"bytes) is not between the ELF header and the end of the file (0x{size:x} bytes)",
            path,
            layout.off_phoff,
        )
    phdr = layout.phdr
    i_type, i_offset, i_paddr, i_filesz, i_memsz = (
        phdr.index(name) for name in ("p_type", "p_offset", "p_paddr", "p_filesz", "p_memsz")
    )
    segments: list[Segment] = []
    notes: list[Note] = []
    notes_offset: int | None = None
    note_count = 0
    parsed = DumpNotes()
    warnings: list[str] = []
    header = e_phoff
    for fields in phdr.struct.iter_unpack(data[e_phoff : e_phoff + table_size]):
        p_type = fields[i_type]
        if p_type == PT_LOAD:
            segments.append(
                Segment(
                    fields[i_paddr], fields[i_memsz], fields[i_offset], fields[i_filesz], header
                )
            )
        elif p_type == PT_NOTE:
            offset, filesz = fields[i_offset], fields[i_filesz]
            if offset + filesz > size:
                raise InputError(
                    f"PT_NOTE data at file offset 0x{offset:x} + 0x{filesz:x} runs past the end "
                    f"of the file (0x{size:x} bytes)",
                    path,
                    header,
                )
            part = parse_notes(
                data[offset : offset + filesz], path=path, file_offset=offset, elfclass=layout.bits
            )
            notes.extend(part.notes)
            warnings.extend(part.warnings)
            note_count += 1
            if notes_offset is None:
                notes_offset = offset
            parsed = _combine(parsed, part)
        header += layout.phdr.size
    mapper = SegmentMapper(path, data, segments)
    if not mapper.segment_count:
        raise InputError("no PT_LOAD segment with memory: this core holds none", path, e_phoff)
    parsed = DumpNotes(
        tuple(notes),
        parsed.qemu,
        parsed.prstatus,
        parsed.vmcoreinfo,
        parsed.vmcoreinfo_offset,
        tuple(warnings),
    )
    return ElfCore(
        path,
        layout.bits,
        e_machine,
        mapper,
        parsed,
        phnum,
        len(segments),
        note_count,
        notes_offset,
    )


def _combine(a: DumpNotes, b: DumpNotes) -> DumpNotes:
    """Notes of several PT_NOTE segments, in file order (the last VMCOREINFO wins)."""
    return DumpNotes(
        a.notes + b.notes,
        a.qemu + b.qemu,
        a.prstatus + b.prstatus,
        b.vmcoreinfo if b.vmcoreinfo is not None else a.vmcoreinfo,
        b.vmcoreinfo_offset if b.vmcoreinfo is not None else a.vmcoreinfo_offset,
        a.warnings + b.warnings,
    )


def _check_shdr0(path: str, size: int, layout: ElfLayout, e_shoff: int, e_shentsize: int) -> None:
    if e_shentsize != layout.shdr.size:
        raise InputError(
            f"e_shentsize {e_shentsize} is not the ELF{layout.bits} section header size "
            f"{layout.shdr.size}",
            path,
            layout.off_shentsize,
        )
    if e_shoff + layout.shdr.size > size:
        raise InputError(
            f"section headers at e_shoff 0x{e_shoff:x} are not inside the file (0x{size:x} bytes)",
            path,
            layout.off_shoff,
        )


def _check_sections(
    path: str, data: mmap.mmap, layout: ElfLayout, e_shoff: int, e_shentsize: int, e_shnum: int
) -> None:
    """Every section header inside the file, and every section's bytes too (the only use of
    sections in a core is PN_XNUM, but a section past the end means a truncated file)."""
    size = len(data)
    _check_shdr0(path, size, layout, e_shoff, e_shentsize)
    shdr = layout.shdr
    count = e_shnum or int(shdr.unpack(data, e_shoff)["sh_size"])  # SHN_UNDEF: count in sh_size
    if e_shoff + count * shdr.size > size:
        raise InputError(
            f"{count} section headers at e_shoff 0x{e_shoff:x} run past the end of the file "
            f"(0x{size:x} bytes)",
            path,
            layout.off_shoff,
        )
    i_type, i_offset, i_size = (shdr.index(n) for n in ("sh_type", "sh_offset", "sh_size"))
    table = data[e_shoff : e_shoff + count * shdr.size]
    for i, fields in enumerate(shdr.struct.iter_unpack(table)):
        sh_type, sh_offset, sh_size = fields[i_type], fields[i_offset], fields[i_size]
        if sh_type not in (SHT_NULL, SHT_NOBITS) and sh_offset + sh_size > size:
            raise InputError(
                f"section {i} (0x{sh_size:x} bytes at 0x{sh_offset:x}) runs past the end of "
                f"the file (0x{size:x} bytes): truncated?",
                path,
                e_shoff + i * shdr.size,
            )


def _xnum(path: str, data: mmap.mmap, layout: ElfLayout, e_shoff: int, e_shentsize: int) -> int:
    """The real program header count of a PN_XNUM file: section header 0's ``sh_info``."""
    if e_shoff == 0:
        raise InputError(
            "e_phnum is PN_XNUM but there is no section header 0 (e_shoff is 0) to hold the count",
            path,
            layout.off_phnum,
        )
    _check_shdr0(path, len(data), layout, e_shoff, e_shentsize)
    count = int(layout.shdr.unpack(data, e_shoff)["sh_info"])
    if count == 0:
        raise InputError(
            "e_phnum is PN_XNUM but section header 0's sh_info (the real count) is 0",
            path,
            e_shoff + layout.off_sh_info,
        )
    return count
