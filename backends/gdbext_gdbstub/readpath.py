"""The ways the live backend reads physical memory through a debugger.

- :class:`PhyMemReader`: plain memory reads while QEMU's gdbstub is in PhyMemMode (mode 1);
- :class:`XpReader`: QEMU's monitor command ``xp /Ngx PADDR``, parsed (when PhyMemMode is
  refused);
- :class:`DirectMapReader`: virtual reads at ``base + paddr`` through the kernel's direct map,
  for stubs that offer neither (KGDB, VMware). With QEMU the stub is held in mode 0 for them.

Each reader has a :attr:`~Reader.name` (the target's ``read_path``) and the PhyMemMode its
reads need (:attr:`~Reader.mode`, ``None`` for any).
"""

from __future__ import annotations

import re
import struct
from typing import Protocol

from gdbext.units import shown
from gdbext_gdbstub.link import DebuggerLink, LiveTargetError, TargetLostError, TargetMemoryError

#: Quadwords per ``monitor xp`` command (64 KiB; its output is about 3.5 times that).
XP_CHUNK_QWORDS = 8192
_XP_LINE = re.compile(r"^\s*([0-9a-fA-F]+):(.*)$")
_XP_VALUE = re.compile(r"0x([0-9a-fA-F]+)")
_XP_REFUSED = "cannot access memory"


class Reader(Protocol):
    """One way of reading physical memory."""

    @property
    def name(self) -> str:
        """How reads go, for ``info`` (``"PhyMemMode"``, ``"monitor xp"``...)."""
        ...

    @property
    def mode(self) -> int | None:
        """The PhyMemMode the reads need; ``None`` for any."""
        ...

    def read(self, paddr: int, size: int) -> bytes:
        """``size`` bytes at physical ``paddr``. :raises TargetMemoryError: refused."""
        ...


class PhyMemReader:
    """Memory reads in PhyMemMode: the stub takes addresses as physical."""

    name = "PhyMemMode"
    mode: int | None = 1

    def __init__(self, link: DebuggerLink) -> None:
        self._link = link

    def read(self, paddr: int, size: int) -> bytes:
        return self._link.read_memory(paddr, size)


class DirectMapReader:
    """Virtual reads through the kernel's direct map at ``base``."""

    def __init__(self, link: DebuggerLink, base: int, mode: int | None) -> None:
        self._link = link
        self.base = base
        self.mode = mode
        self.name = f"direct map at 0x{base:x}"

    def read(self, paddr: int, size: int) -> bytes:
        vaddr = self.base + paddr
        if vaddr + size > 1 << 64:
            raise TargetMemoryError(
                paddr, size, f"0x{paddr:x} is beyond the direct map at 0x{self.base:x}"
            )
        return self._link.read_memory(vaddr, size)


class XpReader:
    """QEMU's ``monitor xp /Ngx``: 8-byte words, at most :data:`XP_CHUNK_QWORDS` a command."""

    name = "monitor xp"
    mode: int | None = None

    def __init__(self, link: DebuggerLink) -> None:
        self._link = link

    def read(self, paddr: int, size: int) -> bytes:
        start = paddr & ~7
        end = (paddr + size + 7) & ~7
        parts = []
        addr = start
        while addr < end:
            count = min(XP_CHUNK_QWORDS, (end - addr) // 8)
            text = self._link.monitor(f"xp /{count}gx 0x{addr:x}")
            parts.append(parse_xp(text, addr, count))
            addr += count * 8
        data = b"".join(parts)
        return data[paddr - start : paddr - start + size]


def parse_xp(text: str, addr: int, count: int) -> bytes:
    """The ``count`` quadwords at ``addr`` from ``xp /{count}gx`` output, little-endian bytes.

    >>> parse_xp("0000000000001000: 0x0000000000000001 0x00000000deadbeef\\r\\n", 0x1000, 2).hex()
    '0100000000000000efbeadde00000000'

    :raises TargetMemoryError: QEMU could not read (``Cannot access memory``).
    :raises LiveTargetError: output that is not what ``xp`` prints.
    """
    values: list[int] = []
    expect = addr
    for line in text.splitlines():
        if not line.strip():
            continue
        m = _XP_LINE.match(line)
        if m is None:
            raise LiveTargetError(f"unexpected monitor xp output: {shown(line.strip()[:80])}")
        at = int(m[1], 16)
        if _XP_REFUSED in m[2].lower():
            raise TargetMemoryError(at, 8, f"monitor xp: cannot access memory at 0x{at:x}")
        if at != expect:
            raise LiveTargetError(f"monitor xp output at 0x{at:x}, expected 0x{expect:x}")
        words = [int(v, 16) for v in _XP_VALUE.findall(m[2])]
        values += words
        expect += 8 * len(words)
    if len(values) != count:
        first = text.strip().splitlines()[0][:80] if text.strip() else "nothing"
        raise LiveTargetError(
            f"monitor xp gave {len(values)} of {count} words at 0x{addr:x} ({shown(first)})"
        )
    return struct.pack(f"<{count}Q", *values)


def xp_available(link: DebuggerLink) -> bool:
    """True if the stub runs ``monitor xp`` (QEMU's monitor) and its output parses."""
    try:
        text = link.monitor("xp /1gx 0")
        parse_xp(text, 0, 1)
    except TargetMemoryError:
        return True  # the command exists; address 0 just is not readable
    except TargetLostError:
        raise
    except LiveTargetError:
        return False
    return True
