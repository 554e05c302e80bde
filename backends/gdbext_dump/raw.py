"""Raw physical memory images: the file's byte ``i`` is physical address ``base + i``.

This is what ``dd`` of ``/dev/mem``, LiME's ``raw``/``padded`` modes, or a hypervisor's memory
file give. Nothing in the file says where it starts, so ``--base`` (default 0) does; holes
that the writer omitted cannot be known and shift everything after them.
"""

from __future__ import annotations

from gdbext.errors import InputError
from gdbext_dump.segments import Segment, SegmentMapper, open_mmap


def open_raw(path: str, base: int = 0) -> SegmentMapper:
    """The file at ``path`` as physical memory from ``base`` on (read-only, mmapped)."""
    if base < 0:
        raise InputError(f"--base 0x{base:x} is negative", path)
    data = open_mmap(path)
    try:
        if base + len(data) > 1 << 64:
            raise InputError(
                f"--base 0x{base:x} + 0x{len(data):x} bytes runs past the 64-bit address space",
                path,
                0,
            )
        return SegmentMapper(path, data, [Segment(base, len(data), 0, len(data), 0)])
    except BaseException:
        data.close()
        raise
