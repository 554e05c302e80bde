"""Pieces of crash dumps built byte by byte for the dump readers' tests."""

from __future__ import annotations

import struct


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
