"""Simulated physical memory and a page-table frame allocator for it.

:class:`SparsePhysMemory` is a :class:`~gdbext.mapper.PhysMapper` over RAM that is stored
sparsely: only 4 KiB frames that were written hold storage, every other RAM byte reads as zero.
An access that is not entirely inside RAM raises :class:`~gdbext.errors.PhysMemoryError`.

:class:`TopDownFrameAllocator` is a :class:`~gdbext.mapper.FrameAllocator` that hands out zeroed
frames for page tables from the top of RAM downward.

>>> mem = SparsePhysMemory(1 << 20)
>>> mem.write(0x1FFC, b"\\x11" * 8)
>>> mem.read(0x1FF8, 16).hex()
'00000000111111111111111100000000'
>>> mem.read(0xFFFFC, 8)
Traceback (most recent call last):
...
gdbext.errors.PhysMemoryError: physical read of 8 bytes at 0xffffc: outside RAM
>>> alloc = TopDownFrameAllocator(mem)
>>> hex(alloc.allocate_frame()), hex(alloc.allocate_frame())
('0xff000', '0xfe000')
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator, Sequence
from typing import Protocol

from gdbext.addr import AddrRange
from gdbext.errors import PhysMemoryError

FRAME_SHIFT = 12
FRAME_SIZE = 1 << FRAME_SHIFT
_FRAME_MASK = FRAME_SIZE - 1
#: One frame of zeros, shared by every read of a frame that was never written (immutable).
ZERO_FRAME = bytes(FRAME_SIZE)


class SparsePhysMemory:
    """Physical RAM of ``ram_size`` bytes, stored as a dict of written 4 KiB frames.

    :param ram_size: size of the physical address space that holds RAM, a multiple of 4 KiB.
        Without ``ram``, RAM is the single range ``[0, ram_size)``.
    :param ram: the RAM ranges, when RAM has holes (e.g. the legacy VGA hole of a PC): each
        range 4 KiB-aligned, inside ``[0, ram_size)``, none overlapping. Kept as separate
        ranges even when adjacent (a dump writes one ``PT_LOAD`` per range).
    :raises ValueError: for a bad ``ram_size`` or bad ranges.

    Frames are allocated on the first write of a non-zero byte; writing a whole frame of
    zeros releases its storage again.
    """

    def __init__(self, ram_size: int, *, ram: Sequence[AddrRange] | None = None) -> None:
        if ram_size <= 0 or ram_size & _FRAME_MASK:
            raise ValueError(f"RAM size 0x{ram_size:x} is not a positive multiple of 4 KiB")
        ranges = (AddrRange(0, ram_size),) if ram is None else tuple(sorted(ram))
        if not ranges:
            raise ValueError("no RAM ranges")
        previous_end = 0
        for r in ranges:
            if not r or r.start & _FRAME_MASK or r.end & _FRAME_MASK:
                raise ValueError(f"RAM range {r!r} is empty or not 4 KiB-aligned")
            if r.end > ram_size:
                raise ValueError(f"RAM range {r!r} ends above the RAM size 0x{ram_size:x}")
            if r.start < previous_end:
                raise ValueError(f"RAM range {r!r} overlaps another range")
            previous_end = r.end
        self.read_only = False
        self._ram_size = ram_size
        self._ranges: tuple[AddrRange, ...] = ranges
        self._starts = [r.start for r in ranges]
        self._ends = [r.end for r in ranges]
        # The largest range, checked inline by read() before the general (bisect) check.
        largest = max(ranges, key=lambda r: r.size)
        self._lo = largest.start
        self._hi = largest.end
        self._frames: dict[int, bytearray] = {}
        #: The written frames' numbers in order, for :meth:`find` (``None``: sort again).
        self._sorted: list[int] | None = None

    @property
    def ram_size(self) -> int:
        return self._ram_size

    @property
    def ram_ranges(self) -> tuple[AddrRange, ...]:
        """The RAM ranges, in address order."""
        return self._ranges

    @property
    def stored_frames(self) -> int:
        """How many frames hold storage (were written with something other than zeros)."""
        return len(self._frames)

    def in_ram(self, paddr: int, size: int = 1) -> bool:
        """True if the ``size`` bytes at ``paddr`` all lie in RAM (adjacent ranges join)."""
        if size < 0:
            return False
        i = bisect_right(self._starts, paddr) - 1
        if i < 0:
            return False
        end = paddr + size
        ends, starts = self._ends, self._starts
        while end > ends[i]:
            if i + 1 == len(starts) or starts[i + 1] != ends[i]:
                return False
            i += 1
        return True

    def _check(self, paddr: int, size: int, access: str = "read") -> None:
        if size < 0:
            raise ValueError(f"negative access size {size}")
        if not self.in_ram(paddr, size):
            raise PhysMemoryError(paddr, size, access=access)

    def read(self, paddr: int, size: int) -> bytes:
        """``size`` bytes at ``paddr``; :class:`~gdbext.errors.PhysMemoryError` outside RAM.

        A 4 KiB-aligned read of one frame is a single dict look-up and a copy (or no copy at
        all for a frame never written).
        """
        if not (size >= 0 and self._lo <= paddr and paddr + size <= self._hi):
            self._check(paddr, size)
        offset = paddr & _FRAME_MASK
        if offset + size <= FRAME_SIZE:
            frame = self._frames.get(paddr >> FRAME_SHIFT)
            if frame is None:
                return ZERO_FRAME if size == FRAME_SIZE else bytes(size)
            if size == FRAME_SIZE:
                return bytes(frame)
            return bytes(frame[offset : offset + size])
        out = bytearray(size)
        done = 0
        while done < size:
            addr = paddr + done
            offset = addr & _FRAME_MASK
            chunk = min(size - done, FRAME_SIZE - offset)
            frame = self._frames.get(addr >> FRAME_SHIFT)
            if frame is not None:
                out[done : done + chunk] = frame[offset : offset + chunk]
            done += chunk
        return bytes(out)

    def write(self, paddr: int, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` at ``paddr``; :class:`~gdbext.errors.PhysMemoryError` outside RAM."""
        data = bytes(data)
        size = len(data)
        self._check(paddr, size, "write")
        frames = self._frames
        done = 0
        while done < size:
            addr = paddr + done
            offset = addr & _FRAME_MASK
            chunk = min(size - done, FRAME_SIZE - offset)
            piece = data if chunk == size else data[done : done + chunk]
            pfn = addr >> FRAME_SHIFT
            frame = frames.get(pfn)
            if chunk == FRAME_SIZE:
                if piece == ZERO_FRAME:
                    if frames.pop(pfn, None) is not None:
                        self._sorted = None
                else:
                    if frame is None:
                        self._sorted = None
                    frames[pfn] = bytearray(piece)
            elif frame is not None:
                frame[offset : offset + chunk] = piece
            elif piece.count(0) != chunk:
                frame = bytearray(FRAME_SIZE)
                frame[offset : offset + chunk] = piece
                frames[pfn] = frame
                self._sorted = None
            done += chunk

    def find(self, needle: bytes, start: int, end: int) -> int:
        """The lowest physical address in ``[start, end)`` where ``needle`` is, or -1.

        Only the written frames are searched (each run of adjacent ones as one buffer), so a
        search of a petabyte of RAM costs what its written frames cost. A match that touches a
        frame never written is not found: a needle without a zero byte cannot touch one (the
        scans for ``HdrS`` and ``OSRELEASE=`` search such needles), as in a dump's ``find``.
        """
        if not needle:
            return -1
        if self._sorted is None:
            self._sorted = sorted(self._frames)
        pfns = self._sorted
        frames = self._frames
        i = max(bisect_right(pfns, start >> FRAME_SHIFT) - 1, 0)
        while i < len(pfns):
            j = i + 1
            while j < len(pfns) and pfns[j] == pfns[j - 1] + 1:
                j += 1
            lo, hi = pfns[i] << FRAME_SHIFT, pfns[j - 1] + 1 << FRAME_SHIFT
            if lo >= end:
                break
            lo, hi = max(lo, start), min(hi, end)
            if hi - lo >= len(needle):
                run = b"".join(frames[pfn] for pfn in pfns[i:j])
                base = pfns[i] << FRAME_SHIFT
                at = run.find(needle, lo - base, hi - base)
                if at >= 0:
                    return base + at
            i = j
        return -1

    def iter_frames(self) -> Iterator[tuple[int, bytes]]:
        """``(paddr, contents)`` of every written frame that is not all zeros, in address order."""
        for pfn in sorted(self._frames):
            frame = self._frames.get(pfn)
            if frame is not None and frame != ZERO_FRAME:
                yield pfn << FRAME_SHIFT, bytes(frame)

    def __repr__(self) -> str:
        ranges = ", ".join(f"0x{r.start:x}-0x{r.end:x}" for r in self._ranges)
        return f"SparsePhysMemory(ram=[{ranges}], frames={len(self._frames)})"


class RamMemory(Protocol):
    """What :class:`TopDownFrameAllocator` needs of a memory: its RAM ranges and ``write``."""

    @property
    def ram_ranges(self) -> tuple[AddrRange, ...]: ...

    def write(self, paddr: int, data: bytes | bytearray | memoryview) -> None: ...


class TopDownFrameAllocator:
    """Hands out zeroed 4 KiB frames for page tables, from the top of RAM downward.

    :param memory: the memory whose RAM the frames come from (frames are zeroed through its
        ``write``).
    :param low: no frame below this physical address is handed out (e.g. the end of the
        region a scenario keeps for data pages).

    Deallocated frames are handed out again first, the last deallocated first.
    :meth:`allocate_frame` returns ``None`` once every frame is in use.
    """

    def __init__(self, memory: RamMemory, *, low: int = 0) -> None:
        if low < 0:
            raise ValueError(f"negative low bound {low}")
        self._memory = memory
        self.low = low
        floor = (low + _FRAME_MASK) & ~_FRAME_MASK
        # [start, cursor) spans still untouched, highest first; cursor moves down.
        self._spans: list[list[int]] = []
        for r in sorted(memory.ram_ranges, reverse=True):
            start = max((r.start + _FRAME_MASK) & ~_FRAME_MASK, floor)
            end = r.end & ~_FRAME_MASK
            if start < end:
                self._spans.append([start, end])
        self._free: list[int] = []
        self._allocated: set[int] = set()

    @property
    def allocated(self) -> frozenset[int]:
        """Physical addresses of the frames handed out and not given back."""
        return frozenset(self._allocated)

    def allocate_frame(self) -> int | None:
        """A zeroed free frame, or ``None`` when RAM above ``low`` is used up."""
        if self._free:
            frame = self._free.pop()
        else:
            while self._spans and self._spans[0][0] >= self._spans[0][1]:
                self._spans.pop(0)
            if not self._spans:
                return None
            span = self._spans[0]
            span[1] -= FRAME_SIZE
            frame = span[1]
        self._memory.write(frame, ZERO_FRAME)
        self._allocated.add(frame)
        return frame

    def deallocate_frame(self, paddr: int) -> None:
        """Take back a frame; :class:`ValueError` if it is not currently handed out."""
        if paddr not in self._allocated:
            raise ValueError(
                f"frame 0x{paddr:x} was not handed out by this allocator, or was already freed"
            )
        self._allocated.remove(paddr)
        self._free.append(paddr)
