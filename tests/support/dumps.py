"""Pieces of crash dumps built byte by byte for the dump readers' tests, and the bytes of an
ELF dump read with pyelftools, independently of gdbext's readers."""

from __future__ import annotations

import struct
from pathlib import Path

from elftools.elf.elffile import ELFFile


def elf_note(name: bytes, ntype: int, desc: bytes) -> bytes:
    """Nhdr (3 x u32), name + NUL padded to 4, desc padded to 4."""
    name += b"\0"
    return (
        struct.pack("<III", len(name), len(desc), ntype)
        + name
        + bytes(-len(name) % 4)
        + desc
        + bytes(-len(desc) % 4)
    )


def elf_read(path: Path, paddr: int, size: int) -> bytes:
    """``size`` bytes at physical ``paddr`` of the ELF dump at ``path``, from the PT_LOAD
    segment that holds ``paddr`` (pyelftools, not gdbext's reader)."""
    with open(path, "rb") as f:
        for seg in ELFFile(f).iter_segments():
            if (
                seg["p_type"] == "PT_LOAD"
                and seg["p_paddr"] <= paddr < seg["p_paddr"] + seg["p_filesz"]
            ):
                f.seek(seg["p_offset"] + paddr - seg["p_paddr"])
                return f.read(size)
    raise AssertionError(f"0x{paddr:x} is in no PT_LOAD")


def elf_find(path: Path, pattern: bytes) -> list[int]:
    """Every physical address of ``pattern`` in the ELF dump's PT_LOAD segments, in order
    (pyelftools, not gdbext's reader)."""
    found = []
    with open(path, "rb") as f:
        for seg in ELFFile(f).iter_segments():
            if seg["p_type"] != "PT_LOAD":
                continue
            f.seek(seg["p_offset"])
            data = f.read(seg["p_filesz"])
            i = data.find(pattern)
            while i >= 0:
                found.append(seg["p_paddr"] + i)
                i = data.find(pattern, i + 1)
    return found


def elf_vmcoreinfo(path: Path) -> dict[str, str]:
    """The ``KEY=VALUE`` lines of an ELF dump's VMCOREINFO note, read with pyelftools (not
    gdbext's parser); empty without one."""
    with path.open("rb") as f:
        for seg in ELFFile(f).iter_segments():
            if seg.header.p_type != "PT_NOTE":
                continue
            for note in seg.iter_notes():  # type: ignore[attr-defined]
                if note["n_name"] == "VMCOREINFO":
                    desc = note["n_desc"]
                    text = desc if isinstance(desc, str) else bytes(desc).decode("latin-1")
                    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {}
