"""Physical memory for the BootInfo tests: segments of a dictionary, whose reads are recorded."""

from __future__ import annotations

from gdbext.errors import PhysMemoryError
from gdbext.heap import MemoryRegion

OFFSET = 0xFFFF_8000_0000_0000
BOOTINFO_PADDR = 0x1000
GARBAGE = 0xAA


class DictMapper:
    """Physical memory as segments ``{base: bytearray}``; an access must fit in one segment."""

    def __init__(self, segments: dict[int, int] | None = None) -> None:
        sizes = segments if segments is not None else {0: 0x100000}
        self.ram = {base: bytearray(size) for base, size in sizes.items()}
        self.reads: list[tuple[int, int]] = []

    def _find(self, paddr: int, size: int) -> tuple[bytearray, int]:
        for base, buf in self.ram.items():
            if base <= paddr and paddr + size <= base + len(buf):
                return buf, paddr - base
        raise PhysMemoryError(paddr, size)

    def read(self, paddr: int, size: int) -> bytes:
        self.reads.append((paddr, size))
        buf, off = self._find(paddr, size)
        return bytes(buf[off : off + size])

    def write(self, paddr: int, data: bytes) -> None:
        buf, off = self._find(paddr, len(data))
        buf[off : off + len(data)] = data


V09_EXPECTED = (
    MemoryRegion(0x0, 0x1000, "FrameZero"),
    MemoryRegion(0x1000, 0x9F000, "Usable"),
    MemoryRegion(0x100000, 0x400000, "Kernel"),
    MemoryRegion(0x400000, 0x7FE0000, "Usable"),
    MemoryRegion(0x7FE0000, 0x8000000, "NonExhaustive"),
)
