"""Open any supported dump file as a :class:`~gdbext.plugin.target.Target` (backend ``core``).

The format comes from the file's magic (:mod:`gdbext_dump.detect`) unless ``format_in`` says.
Each reader gives physical memory (a read-only mapper with ``is_captured``) and, where the
format carries them, notes; this module turns notes into CPU state, details and kernel facts:

- **CPU state.** From the ``QEMU`` notes when there are any (CR0, CR3, CR4 per CPU; EFER is not
  in QEMU's format, so it is unknown and NX is assumed enabled). Otherwise (``/proc/vmcore``,
  makedumpfile, LiME, raw) from VMCOREINFO: every CPU (one per ``NT_PRSTATUS``, at least one)
  gets CR3 = the kernel's root table and CR4.LA57 from ``pgtable_l5_enabled``; CR0, EFER and the
  other CR4 bits are unknown (``None``). Without either, CR3 is unknown and ``--cr3`` is needed.
- **VMCOREINFO.** From the note (ELF, kdump). Without a note it is searched for in RAM
  (:func:`gdbext.linux.vmcoreinfo.find_vmcoreinfo`, at most 4 GiB scanned): at open time when CPU
  state depends on it, else on first use of a VMCOREINFO fact or detail (so a walk of a QEMU
  dump without the note does not pay for the scan).
- **Facts** (``Target.facts``): the VMCOREINFO's entries (key -> raw value text),
  ``kernel_root``, ``kernel_levels``, ``kernel_offset``.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, Protocol

from gdbext.addr import AddrRange
from gdbext.cpu import CR4_LA57, CpuState
from gdbext.errors import InputError, UsageError
from gdbext.formats.snapshot import SNAPSHOT_VERSION, SnapshotInfo
from gdbext.linux.vmcoreinfo import (
    DEFAULT_SCAN_LIMIT,
    VmcoreInfo,
    find_vmcoreinfo,
    kernel_root,
    parse_vmcoreinfo,
    vmcore_facts,
)
from gdbext.mapper import PhysMapper, readable_ranges
from gdbext.plugin.facts import KernelFacts, VmcoreFacts
from gdbext.plugin.target import Detail, LazyMapping, StopCache, Target
from gdbext_dump.detect import detect_format
from gdbext_dump.elf import EM_386, EM_X86_64, read_elf_core
from gdbext_dump.lime import open_lime
from gdbext_dump.notes import DumpNotes, parse_notes
from gdbext_dump.raw import open_raw
from gdbext_dump.segments import SegmentMapper

#: Per-CPU register lines in ``details`` are given for at most this many CPUs.
MAX_CPU_DETAILS = 16
_MACHINES = {EM_X86_64: "EM_X86_64", EM_386: "EM_386"}


class _KdumpLike(Protocol):
    """What :func:`gdbext_dump.kdump.open_kdump` returns (helper module, imported lazily)."""

    @property
    def mapper(self) -> PhysMapper: ...
    @property
    def notes(self) -> bytes: ...
    @property
    def notes_offset(self) -> int: ...
    @property
    def vmcoreinfo(self) -> bytes | None: ...
    @property
    def ram(self) -> Sequence[AddrRange]: ...
    @property
    def details(self) -> Mapping[str, str]: ...

    def close(self) -> None: ...


class _Opened(NamedTuple):
    """One reader's output, before CPU state and facts are derived. (The dump readers' records
    are named tuples: opening a dump is part of a command's start-up, and making a dataclass
    costs start-up time.)"""

    format: str
    read_path: str
    mapper: PhysMapper
    ram: list[AddrRange]
    notes: DumpNotes
    vmcoreinfo_text: bytes | None
    details: dict[str, str]
    close: Callable[[], None]
    find: Callable[[bytes, int, int], int] | None = None


def open_dump(path: str, format_in: str | None = None, base: int | None = None) -> Target:
    """Open the dump at ``path`` read-only.

    :param format_in: ``elf``, ``kdump``, ``lime`` or ``raw``; detected from the magic if None.
    :param base: physical address of a raw image's first byte (raw images only; default 0).
    :raises InputError: the file cannot be read or is malformed (message names file and offset).
    :raises UsageError: a bad ``format_in``, or ``base`` for a format other than raw.
    :raises InputError: a file with no known magic, unless ``format_in="raw"`` or ``base`` says
        it is a raw image.
    """
    _check_mappable(path)
    fmt = detect_format(path, format_in)
    if fmt == "raw" and format_in is None and base is None:
        # A raw image has no magic; a file without any known magic is more likely a damaged or
        # foreign file than a raw image, so that reading takes the user's word.
        raise InputError(
            "no dump format's magic at the start (ELF, kdump, flattened kdump, LiME); "
            "for a raw physical image say --format-in raw (or --base ADDR)",
            path,
            0,
        )
    if base is not None and fmt != "raw":
        raise UsageError(f"--base applies to raw images only; {path} is {fmt}")
    if fmt == "elf":
        opened = _open_elf(path)
    elif fmt == "kdump":
        opened = _open_kdump(path)
    elif fmt == "lime":
        opened = _open_lime(path)
    else:
        opened = _open_raw(path, base or 0)
    try:
        return _target(path, opened)
    except BaseException:
        opened.close()
        raise


# --- Readers ---------------------------------------------------------------------------------


def _open_elf(path: str) -> _Opened:
    core = read_elf_core(path)
    notes = core.notes
    kind = "QEMU dump-guest-memory" if notes.qemu else "vmcore-style"
    details = {
        "format": f"ELF{core.elfclass} core ({_MACHINES.get(core.machine)}, {kind})",
        "file size": _size(path),
        "segments": (
            f"{core.load_count} PT_LOAD of {core.phnum} program headers; "
            f"{core.mapper.segment_count} ranges after merging"
        ),
        "notes": _note_summary(notes),
    }
    return _Opened(
        "elf",
        "ELF core (mmap)",
        core.mapper,
        core.mapper.ram,
        notes,
        notes.vmcoreinfo,
        details,
        core.close,
        core.mapper.find,
    )


def _open_kdump(path: str) -> _Opened:
    from gdbext_dump.kdump import open_kdump  # loaded on demand

    kdump: _KdumpLike = open_kdump(path)
    try:
        notes = (
            parse_notes(kdump.notes, path=path, file_offset=kdump.notes_offset)
            if kdump.notes
            else DumpNotes()
        )
    except BaseException:
        kdump.close()
        raise
    details = dict(kdump.details)
    details.setdefault("format", "kdump-compressed")
    details["file size"] = _size(path)
    details["notes"] = _note_summary(notes)
    text = kdump.vmcoreinfo if kdump.vmcoreinfo is not None else notes.vmcoreinfo
    return _Opened(
        "kdump",
        "kdump (mmap, pages decompressed on read)",
        kdump.mapper,
        list(kdump.ram),
        notes,
        text,
        details,
        kdump.close,
    )


def _open_lime(path: str) -> _Opened:
    mapper, ranges = open_lime(path)
    details = {
        "format": "LiME",
        "file size": _size(path),
        "segments": Detail.number(ranges, "ranges"),
    }
    return _without_notes("lime", "LiME (mmap)", mapper, details)


def _open_raw(path: str, base: int) -> _Opened:
    mapper = open_raw(path, base)
    details = {"format": f"raw physical image from 0x{base:x}", "file size": _size(path)}
    return _without_notes("raw", "raw image (mmap)", mapper, details)


def _without_notes(
    kind: str, read_path: str, mapper: SegmentMapper, details: dict[str, str]
) -> _Opened:
    """A format that carries memory only (LiME, raw): no notes, no CPU state, no VMCOREINFO
    but what a search of RAM finds."""
    return _Opened(
        kind, read_path, mapper, mapper.ram, DumpNotes(), None, details, mapper.close, mapper.find
    )


def _check_mappable(path: str) -> None:
    """A dump is read through mmap: a regular file (or a block device). Opening a FIFO would
    wait for a writer forever."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise InputError(f"cannot open: {exc.strerror or exc}", path) from None
    if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise InputError(f"{kind}: a dump must be a file that can be mapped", path)


def _size(path: str) -> str:
    try:
        return Detail.number(os.path.getsize(path), "bytes")
    except OSError:
        return "?"


def _note_summary(notes: DumpNotes) -> str:
    parts = []
    if notes.prstatus:
        parts.append(f"{len(notes.prstatus)} NT_PRSTATUS")
    if notes.qemu:
        sizes = sorted({q.size for q in notes.qemu})
        parts.append(f"{len(notes.qemu)} QEMU (CPU state of {'/'.join(map(str, sizes))} bytes)")
    if notes.vmcoreinfo is not None:
        parts.append(f"VMCOREINFO at offset 0x{notes.vmcoreinfo_offset or 0:x}")
    others = len(notes.notes) - len(notes.prstatus) - len(notes.qemu)
    others -= notes.vmcoreinfo is not None
    if others > 0:
        parts.append(f"{others} other")
    return ", ".join(parts) or "none"


# --- VMCOREINFO, CPU state, facts -------------------------------------------------------------


class _VmcoreinfoSource:
    """The dump's VMCOREINFO: from its note, or searched for in RAM once, on demand."""

    def __init__(self, opened: _Opened) -> None:
        self._opened = opened
        self._done = False
        self._info: VmcoreInfo | None = None
        self._noticed = False
        self.origin = "none"
        if opened.vmcoreinfo_text is not None:
            self._info = parse_vmcoreinfo(opened.vmcoreinfo_text)
            self.origin = "note"
            self._done = True

    @property
    def resolved(self) -> bool:
        return self._done

    def get(self) -> VmcoreInfo | None:
        if not self._done:
            self._done = True
            opened = self._opened
            found = find_vmcoreinfo(
                opened.mapper.read,
                readable_ranges(opened.mapper, opened.ram),
                find=opened.find,
                limit=DEFAULT_SCAN_LIMIT,
            )
            if found is not None:
                paddr, text = found
                self._info = parse_vmcoreinfo(text)
                self.origin = f"found in RAM at 0x{paddr:x} ({len(text)} bytes; no note)"
            else:
                self.origin = "none (no note; not found in RAM)"
        return self._info

    def facts(self) -> VmcoreFacts | None:
        """What the VMCOREINFO says, for :attr:`Target.facts`."""
        info = self.get()
        return None if info is None else vmcore_facts(info)

    def notices(self) -> list[str]:
        """The VMCOREINFO values that were ignored (out of range), once, and only when the
        VMCOREINFO was looked at (no RAM scan for it here)."""
        if not self._done or self._info is None or self._noticed:
            return []
        self._noticed = True
        return [
            f"VMCOREINFO ({self.origin}): {problem}"
            for problem in self._info.problems
            if problem.endswith("; ignored")
        ]

    def details(self) -> dict[str, str]:
        info = self.get()
        details = {"VMCOREINFO": self.origin}
        if info is None:
            return details
        if info.osrelease is not None:
            details["OSRELEASE"] = info.osrelease
        root = kernel_root(info)
        if root is not None:
            details["kernel root"] = Detail.address(
                root, "init_top_pgt - 0xffffffff80000000 + phys_base"
            )
        if info.levels is not None:
            details["kernel paging levels"] = Detail.number(info.levels)
        if info.kernel_offset is not None:
            details["KERNELOFFSET"] = Detail.address(info.kernel_offset)
        if info.problems:
            shown = "; ".join(info.problems[:3])
            more = f" (+{len(info.problems) - 3} more)" if len(info.problems) > 3 else ""
            details["VMCOREINFO problems"] = shown + more
        return details


def _cpus(notes: DumpNotes, vmcoreinfo: _VmcoreinfoSource) -> tuple[list[CpuState], str]:
    """CPU states and how they were obtained."""
    if notes.qemu:
        return list(notes.cpus), "QEMU notes (CR0, CR3, CR4; EFER unknown: NX assumed on)"
    count = max(1, len(notes.prstatus))
    info = vmcoreinfo.get()
    root = None if info is None else kernel_root(info)
    if info is None or root is None:
        return (
            [CpuState()] * count,
            "unknown: no QEMU notes and no kernel root in VMCOREINFO (give --cr3)",
        )
    levels = info.levels
    cr4 = None if levels is None else (CR4_LA57 if levels == 5 else 0)
    state = CpuState(cr3=root, cr4=cr4)
    how = (
        "from VMCOREINFO: CR3 = kernel root for every CPU, CR4.LA57 from pgtable_l5_enabled"
        if levels is not None
        else "from VMCOREINFO: CR3 = kernel root for every CPU, levels unknown (4 assumed)"
    )
    return [state] * count, how + "; CR0, EFER and other CR4 bits unknown"


def _register_details(notes: DumpNotes, count: int) -> dict[str, str]:
    details: dict[str, str] = {}
    for i in range(min(count, MAX_CPU_DETAILS)):
        regs = notes.registers(i)
        names = [
            name
            for name in ("rip", "rsp", "eip", "esp", "kernel_gs_base", "gs_base")
            if name in regs
        ]
        if names:
            details[f"cpu {i} registers"] = Detail(
                ", ".join(f"{name} 0x{regs[name]:x}" for name in names),
                {name: f"0x{regs[name]:x}" for name in names},
            )
    return details


def _snapshot(path: str, notes: DumpNotes) -> SnapshotInfo | None:
    """What the note of a ``gdbext snapshot`` file says, if it is one.

    :raises InputError: a snapshot of another format version, or a note that does not parse.
    """
    note = notes.snapshot
    if note is None:
        return None
    try:
        info = SnapshotInfo.decode(note.desc)
    except ValueError as exc:
        raise InputError(f"a damaged gdbext snapshot note: {exc}", path, note.offset) from None
    if info.version != SNAPSHOT_VERSION:
        raise InputError(
            f"a gdbext snapshot of format version {info.version}; this gdbext reads version "
            f"{SNAPSHOT_VERSION} (take the snapshot again with this version)",
            path,
            note.offset,
        )
    return info


def _target(path: str, opened: _Opened) -> Target:
    notes = opened.notes
    source = _VmcoreinfoSource(opened)
    cpus, how = _cpus(notes, source)
    details = dict(opened.details)
    snapshot = _snapshot(path, notes)
    if snapshot is not None:
        if snapshot.max_phys_bits is not None:
            cpus = [dataclasses.replace(c, max_phys_bits=snapshot.max_phys_bits) for c in cpus]
        details["snapshot"] = (
            f"gdbext snapshot v{snapshot.version}: root 0x{snapshot.root:x}, "
            f"{snapshot.levels}-level, {snapshot.tables} table frames; {snapshot.source}"
        )
    details["CPUs"] = Detail.number(len(cpus))
    details["CPU state"] = how
    details |= _register_details(notes, len(cpus))
    if notes.warnings:
        details["note warnings"] = "; ".join(notes.warnings[:3])
    all_details: Mapping[str, str]
    facts: KernelFacts
    if source.resolved:
        facts = KernelFacts(vmcoreinfo_source=source.facts())
        all_details = details | source.details()
    else:
        facts = KernelFacts(vmcoreinfo_source=source.facts)
        all_details = LazyMapping(details, source.details)
    return Target(
        backend="core",
        description=path,
        mapper=opened.mapper,
        cpus=cpus,
        ram=opened.ram,
        read_path=opened.read_path,
        details=all_details,
        facts=facts,
        close=opened.close,
        notices=source.notices,
        stop_cache=StopCache(),  # a dump's memory never changes: one stop for ever
    )
