"""``snapshot``: one page table saved as a small ELF core that ``gdbext`` opens as a target.

The file holds the table frames the selected root reaches (found by
:meth:`~gdbext.x86.paging.X86PageTable.tables`: tables only, never the pages the leaves map),
and those of the kernel's own top table when that is another (Linux's layout is read there,
:func:`~gdbext.linux.detect.kernel_tables`),
the selected CPU's control registers with CR3 set to the saved root and CR4.LA57 to its mode,
the VMCOREINFO when the target has one (so that Linux labels still work), and a ``"GDBEXT"``
note (:mod:`gdbext.formats.snapshot`) with the format version. It is written by the one ELF
core writer (:mod:`gdbext.formats.elfcore`), as QEMU lays out ``dump-guest-memory``, so the
``core`` backend reads it as any QEMU dump.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from gdbext.addr import AddrRange
from gdbext.cpu import CR4_LA57, CpuState
from gdbext.errors import InputError, PhysMemoryError, UsageError
from gdbext.formats.elfcore import elf_note, write_qemu_elf_core
from gdbext.formats.snapshot import (
    SNAPSHOT_NOTE_NAME,
    SNAPSHOT_NOTE_TYPE,
    SNAPSHOT_VERSION,
    SnapshotInfo,
)
from gdbext.frontend.commands import RootOptions, cpu_index, open_page_table, root_warnings
from gdbext.geometry import TABLE_SIZE
from gdbext.linux.detect import kernel_tables
from gdbext.mapper import TABLE_STRUCT
from gdbext.plugin.target import Target
from gdbext.units import shown
from gdbext.x86.paging import X86PageTable


@dataclass(frozen=True)
class SnapshotOptions:
    """Where to write, and which table."""

    output: str
    root: RootOptions = field(default_factory=RootOptions)


@dataclass(frozen=True)
class SnapshotResult:
    """What was written."""

    path: str
    root: int
    levels: int
    #: Table frames saved, and those the walk reaches but the target could not read.
    tables: int
    unreadable: int
    #: The file's size in bytes.
    size: int
    vmcoreinfo: bool
    warnings: list[str] = field(default_factory=list)


def snapshot_cpu(cpu: CpuState, pt: X86PageTable) -> CpuState:
    """``cpu`` with CR3 on ``pt``'s root (its PCID kept when the root is the CPU's own) and
    CR4.LA57 saying ``pt``'s mode: what opening the snapshot selects by default."""
    pcid = (cpu.cr3 or 0) & 0xFFF if cpu.root == pt.root else 0
    cr4 = cpu.cr4 or 0
    cr4 = cr4 | CR4_LA57 if pt.levels == 5 else cr4 & ~CR4_LA57
    return dataclasses.replace(cpu, cr3=pt.root | pcid, cr4=cr4)


def table_frames(
    pt: X86PageTable, *others: X86PageTable
) -> tuple[list[AddrRange], list[tuple[int, bytes]], int]:
    """The frames of every table ``pt`` and ``others`` reach, each read once: the ranges they
    make (adjacent frames joined), ``(paddr, bytes)`` in address order, and how many could not
    be read."""
    frames: list[tuple[int, bytes]] = []
    unreadable = 0
    reached = set(pt.tables())
    for other in others:
        reached.update(other.tables())
    for paddr in sorted(reached):
        try:
            # Through the table cache: a live target's tables are read once, for the walk
            # that found them and for the file.
            frames.append((paddr, TABLE_STRUCT.pack(*pt.read_table(paddr))))
        except PhysMemoryError:
            unreadable += 1
    ranges: list[AddrRange] = []
    for paddr, _ in frames:
        if ranges and ranges[-1].end == paddr:
            ranges[-1] = AddrRange(ranges[-1].start, paddr + TABLE_SIZE)
        else:
            ranges.append(AddrRange(paddr, paddr + TABLE_SIZE))
    return ranges, frames, unreadable


def vmcoreinfo_text(target: Target) -> str | None:
    """The target's VMCOREINFO as note text (``KEY=value`` lines), if it has one."""
    info = target.facts.vmcoreinfo
    if info is None or not info.entries:
        return None
    return "".join(f"{key}={value}\n" for key, value in info.entries.items())


def snapshot(target: Target, options: SnapshotOptions) -> SnapshotResult:
    """Write the table ``options.root`` selects to ``options.output``.

    :raises UsageError: no output file named.
    :raises InputError: the file cannot be written.
    """
    if not options.output:
        raise UsageError("snapshot needs an output file (-o FILE)")
    pt = open_page_table(target, options.root)
    index = cpu_index(target, options.root)
    cpu = target.cpus[index] if index < len(target.cpus) else CpuState()
    # Linux's layout is found in the kernel's own top table (VMCOREINFO's, or the PTI twin):
    # its tables, mostly those of the selected table's kernel half, go in too.
    kernel = kernel_tables(pt, target.facts)
    ranges, frames, unreadable = table_frames(pt, *([kernel] if kernel is not pt else []))
    warnings = root_warnings(pt, options.root)
    if unreadable:
        warnings.append(
            f"{unreadable} table frame(s) could not be read from {target.description} and are "
            "not in the snapshot (a walk of it reports them as outside RAM)"
        )
    if not frames:
        raise InputError(f"the root 0x{pt.root:x} cannot be read: nothing to save")
    info = SnapshotInfo(
        SNAPSHOT_VERSION,
        pt.root,
        pt.levels,
        len(frames),
        pt.max_phys_bits if cpu.max_phys_bits is not None else None,
        f"{target.backend} {target.description}",
    )
    vmcoreinfo = vmcoreinfo_text(target)
    try:
        write_qemu_elf_core(
            options.output,
            ranges,
            frames,
            [snapshot_cpu(cpu, pt)],
            vmcoreinfo=vmcoreinfo,
            efer=True,
            extra_notes=elf_note(SNAPSHOT_NOTE_NAME, SNAPSHOT_NOTE_TYPE, info.encode()),
        )
        size = os.path.getsize(options.output)
    except OSError as exc:
        raise InputError(f"cannot write {shown(options.output)}: {exc.strerror or exc}") from None
    return SnapshotResult(
        options.output,
        pt.root,
        pt.levels,
        len(frames),
        unreadable,
        size,
        vmcoreinfo is not None,
        warnings,
    )
