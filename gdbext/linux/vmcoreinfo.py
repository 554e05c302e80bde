"""VMCOREINFO: the kernel's own ``KEY=VALUE`` description of itself, and what paging needs of it.

Linux writes the text into a page of RAM at boot and exports it as an ELF note (``/proc/vmcore``,
QEMU's ``-device vmcoreinfo``, kdump's sub-header). Value formats (``vmcore_info.h``):

=====================================  ==========================================================
key                                    value
=====================================  ==========================================================
``SYMBOL(x)``                          ``%lx``: hex without ``0x``; runtime (KASLR-shifted) address
``NUMBER(x)``                          ``%ld``: signed decimal (``phys_base`` is negative under
                                       KASLR), wrapped here to 64 bits
``SIZE(x)``, ``OFFSET(x)``,            ``%lu``: decimal
``LENGTH(x)``, ``PAGESIZE``
``KERNELOFFSET``                       ``%lx``: hex
``CONFIG_X``                           ``y`` (a flag)
=====================================  ==========================================================

The kernel's top page table is ``SYMBOL(init_top_pgt) - __START_KERNEL_map + NUMBER(phys_base)``
(64-bit wrap), with ``__START_KERNEL_map = 0xffffffff80000000``.

>>> info = parse_vmcoreinfo(b"OSRELEASE=6.1.0\\nSYMBOL(init_top_pgt)=ffffffffa2a10000\\n"
...                         b"NUMBER(phys_base)=-503316480\\nNUMBER(pgtable_l5_enabled)=0\\n"
...                         b"KERNELOFFSET=21000000\\n")
>>> info.osrelease, hex(info.kernel_offset), info.levels
('6.1.0', '0x21000000', 4)
>>> hex(kernel_root(info))
'0x4a10000'
>>> hex(info.number("phys_base"))
'0xffffffffe2000000'

When a dump has no VMCOREINFO note, :func:`find_vmcoreinfo` scans physical memory for the text
the kernel keeps in RAM (see its cost there).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

from gdbext.addr import AddrRange
from gdbext.errors import PhysMemoryError
from gdbext.plugin.facts import VmcoreFacts
from gdbext.units import shown

U64_MASK = (1 << 64) - 1
#: ``__START_KERNEL_map``: the virtual address the kernel image's physical 0 is linked at.
START_KERNEL_MAP = 0xFFFF_FFFF_8000_0000
#: The kernel keeps at most one page of VMCOREINFO text (``VMCOREINFO_BYTES``).
VMCOREINFO_MAX = 4096
#: Physical addresses of page tables lie below 2^52 and are 4 KiB-aligned.
_ROOT_LIMIT = 1 << 52

#: Keys are printable and without spaces: ``BUILD-ID``, ``OFFSET(uts_namespace.name)``...
_KEY = re.compile(r"[!-~]+\Z")
_HEX = re.compile(r"[0-9a-fA-F]{1,16}\Z")
_DEC = re.compile(r"-?[0-9]{1,20}\Z")


#: The values gdbext computes with, and the range each must lie in to be used: a value outside
#: it (``NUMBER(MAX_PHYSMEM_BITS)=-1`` would make ``1 << (bits - section bits)`` huge) is
#: ignored, as if the key were absent, and named in :attr:`VmcoreInfo.problems`.
RANGES: Mapping[str, tuple[int, int]] = {
    # x86-64: 46 with 4-level paging, 52 with 5-level; MAXPHYADDR is never below 32.
    "NUMBER(MAX_PHYSMEM_BITS)": (32, 52),
    # 27 on x86-64 (128 MiB sections); at least a page, at most the physical address space.
    "NUMBER(SECTION_SIZE_BITS)": (12, 52),
    "NUMBER(pgtable_l5_enabled)": (0, 1),
    # 512 MiB or 1 GiB: the kernel image lies in the 2 GiB of __START_KERNEL_map.
    "NUMBER(KERNEL_IMAGE_SIZE)": (1, 1 << 31),
    "SIZE(mem_section)": (8, 4096),
    "OFFSET(mem_section.section_mem_map)": (0, 4095),
    # Root pointers or sections: at most one per section of a 52-bit space.
    "LENGTH(mem_section)": (1, 1 << 40),
    "PAGESIZE": (4096, 4096),
    # The KASLR slide stays inside the 2 GiB kernel mapping.
    "KERNELOFFSET": (0, (1 << 31) - 1),
}


class VmcoreInfo(NamedTuple):
    """Parsed VMCOREINFO text: every key with its raw value, and typed accessors.

    Accessors return ``None`` for a key that is absent or whose value does not parse; the
    malformed ones are listed in :attr:`problems` (a dump with a damaged VMCOREINFO line can
    still be walked from its CPUs' CR3). Values gdbext computes with are range-checked here,
    where they are parsed (:data:`RANGES`): an absurd one is a problem and is not an entry.
    """

    #: Key -> raw value text, in file order (the last occurrence of a repeated key wins).
    entries: Mapping[str, str]
    #: One message per line or value that did not parse.
    problems: tuple[str, ...] = ()

    def raw(self, key: str) -> str | None:
        return self.entries.get(key)

    def _hex(self, key: str) -> int | None:
        value = self.entries.get(key)
        if value is None:
            return None
        if not _HEX.match(value):
            return None
        return int(value, 16)

    def symbol(self, name: str) -> int | None:
        """``SYMBOL(name)``, a hex address."""
        return self._hex(f"SYMBOL({name})")

    def number(self, name: str) -> int | None:
        """``NUMBER(name)``, signed decimal wrapped to 64 bits."""
        value = self.entries.get(f"NUMBER({name})")
        if value is None or not _DEC.match(value):
            return None
        number = int(value)
        if not -(1 << 63) <= number <= U64_MASK:
            return None
        return number & U64_MASK

    def decimal(self, key: str) -> int | None:
        """An unsigned decimal value (``SIZE(x)``, ``OFFSET(x)``, ``LENGTH(x)``, ``PAGESIZE``)."""
        value = self.entries.get(key)
        if value is None or not _DEC.match(value) or value.startswith("-"):
            return None
        number = int(value)
        return number if number <= U64_MASK else None

    def config(self, name: str) -> bool:
        """True if ``CONFIG_name=y`` is present."""
        return self.entries.get(f"CONFIG_{name}") == "y"

    @property
    def osrelease(self) -> str | None:
        return self.entries.get("OSRELEASE")

    @property
    def kernel_offset(self) -> int | None:
        """``KERNELOFFSET``: the KASLR slide of the kernel image (hex)."""
        return self._hex("KERNELOFFSET")

    @property
    def levels(self) -> int | None:
        """5 if ``NUMBER(pgtable_l5_enabled)`` is 1, 4 if it is 0, else ``None``."""
        value = self.number("pgtable_l5_enabled")
        return {0: 4, 1: 5}.get(value) if value is not None else None


def _check_value(key: str, value: str) -> str | None:
    """A message if ``value`` does not have the format ``key`` implies, else ``None``."""
    if key.startswith("SYMBOL(") or key == "KERNELOFFSET":
        ok = bool(_HEX.match(value))
        kind = "hex"
    elif key.startswith(("NUMBER(", "SIZE(", "OFFSET(", "LENGTH(")) or key == "PAGESIZE":
        ok = bool(_DEC.match(value)) and -(1 << 63) <= int(value) <= U64_MASK
        kind = "decimal"
    else:
        return None
    if not ok:
        return f"{key}={shown(value[:40])} is not {kind}"
    bounds = RANGES.get(key)
    if bounds is not None:
        number = int(value, 16 if kind == "hex" else 10)
        lo, hi = bounds
        if not lo <= number <= hi:
            span = f"0x{lo:x}..0x{hi:x}" if kind == "hex" else f"{lo}..{hi}"
            return f"{key}={value} is out of range ({span}); ignored"
    return None


def parse_vmcoreinfo(text: bytes | str) -> VmcoreInfo:
    """Parse VMCOREINFO text (NUL-terminated or not; decoded as UTF-8 with replacement).

    Lines without ``=`` or whose key is empty or not printable ASCII are skipped and reported
    in :attr:`VmcoreInfo.problems`; so are values of :data:`RANGES`' keys that are malformed or
    out of their range, which are also left out of :attr:`VmcoreInfo.entries` (ignored); this
    never raises.

    >>> parse_vmcoreinfo(b"PAGESIZE=4096\\nbogus\\nSYMBOL(x)=zz\\0junk").problems
    ("line 2 has no '='", 'SYMBOL(x)=zz is not hex')
    """
    if isinstance(text, bytes | bytearray | memoryview):
        raw = bytes(text)
        nul = raw.find(b"\0")
        if nul >= 0:
            raw = raw[:nul]
        text = raw.decode("utf-8", errors="replace")
    else:
        nul = text.find("\0")
        if nul >= 0:
            text = text[:nul]
    entries: dict[str, str] = {}
    problems: list[str] = []
    for number, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            problems.append(f"line {number} has no '='")
            continue
        if not _KEY.match(key):
            problems.append(f"line {number} has a bad key {shown(key[:40])}")
            continue
        problem = _check_value(key, value)
        if problem is not None:
            problems.append(problem)
            if key in RANGES:
                # A value computed with must be right or absent: drop it (and an earlier one).
                entries.pop(key, None)
                continue
        entries[key] = value
    return VmcoreInfo(entries, tuple(problems))


def kernel_root(info: VmcoreInfo) -> int | None:
    """Physical address of the kernel's top page table, or ``None`` if VMCOREINFO lacks it.

    ``SYMBOL(init_top_pgt)`` (``SYMBOL(swapper_pg_dir)``, the same table, if absent)
    ``- 0xffffffff80000000 + NUMBER(phys_base)``, modulo 2^64. ``None`` also when
    ``NUMBER(phys_base)`` is missing or the result is not a 4 KiB-aligned address below 2^52.

    >>> kernel_root(parse_vmcoreinfo("SYMBOL(init_top_pgt)=ffffffff82a10000\\n"
    ...                              "NUMBER(phys_base)=0"))
    44105728
    >>> kernel_root(parse_vmcoreinfo("SYMBOL(init_top_pgt)=ffffffff82a10000")) is None
    True
    """
    symbol = info.symbol("init_top_pgt")
    if symbol is None:
        symbol = info.symbol("swapper_pg_dir")
    phys_base = info.number("phys_base")
    if symbol is None or phys_base is None:
        return None
    root = (symbol - START_KERNEL_MAP + phys_base) & U64_MASK
    if root >= _ROOT_LIMIT or root & 0xFFF:
        return None
    return root


def vmcore_facts(info: VmcoreInfo) -> VmcoreFacts:
    """The facts a VMCOREINFO gives a target: its entries, the kernel's root table, paging
    levels and KASLR offset (each ``None`` when the note does not say)."""
    return VmcoreFacts(
        entries=dict(info.entries),
        kernel_root=kernel_root(info),
        kernel_levels=info.levels,
        kernel_offset=info.kernel_offset,
    )


# --- Finding the text in RAM -----------------------------------------------------------------

#: The first line of the kernel's VMCOREINFO text (``OSRELEASE=%s``).
_MARKER = b"OSRELEASE="
#: Default cap on the physical bytes :func:`find_vmcoreinfo` scans (enough for a 4 GiB guest).
DEFAULT_SCAN_LIMIT = 4 << 30
#: Chunk size of a scan through ``read`` (a mapper without ``find``).
SCAN_CHUNK = 8 << 20
_PAGE = 4096

#: ``find(needle, start, end) -> paddr or -1``, searching physical memory in ``[start, end)``.
Finder = Callable[[bytes, int, int], int]


def _plausible(text: bytes) -> bool:
    """True if ``text`` looks like the kernel's VMCOREINFO, not the ``"OSRELEASE=%s"`` format
    string in the kernel image or some stale fragment."""
    if b"%" in text or b"\nPAGESIZE=" not in text:
        return False
    return all(32 <= c < 127 or c == 10 for c in text)


def find_vmcoreinfo(
    read: Callable[[int, int], bytes],
    ranges: Iterable[AddrRange],
    *,
    find: Finder | None = None,
    limit: int = DEFAULT_SCAN_LIMIT,
) -> tuple[int, bytes] | None:
    """Search physical memory for the VMCOREINFO text the kernel keeps in RAM.

    :param read: reads physical memory (a mapper's ``read``). A chunk that raises
        :class:`PhysMemoryError` (e.g. pages a kdump excluded) is retried page by page and the
        pages that still fail are skipped.
    :param ranges: the physical ranges to scan, in order.
    :param find: a fast search over physical memory (``SegmentMapper.find``: ``mmap.find`` on
        the file, no copies); without it the scan reads :data:`SCAN_CHUNK` bytes at a time.
    :param limit: at most this many bytes are scanned, from the lowest range up.
    :returns: ``(paddr, text)`` of the first plausible copy (text up to its NUL, at most one
        page, printable, containing ``PAGESIZE=`` and no ``%``), or ``None``.

    Cost: one pass over up to ``limit`` bytes. With ``find`` over a page-cached ELF core it is
    bound by memory bandwidth and page faults (measured 0.17 s per 512 MiB on the development
    machine); through ``read`` it also copies every chunk, and for a compressed dump
    decompresses every page (seconds per GiB). Callers run it only when the dump has no
    VMCOREINFO note.
    """
    budget = limit
    for r in ranges:
        if budget <= 0:
            break
        end = min(r.end, r.start + budget)
        budget -= end - r.start
        if find is not None:
            pos = r.start
            while pos < end:
                hit = find(_MARKER, pos, end)
                if hit < 0:
                    break
                text = _text_at(read, hit, r.end)
                if text is not None:
                    return hit, text
                pos = hit + 1
            continue
        found = _scan_by_reading(read, r.start, end, r.end)
        if found is not None:
            return found
    return None


def _blocks(read: Callable[[int, int], bytes], start: int, end: int) -> Iterable[tuple[int, bytes]]:
    """``(paddr, bytes)`` of the readable memory in ``[start, end)``, in order."""
    pos = start
    while pos < end:
        size = min(SCAN_CHUNK, end - pos)
        data = _try_read(read, pos, size)
        if data is not None:
            yield pos, data
        else:
            page = pos
            while page < pos + size:
                step = min(_PAGE - page % _PAGE, pos + size - page)
                data = _try_read(read, page, step)
                if data is not None:
                    yield page, data
                page += step
        pos += size


def _try_read(read: Callable[[int, int], bytes], paddr: int, size: int) -> bytes | None:
    try:
        return read(paddr, size)
    except PhysMemoryError:
        return None


def _scan_by_reading(
    read: Callable[[int, int], bytes], start: int, end: int, range_end: int
) -> tuple[int, bytes] | None:
    keep = len(_MARKER) - 1
    tail = b""
    tail_at = -1
    for addr, data in _blocks(read, start, end):
        if tail and tail_at + len(tail) == addr:
            buf, base = tail + data, tail_at
        else:
            buf, base = data, addr
        at = buf.find(_MARKER)
        while at >= 0:
            text = _text_at(read, base + at, range_end)
            if text is not None:
                return base + at, text
            at = buf.find(_MARKER, at + 1)
        tail, tail_at = buf[-keep:], base + len(buf) - min(keep, len(buf))
    return None


def _text_at(read: Callable[[int, int], bytes], paddr: int, end: int) -> bytes | None:
    """The NUL-terminated plausible VMCOREINFO text at ``paddr``, or ``None``."""
    try:
        data = read(paddr, min(VMCOREINFO_MAX, end - paddr))
    except PhysMemoryError:
        try:  # the next page may be missing: the rest of this page only
            data = read(paddr, min(_PAGE - paddr % _PAGE, end - paddr))
        except PhysMemoryError:
            return None
    nul = data.find(b"\0")
    if nul < 0:
        return None
    text = data[:nul]
    return text if _plausible(text) else None


# --- Finding the text through the kernel's pointers to it -------------------------------------

#: Bytes of the kernel image read per step of :func:`find_vmcoreinfo_by_pointer`.
POINTER_CHUNK = 1 << 20
#: Default cap on the bytes :func:`find_vmcoreinfo_by_pointer` reads (Linux's writable image
#: is about 30 MiB; another kernel mapped at -2 GiB may map far more there).
POINTER_SCAN_LIMIT = 64 << 20
#: Offset of the text in the ``vmcoreinfo_note`` page: ``Elf64_Nhdr`` (12 bytes), then the name
#: ``"VMCOREINFO\0"`` padded to 12.
NOTE_TEXT_OFFSET = 24
_U64 = struct.Struct("<Q")


class PointerHit(NamedTuple):
    """VMCOREINFO found through a pointer: where the pointer is, where the text is, the text.
    (A named tuple: a dump's open imports this module, and making a dataclass costs start-up
    time.)"""

    pointer: int
    paddr: int
    text: bytes


def find_vmcoreinfo_by_pointer(
    read: Callable[[int, int], bytes],
    ranges: Iterable[AddrRange],
    direct_map: int,
    ram_end: int,
    *,
    limit: int = POINTER_SCAN_LIMIT,
) -> PointerHit | None:
    """Find VMCOREINFO through the kernel's own variables that point to it.

    Linux keeps the text in a page it allocates at boot and points to it from its image's
    ``.bss``: ``vmcoreinfo_data`` (the text at the page's start), ``vmcoreinfo_size`` (its
    length) and ``vmcoreinfo_note`` (the ELF note, the text at +24), side by side. So the image
    is searched, not all of RAM: a candidate is an 8-byte-aligned page-aligned pointer into the
    direct map next to a value of 1..4095; it is taken when the page it points to holds a
    plausible VMCOREINFO text (see :func:`find_vmcoreinfo`) of exactly that length.

    :param read: reads physical memory; a read that raises :class:`PhysMemoryError` ends the
        search of its range (a candidate whose page cannot be read is skipped).
    :param ranges: the physical ranges to search (the kernel image's writable parts), each from
        its top down, in the order given.
    :param direct_map: the direct map's base (``page_offset_base``).
    :param ram_end: the end of RAM: pointers beyond it are not candidates.
    :param limit: at most this many bytes are read for the search (candidates' pages aside).
    :returns: the first hit, or ``None``.

    Cost: one pass over the ranges until the hit (on Debian's 6.1, 6 of the image's 19 MiB of
    ``.bss``, read from the top), one ``bytes.find`` per distinct top three bytes of the
    direct map's addresses, and a 4 KiB read per candidate.
    """
    tops = sorted({_U64.pack(direct_map + pa)[5:] for pa in (0, max(ram_end - 1, 0))})
    budget = limit
    for r in ranges:
        top = r.end & ~7
        while top > r.start and budget > 0:
            low = max(r.start, top - min(POINTER_CHUNK, budget)) & ~7
            budget -= top - low
            lo, hi = max(r.start, low - 8), min(r.end, top + 8)
            try:
                data = read(lo, hi - lo)
            except PhysMemoryError:
                break
            hit = _pointer_in(read, data, lo, low, top, tops, direct_map, ram_end)
            if hit is not None:
                return hit
            top = low
    return None


def _pointer_in(
    read: Callable[[int, int], bytes],
    data: bytes,
    base: int,
    low: int,
    top: int,
    tops: list[bytes],
    direct_map: int,
    ram_end: int,
    *,
    limit: int = POINTER_SCAN_LIMIT,
) -> PointerHit | None:
    """The first hit among the pointers that start in ``[low, top)`` (``data`` is read at
    ``base`` and holds 8 bytes either side where it can), highest first."""
    candidates: list[int] = []
    for needle in tops:
        pos = data.find(needle)
        while pos >= 0:
            at = pos - 5
            if at % 8 == (-base) % 8 and low <= base + at < top:
                candidates.append(at)
            pos = data.find(needle, pos + 1)
    for at in sorted(candidates, reverse=True):
        (value,) = _U64.unpack_from(data, at)
        pa = value - direct_map
        if value & (_PAGE - 1) or not 0 <= pa < ram_end:
            continue
        sizes = [
            _U64.unpack_from(data, near)[0]
            for near in (at - 8, at + 8)
            if near >= 0 and near + 8 <= len(data)
        ]
        sizes = [s for s in sizes if 0 < s < _PAGE]
        if not sizes:
            continue
        try:
            page = read(pa, _PAGE)
        except PhysMemoryError:
            continue
        for offset in (0, NOTE_TEXT_OFFSET):
            text = page[offset:].split(b"\0", 1)[0]
            if len(text) in sizes and text.startswith(_MARKER) and _plausible(text):
                return PointerHit(base + at, pa + offset, text)
    return None
