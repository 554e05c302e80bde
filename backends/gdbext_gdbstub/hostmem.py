"""The host read path: a QEMU guest's RAM read from the QEMU process's own memory.

When QEMU runs on this host its guest RAM is ordinary memory of the QEMU process. Reading it
through ``/proc/PID/mem`` costs a ``pread`` instead of a gdbstub round trip per 2 KiB:

- :func:`~gdbext_gdbstub.hostpid.stub_pid` finds the QEMU process (the owner of the gdbstub's
  listening socket), without a word to QEMU;
- :func:`map_ram` asks QEMU's monitor ``gpa2hva`` where each RAM line of ``info mtree -f``
  starts in QEMU's memory, and where it ends (both ends must agree, and name the same RAM
  block, before the line is taken as one run of host memory); nothing is assumed across lines;
- :class:`HostMemReader` reads with ``os.preadv`` on ``/proc/PID/mem``, opened read-only (it
  is never written), splitting reads at the lines' ends;
- :func:`verified` reads one page-table page (the root table of CR3) both ways before the path
  is used: the bytes must be equal.

Any failure is a :class:`~gdbext_gdbstub.hostpid.HostPathUnavailable` whose reason ``info``
shows, and the backend reads through the stub as before. The reads need no PhyMemMode (the
reader's :attr:`~HostMemReader.mode` is ``None``) and do not stop or touch the VM: QEMU's
process is only read.
"""

from __future__ import annotations

import bisect
import errno
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gdbext.geometry import PAGE_SIZE as PAGE
from gdbext.units import shown
from gdbext_gdbstub.hostpid import HostPathUnavailable
from gdbext_gdbstub.link import DebuggerLink, LiveTargetError, TargetLostError, TargetMemoryError
from gdbext_gdbstub.ram import RamPiece

_GPA2HVA = re.compile(r"Host virtual address for 0x([0-9a-fA-F]+) \(([^)]*)\) is 0x([0-9a-fA-F]+)")
#: The kernel's flag of a process that is exiting (``/proc/PID/stat``'s ninth field).
PF_EXITING = 0x4
#: ``errno`` values of a ``/proc/PID/mem`` the caller may not read.
_DENIED = (errno.EPERM, errno.EACCES)


@dataclass(frozen=True)
class HostRange:
    """Guest-physical ``[start, end)``, found at host virtual address ``hva`` in QEMU."""

    start: int
    end: int
    hva: int


def parse_gpa2hva(text: str, gpa: int) -> tuple[str, int]:
    """``(block, hva)`` from ``gpa2hva`` output for ``gpa``.

    >>> text = "Host virtual address for 0x1000 (pc.ram) is 0x7f0000001000\\r\\n"
    >>> b, hva = parse_gpa2hva(text, 0x1000)
    >>> b, hex(hva)
    ('pc.ram', '0x7f0000001000')

    :raises HostPathUnavailable: QEMU refused (``... is not RAM``, an unknown command).
    """
    m = _GPA2HVA.search(text)
    if m is None or int(m[1], 16) != gpa:
        first = text.strip().splitlines()[0] if text.strip() else "no output"
        raise HostPathUnavailable(
            f"QEMU's monitor did not map 0x{gpa:x} (gpa2hva: {shown(first[:80])})"
        )
    return m[2], int(m[3], 16)


def _gpa2hva(link: DebuggerLink, gpa: int) -> tuple[str, int]:
    try:
        text = link.monitor(f"gpa2hva 0x{gpa:x}")
    except TargetLostError:
        raise
    except LiveTargetError as exc:
        raise HostPathUnavailable(f"the monitor refused gpa2hva ({exc})") from None
    return parse_gpa2hva(text, gpa)


def map_ram(link: DebuggerLink, pieces: Sequence[RamPiece]) -> list[HostRange]:
    """Each RAM line's host address (two ``gpa2hva`` a line: its first and last byte), lines
    that follow each other in guest and host memory joined.

    :raises HostPathUnavailable: QEMU refused, or a line's ends are not one run of one block.
    """
    ranges: list[HostRange] = []
    for piece in pieces:
        block, hva = _gpa2hva(link, piece.start)
        last = piece.end - 1
        last_block, last_hva = (block, hva) if last == piece.start else _gpa2hva(link, last)
        if last_block != block or last_hva != hva + (last - piece.start):
            raise HostPathUnavailable(
                f"RAM at 0x{piece.start:x}-0x{piece.end:x} is not one run of QEMU's memory "
                f"({block} at 0x{hva:x}, {last_block} at 0x{last_hva:x} for its last byte)"
            )
        prev = ranges[-1] if ranges else None
        if (
            prev is not None
            and prev.end == piece.start
            and prev.hva + (prev.end - prev.start) == hva
        ):
            ranges[-1] = HostRange(prev.start, piece.end, prev.hva)
        else:
            ranges.append(HostRange(piece.start, piece.end, hva))
    if not ranges:
        raise HostPathUnavailable("no RAM line in monitor info mtree -f to map")
    return ranges


class HostMemReader:
    """Guest-physical reads from ``/proc/PID/mem`` of the QEMU process (read-only).

    :param pid: QEMU's process.
    :param ranges: where the guest's RAM is in it (:func:`map_ram`).
    :raises HostPathUnavailable: the file cannot be opened (permission: another user's QEMU,
        not root, Yama's ``ptrace_scope``; the process is gone).
    """

    mode: int | None = None

    def __init__(self, pid: int, ranges: Sequence[HostRange], path: str | None = None) -> None:
        self.pid = pid
        self.path = path or f"/proc/{pid}/mem"
        self.ranges = sorted(ranges, key=lambda r: r.start)
        self._starts = [r.start for r in self.ranges]
        self.name = f"host memory ({self.path})"
        try:
            # Unbuffered and read-only: nothing is ever written to QEMU's memory.
            self._file = open(self.path, "rb", buffering=0)  # noqa: SIM115 - kept open
        except OSError as exc:
            raise HostPathUnavailable(f"cannot open {self.path}: {_why(exc)}") from None

    def close(self) -> None:
        self._file.close()

    def read(self, paddr: int, size: int) -> bytes:
        i = bisect.bisect_right(self._starts, paddr) - 1
        if i >= 0 and paddr + size <= self.ranges[i].end:
            # One run of QEMU's memory: one pread, straight into the bytes returned (a bulk
            # read costs one copy, at the machine's memory bandwidth).
            r = self.ranges[i]
            try:
                data = os.pread(self._file.fileno(), size, r.hva + (paddr - r.start))
            except OSError:
                data = b""  # said precisely below
            if len(data) == size:
                return data
        buf = bytearray(size)
        view = memoryview(buf)
        done = 0
        while done < size:
            at = paddr + done
            i = bisect.bisect_right(self._starts, at) - 1
            if i < 0 or at >= self.ranges[i].end:
                raise TargetMemoryError(at, size - done, f"0x{at:x} is not in QEMU's RAM map")
            r = self.ranges[i]
            count = min(size - done, r.end - at)
            self._pread(view[done : done + count], r.hva + (at - r.start), at)
            done += count
        return bytes(buf)

    def _pread(self, view: memoryview, hva: int, paddr: int) -> None:
        fd = self._file.fileno()
        got = 0
        while got < len(view):
            try:
                n = os.preadv(fd, [view[got:]], hva + got)
            except OSError as exc:
                self.check_alive()
                raise TargetMemoryError(
                    paddr + got, len(view) - got, f"{self.path}: {_why(exc)}"
                ) from None
            if n <= 0:
                self.check_alive()
                raise TargetMemoryError(
                    paddr + got, len(view) - got, f"{self.path} ended at 0x{hva + got:x}"
                )
            got += n

    def check_alive(self) -> None:
        """:raises TargetLostError: QEMU's process is gone, a zombie, or exiting (its memory
        is being torn down: the kernel's ``PF_EXITING`` in ``/proc/PID/stat``)."""
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as stat:
                fields = stat.read().rpartition(b")")[2].split()
            gone = fields[0] in (b"Z", b"X") or bool(int(fields[6]) & PF_EXITING)
        except (OSError, IndexError, ValueError):
            gone = True
        if gone:
            raise TargetLostError(
                f"lost the connection to the target (QEMU's process {self.pid} is gone)"
            )


def _why(exc: OSError) -> str:
    if exc.errno in _DENIED:
        return (
            f"{exc.strerror} (reading another process's memory needs ptrace rights: the same "
            "user and Yama's ptrace_scope 0, or root)"
        )
    return exc.strerror or str(exc)


def verified(host: HostMemReader, stub_read: Callable[[int, int], bytes], page: int) -> None:
    """Check the host path on the table page at ``page``: read both ways, equal.

    :raises HostPathUnavailable: unequal, or one of the reads failed.
    """
    page &= ~(PAGE - 1)
    try:
        mine = host.read(page, PAGE)
    except LiveTargetError as exc:
        raise HostPathUnavailable(f"reading the table at 0x{page:x} failed ({exc})") from None
    theirs = stub_read(page, PAGE)
    if mine != theirs:
        raise HostPathUnavailable(
            f"the table at 0x{page:x} read from {host.path} differs from the gdbstub's (is "
            f"process {host.pid} the QEMU behind this gdbstub?)"
        )
