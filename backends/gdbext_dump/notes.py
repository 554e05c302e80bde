"""ELF note areas of kernel dumps: per-CPU registers and the VMCOREINFO text.

A note area is a sequence of notes, each an ``Nhdr`` (``n_namesz``, ``n_descsz``, ``n_type``:
three little-endian u32 in both ELF classes; ``Elf32_Nhdr`` and ``Elf64_Nhdr`` have the same
layout), the name with its NUL and the desc, each padded to 4 bytes. The notes a kernel dump
carries:

- ``"CORE"`` ``NT_PRSTATUS`` (1), one per CPU: general registers, no control registers. The
  x86-64 desc (336 bytes) has ``pr_pid`` u32 @32 and ``pr_reg`` @112 (27 u64, order in
  :data:`PRSTATUS64_REGS`); the i386 desc (144 bytes, QEMU's ``x86_elf_prstatus``) has
  ``pr_pid`` @24 and ``pr_reg`` @72 (:data:`PRSTATUS32`).
- ``"QEMU"`` type 0, one per CPU (QEMU ``dump-guest-memory``): a ``QEMUCPUState``, layout in
  :data:`QEMU_CPU_STATE`: ``u32 version`` (1), ``u32 size``, 16 general registers, rip,
  rflags, 10 segments, ``cr[0..4]`` @392..424, and fields added later without a version bump,
  recognised by ``size``: ``kernel_gs_base`` @432 (size >= 440, QEMU >= 7.x). EFER is read
  @440 only when ``size >= 448`` (a patched QEMU some Xen tools expect; upstream has no EFER)
  and only if its reserved bits are clear. QEMU writes the same ``QEMUCPUState`` (all fields
  u64) in 32-bit cores; only the note header's C type differs, not its bytes.
- ``"VMCOREINFO"`` type 0: the kernel's VMCOREINFO text (:mod:`gdbext.linux.vmcoreinfo`).

Other notes are kept in :attr:`DumpNotes.notes` and otherwise ignored.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import NamedTuple

from gdbext.cpu import CpuState
from gdbext.errors import InputError
from gdbext.formats.elf import (
    NHDR,
    NOTE_ALIGN,
    NT_PRSTATUS,
    PRSTATUS32,
    PRSTATUS32_REGS,
    PRSTATUS64,
    PRSTATUS64_REGS,
)
from gdbext.formats.qemu import (
    QEMU_CPU_STATE,
    QEMU_CPU_STATE_EFER,
    QEMU_CPU_STATE_GS,
    QEMU_CPU_STATE_VERSION,
    QEMU_GENERAL_REGS,
    QEMU_SEGMENTS,
)
from gdbext.formats.snapshot import SNAPSHOT_NOTE_NAME, SNAPSHOT_NOTE_TYPE

QEMU_KERNEL_GS_BASE_OFFSET = QEMU_CPU_STATE_GS.offset("kernel_gs_base")
QEMU_EFER_OFFSET = QEMU_CPU_STATE_EFER.offset("efer")
QEMU_EFER_MIN_SIZE = QEMU_CPU_STATE_EFER.size
_U64 = struct.Struct("<Q")
#: EFER bits that exist (SCE, LME, LMA, NXE, SVME, LMSLE, FFXSR, TCE); others are reserved.
_EFER_DEFINED = 0x1 | 0xFF00


class Note(NamedTuple):
    """One note of a note area."""

    name: str
    type: int
    desc: bytes
    #: File offset of the note's header.
    offset: int
    #: File offset of its desc.
    desc_offset: int


class QemuCpuState(NamedTuple):
    """The ``QEMU`` note of one CPU."""

    offset: int
    version: int
    size: int
    #: rax..r15, rip, rflags; ``<seg>_selector``, ``<seg>_base``, ``<seg>_limit``,
    #: ``<seg>_flags`` for each segment; cr0..cr4; kernel_gs_base and efer when present.
    registers: Mapping[str, int]
    cr0: int
    cr2: int
    cr3: int
    cr4: int
    kernel_gs_base: int | None = None
    efer: int | None = None

    def cpu_state(self) -> CpuState:
        return CpuState(cr0=self.cr0, cr3=self.cr3, cr4=self.cr4, efer=self.efer)


class PrStatus(NamedTuple):
    """An ``NT_PRSTATUS`` note: the thread id (QEMU: CPU index + 1) and general registers."""

    offset: int
    pid: int
    #: Register name -> value (x86-64 or i386 names, see :data:`PRSTATUS64_REGS`).
    registers: Mapping[str, int]


class DumpNotes(NamedTuple):
    """What a dump's note area says."""

    notes: tuple[Note, ...] = ()
    #: The ``QEMU`` notes in file order (QEMU writes them in CPU-index order).
    qemu: tuple[QemuCpuState, ...] = ()
    #: The ``NT_PRSTATUS`` notes in file order.
    prstatus: tuple[PrStatus, ...] = ()
    #: The VMCOREINFO desc (the last one if there are several), and its file offset.
    vmcoreinfo: bytes | None = None
    vmcoreinfo_offset: int | None = None
    #: Notes that were skipped as not understood (unknown QEMU note version...).
    warnings: tuple[str, ...] = ()

    @property
    def cpus(self) -> tuple[CpuState, ...]:
        """Control registers of each CPU, from the ``QEMU`` notes (empty without them)."""
        return tuple(q.cpu_state() for q in self.qemu)

    @property
    def cpu_count(self) -> int:
        """CPUs the notes describe: ``QEMU`` notes, else ``NT_PRSTATUS`` notes."""
        return len(self.qemu) or len(self.prstatus)

    @property
    def snapshot(self) -> Note | None:
        """The ``"GDBEXT"`` note of a ``gdbext snapshot`` file
        (:mod:`gdbext.formats.snapshot`), if there is one."""
        for note in self.notes:
            if note.name == SNAPSHOT_NOTE_NAME and note.type == SNAPSHOT_NOTE_TYPE:
                return note
        return None

    def registers(self, cpu: int) -> dict[str, int]:
        """All registers known for CPU ``cpu``: NT_PRSTATUS's, then the QEMU note's."""
        regs: dict[str, int] = {}
        if cpu < len(self.prstatus):
            regs.update(self.prstatus[cpu].registers)
        if cpu < len(self.qemu):
            regs.update(self.qemu[cpu].registers)
        return regs


def _align(value: int) -> int:
    return (value + NOTE_ALIGN - 1) & ~(NOTE_ALIGN - 1)


def iter_notes(data: bytes | memoryview, *, path: str, file_offset: int) -> list[Note]:
    """Split a note area into notes; :class:`InputError` (path, offset) if one overruns it.

    An all-zero header ends the area (kexec's per-CPU note buffers end with one); trailing
    bytes too short for a header must be zero.
    """
    view = memoryview(data)
    size = len(view)
    notes: list[Note] = []
    pos = 0
    while pos + NHDR.size <= size:
        namesz, descsz, note_type = NHDR.struct.unpack_from(view, pos)
        if namesz == 0 and descsz == 0 and note_type == 0:
            break
        name_start = pos + NHDR.size
        desc_start = name_start + _align(namesz)
        desc_end = desc_start + descsz
        if desc_start > size or desc_end > size:
            raise InputError(
                f"note with name size {namesz} and desc size {descsz} runs past the end of "
                f"the note area ({size} bytes at 0x{file_offset:x})",
                path,
                file_offset + pos,
            )
        name = bytes(view[name_start : name_start + namesz]).rstrip(b"\0")
        notes.append(
            Note(
                name.decode("ascii", errors="replace"),
                note_type,
                bytes(view[desc_start:desc_end]),
                file_offset + pos,
                file_offset + desc_start,
            )
        )
        pos = _align(desc_end)
    else:
        if pos < size and any(view[pos:size]):
            raise InputError(
                f"{size - pos} bytes at the end of the note area are too short for a note",
                path,
                file_offset + pos,
            )
    return notes


def parse_notes(
    data: bytes | memoryview, *, path: str, file_offset: int, elfclass: int = 64
) -> DumpNotes:
    """Parse a dump's note area.

    :param data: the note bytes (a PT_NOTE segment, or the notes inside a kdump file).
    :param path: the dump file, for errors.
    :param file_offset: where ``data`` starts in the file, for errors and :class:`Note` offsets.
    :param elfclass: 64 or 32. Both use the same note header; the class is only checked.
    :raises InputError: a note that overruns the area, a ``QEMU`` note whose ``size`` does not
        fit its desc or is too small for ``cr[4]``, an ``NT_PRSTATUS`` too short for its pid.
    """
    if elfclass not in (32, 64):
        raise ValueError(f"ELF class {elfclass} is not 32 or 64")
    notes = iter_notes(data, path=path, file_offset=file_offset)
    qemu: list[QemuCpuState] = []
    prstatus: list[PrStatus] = []
    warnings: list[str] = []
    vmcoreinfo: bytes | None = None
    vmcoreinfo_offset: int | None = None
    for note in notes:
        if note.name == "QEMU" and note.type == 0:
            state = _parse_qemu(note, path, warnings)
            if state is not None:
                qemu.append(state)
        elif note.name == "CORE" and note.type == NT_PRSTATUS:
            status = _parse_prstatus(note, path, warnings)
            if status is not None:
                prstatus.append(status)
        elif note.name == "VMCOREINFO":
            vmcoreinfo = note.desc
            vmcoreinfo_offset = note.desc_offset
    return DumpNotes(
        tuple(notes), tuple(qemu), tuple(prstatus), vmcoreinfo, vmcoreinfo_offset, tuple(warnings)
    )


def _parse_qemu(note: Note, path: str, warnings: list[str]) -> QemuCpuState | None:
    desc = note.desc
    if len(desc) < 8:
        raise InputError(
            f"QEMU note desc of {len(desc)} bytes is too short for its header",
            path,
            note.offset,
        )
    version, size = struct.unpack_from("<II", desc)  # the fields every version starts with
    if version != QEMU_CPU_STATE_VERSION:
        warnings.append(
            f"QEMU note at offset 0x{note.offset:x} has version {version}, not "
            f"{QEMU_CPU_STATE_VERSION}: ignored"
        )
        return None
    if size > len(desc):
        raise InputError(
            f"QEMU note says its CPU state has {size} bytes but its desc has {len(desc)}",
            path,
            note.offset,
        )
    if size < QEMU_CPU_STATE.size:
        raise InputError(
            f"QEMU note CPU state of {size} bytes is shorter than the {QEMU_CPU_STATE.size} "
            "bytes up to CR4",
            path,
            note.offset,
        )
    fields = QEMU_CPU_STATE.unpack(desc)
    registers: dict[str, int] = {reg: fields[reg] for reg in QEMU_GENERAL_REGS}
    for seg in QEMU_SEGMENTS:
        for part in ("selector", "limit", "flags", "base"):
            registers[f"{seg}_{part}"] = fields[f"{seg}_{part}"]
    cr = [fields[f"cr{i}"] for i in range(5)]
    for i, value in enumerate(cr):
        registers[f"cr{i}"] = value
    kernel_gs_base = None
    if size >= QEMU_CPU_STATE_GS.size:
        kernel_gs_base = _U64.unpack_from(desc, QEMU_KERNEL_GS_BASE_OFFSET)[0]
        registers["kernel_gs_base"] = kernel_gs_base
    efer = None
    if size >= QEMU_EFER_MIN_SIZE:
        value = _U64.unpack_from(desc, QEMU_EFER_OFFSET)[0]
        if value & ~_EFER_DEFINED:
            warnings.append(
                f"QEMU note at offset 0x{note.offset:x}: value 0x{value:x} after "
                "kernel_gs_base is not an EFER: ignored"
            )
        else:
            efer = value
            registers["efer"] = value
    return QemuCpuState(
        note.offset, version, size, registers, cr[0], cr[2], cr[3], cr[4], kernel_gs_base, efer
    )


def _parse_prstatus(note: Note, path: str, warnings: list[str]) -> PrStatus | None:
    desc = note.desc
    for layout, names in ((PRSTATUS64, PRSTATUS64_REGS), (PRSTATUS32, PRSTATUS32_REGS)):
        if len(desc) == layout.size:
            fields = layout.unpack(desc)
            return PrStatus(note.offset, fields["pr_pid"], {r: fields[r] for r in names})
    pid_at = PRSTATUS64.offset("pr_pid")
    if len(desc) < pid_at + 4:
        raise InputError(
            f"NT_PRSTATUS desc of {len(desc)} bytes is too short for pr_pid",
            path,
            note.offset,
        )
    warnings.append(
        f"NT_PRSTATUS note at offset 0x{note.offset:x} has an unknown size {len(desc)}: "
        "registers ignored"
    )
    return PrStatus(note.offset, struct.unpack_from("<I", desc, pid_at)[0], {})
