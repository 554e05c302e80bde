"""Every address space of a Linux kernel, found in RAM without symbols.

Linux gives each process its own top-level table (``mm->pgd``) and copies the kernel's half
into it (``pgd_alloc``: entries 256..511, 4- and 5-level paging alike); the kernel half never
changes afterwards (the direct map, vmalloc and vmemmap are preallocated at that level). So
every live top-level table is a 4 KiB-aligned page of RAM whose second 2 KiB are byte for
byte (but for the LDT's entry, below) the kernel's own top table's (``init_top_pgt``).
:func:`scan_roots` reads RAM once, in large chunks, finds those pages (a cheap search for one
byte of the half's last entry at its page offset first, then the whole half compared), and
keeps the ones whose user half is a plausible table: every present entry links a table
inside RAM and sets no reserved bit (decoded by :mod:`gdbext.x86.entries`), so that a data
page that resembles a table is not taken for one.

Under PTI (``pti=on``) an address space has two tables, an 8 KiB-aligned pair: the kernel's
(the one found here) and at +4 KiB the one user mode runs on, whose kernel half holds only the
entry code's clones. Whether a candidate has such a twin is the caller's question
(:func:`gdbext.audit.pti.detect_pti` answers it from both tables).

:func:`exec_identity` reads a process's identity from the top pages of its user stack, where
``execve`` leaves the strings (see its docstring). :func:`space_usage` counts a table's user
mappings with the engine's walk.

The one entry of the kernel half Linux changes in a process's table, ``LDT_BASE_ADDR``'s (filled
under PTI for a process that uses ``modify_ldt``), is left out of the comparison. Not found: a
table whose page the dump did not capture.
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from gdbext.addr import AddrRange
from gdbext.defaults import DEFAULT_MAX_ROOTS
from gdbext.errors import GdbextError, InputError
from gdbext.geometry import PAGE_SIZE
from gdbext.linux.layout import params
from gdbext.mapper import readable_chunks
from gdbext.x86.entries import EntryRules, decode
from gdbext.x86.paging import X86PageTable
from gdbext.x86.records import AliasRun, LeafRun

__all__ = [
    "ExecIdentity",
    "Rejected",
    "RootScan",
    "Usage",
    "exec_identity",
    "kernel_half",
    "kernel_half_differences",
    "scan_roots",
    "space_usage",
    "user_half_problem",
]

#: Bytes of RAM read at once by the scan.
CHUNK = 4 << 20
#: Offset and size of a top table's kernel half (entries 256..511).
HALF = PAGE_SIZE // 2
#: Most rejected look-alikes the scan remembers (it counts them all).
MAX_REJECTED = 64
_ENTRIES = struct.Struct(f"<{PAGE_SIZE // 16}Q")
_HALF_ENTRIES = _ENTRIES
_PAGE_ENTRIES = struct.Struct(f"<{PAGE_SIZE // 8}Q")


@dataclass(frozen=True)
class Rejected:
    """A page whose kernel half is the kernel's but whose user half is no table, and why."""

    table: int
    reason: str


@dataclass(frozen=True)
class RootScan:
    """What :func:`scan_roots` found: the accepted tables (kernel halves, address order), the
    rejected look-alikes (at most :data:`MAX_REJECTED`, of :attr:`rejected_count`), the
    tables with an empty user half (a process that exited, whose tables were freed), and
    how much RAM was read."""

    roots: tuple[int, ...]
    rejected: tuple[Rejected, ...]
    rejected_count: int
    empty: tuple[int, ...]
    bytes_scanned: int
    #: True when :data:`~gdbext.defaults.DEFAULT_MAX_ROOTS` (or the caller's bound) stopped
    #: the scan.
    truncated: bool = False
    #: With ``near``: the tables whose kernel half differs from the kernel's in a few entries
    #: only (the signature of a hook), with those entries' indexes (256..511).
    near: tuple[tuple[int, tuple[int, ...]], ...] = ()


def kernel_half(kpt: X86PageTable) -> bytes:
    """The 2 KiB kernel half of the kernel's top table ``kpt``.

    :raises InputError: it maps nothing (no table of Linux's has an empty kernel half).
    """
    half = kpt.mapper.read(kpt.root + HALF, HALF)
    if not any(decode(e, kpt.levels, kpt.rules).present for e in _ENTRIES.unpack(half)):
        raise InputError(
            f"the kernel's top table 0x{kpt.root:x} maps nothing in its kernel half; "
            "give the kernel's root with --cr3 ADDR"
        )
    return half


def kernel_half_differences(kpt: X86PageTable, table: int) -> list[int]:
    """The kernel-half entries (indexes 256..511) of the top table at ``table`` that differ
    from those of the kernel's own top table ``kpt``, the LDT's entry apart (Linux fills it
    in a process's table: :func:`_ldt_slot`); empty for an address space's table."""
    mine = _ENTRIES.unpack(kpt.mapper.read(kpt.root + HALF, HALF))
    theirs = _ENTRIES.unpack(kpt.mapper.read(table + HALF, HALF))
    skip = _ldt_slot(kpt.levels) // 8
    return [256 + i for i in range(256) if mine[i] != theirs[i] and 256 + i != skip]


def _ram_index(ram: Sequence[AddrRange]) -> tuple[list[int], list[int]]:
    merged: list[list[int]] = []
    for r in sorted(ram, key=lambda r: r.start):
        if merged and r.start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], r.end)
        elif r:
            merged.append([r.start, r.end])
    return [m[0] for m in merged], [m[1] for m in merged]


def user_half_problem(
    entries: Sequence[int],
    levels: int,
    rules: EntryRules,
    ram: Sequence[AddrRange],
    indexes: Sequence[int] = range(256),
) -> str | None:
    """Why the top-level ``entries`` 0..255 are not a user half (``None``: they may be): a
    present entry with reserved bits set, or linking a table outside ``ram``. ``indexes``:
    the entries checked (by default the user half; a hooked table's differing kernel entries
    are checked the same way)."""
    starts, ends = _ram_index(ram)
    for i in indexes:
        e = decode(entries[i], levels, rules)
        if not e.present:
            continue
        what = "user entry" if i < 256 else "kernel entry"
        if e.reserved:
            return f"{what} {i} (0x{e.value:x}) sets reserved bits 0x{e.reserved:x}"
        k = bisect_right(starts, e.address) - 1
        if k < 0 or e.address + PAGE_SIZE > ends[k]:
            return f"{what} {i} (0x{e.value:x}) links 0x{e.address:x}, outside RAM"
    return None


def _needle(half: bytes, skip: int) -> tuple[int, bytes, int]:
    """The last non-zero entry of ``half`` (not the one at page offset ``skip``): its offset
    in a page, its 8 bytes, and which of them the scan looks for first (an address byte that
    is neither 0x00 nor 0xff, which fill most memory)."""
    for off in range(HALF - 8, -8, -8):
        word = half[off : off + 8]
        if word != bytes(8) and off != skip - HALF:
            pick = next((k for k in (1, 2, 3, 4, 0, 5, 6, 7) if word[k] not in (0, 0xFF)), None)
            if pick is None:
                pick = next(k for k in range(8) if word[k])
            return HALF + off, word, pick
    raise InputError("the kernel's top table has an empty kernel half")


def _candidates(
    data: bytes, half: bytes, at: int, needle: bytes, pick: int, skip: int
) -> Iterator[int]:
    """Page offsets in ``data`` (page-aligned, whole pages) whose kernel half is ``half``
    but for the 8 bytes at page offset ``skip``.

    The byte ``needle[pick]`` is looked for at page offset ``at + pick`` of every page at once
    (one strided slice, searched in C); only the pages that have it are compared further.
    """
    column = data[at + pick :: PAGE_SIZE]
    byte = needle[pick : pick + 1]
    find = column.find
    i = find(byte)
    low, high = half[: skip - HALF], half[skip + 8 - HALF :]
    while i >= 0:
        page = i * PAGE_SIZE
        if (
            data[page + at : page + at + 8] == needle
            and data[page + HALF : page + skip] == low
            and data[page + skip + 8 : page + PAGE_SIZE] == high
        ):
            yield page
        i = find(byte, i + 1)


#: Kernel-half entries looked for first by the search for tables whose half differs in a
#: few entries (one of them must be left as the kernel's).
_NEAR_NEEDLES = 4


def _near_needles(half: bytes, skip: int) -> list[tuple[int, bytes, int]]:
    """Up to :data:`_NEAR_NEEDLES` non-zero entries of ``half`` (not the LDT's), as
    :func:`_needle` gives one: page offset, bytes, the byte searched first."""
    out = []
    for off in range(HALF - 8, -8, -8):
        word = half[off : off + 8]
        if word == bytes(8) or off == skip - HALF:
            continue
        pick = next((k for k in (1, 2, 3, 4, 0, 5, 6, 7) if word[k] not in (0, 0xFF)), None)
        if pick is None:
            pick = next(k for k in range(8) if word[k])
        out.append((HALF + off, word, pick))
        if len(out) == _NEAR_NEEDLES:
            break
    return out


def _near(
    data: bytes,
    mine: Sequence[int],
    needles: Sequence[tuple[int, bytes, int]],
    skip: int,
    near: int,
) -> Iterator[tuple[int, tuple[int, ...]]]:
    """Page offsets in ``data`` whose kernel half has one of ``needles`` and differs from
    ``mine`` (the kernel's half as entries) in 1 to ``near`` entries, fewer than it has of the
    kernel's non-zero entries equal (a page of zeros with one copied pointer is no table)."""
    seen: set[int] = set()
    for at, needle, pick in needles:
        column = data[at + pick :: PAGE_SIZE]
        byte = needle[pick : pick + 1]
        i = column.find(byte)
        while i >= 0:
            page = i * PAGE_SIZE
            i = column.find(byte, i + 1)
            if page in seen or data[page + at : page + at + 8] != needle:
                continue
            seen.add(page)
            theirs = _HALF_ENTRIES.unpack_from(data, page + HALF)
            differ = tuple(
                256 + k for k in range(256) if theirs[k] != mine[k] and 256 + k != skip // 8
            )
            same = sum(1 for k in range(256) if mine[k] and theirs[k] == mine[k])
            if 0 < len(differ) <= near and len(differ) < same:
                yield page, differ


def _ldt_slot(levels: int) -> int:
    """The page offset of the top-level entry of ``LDT_BASE_ADDR``: under PTI,
    ``map_ldt_struct`` fills it in the table of a process that uses ``modify_ldt`` (the only
    change Linux makes to a process's kernel half); without PTI it is empty everywhere."""
    return (params(levels).ldt_base >> (12 + 9 * (levels - 1)) & 0x1FF) * 8


def scan_roots(
    kpt: X86PageTable,
    ram: Sequence[AddrRange],
    *,
    max_roots: int = DEFAULT_MAX_ROOTS,
    progress: Callable[[int], None] | None = None,
    near: int = 0,
) -> RootScan:
    """The top tables in ``ram`` whose kernel half is that of ``kpt`` (the kernel's own top
    table, in its paging mode) and whose user half passes :func:`user_half_problem`.

    ``progress`` is given the bytes read so far after each chunk. With ``near``, also the
    tables whose kernel half differs in 1 to ``near`` entries (:attr:`RootScan.near`), whose
    user half passes too, and whose differing entries, where present, link tables in RAM
    without reserved bits (what a hook installs).
    """
    half = kernel_half(kpt)
    skip = _ldt_slot(kpt.levels)
    at, needle, pick = _needle(half, skip)
    roots: list[int] = []
    empty: list[int] = []
    rejected: list[Rejected] = []
    rejected_count = 0
    scanned = 0
    truncated = False
    mine = _HALF_ENTRIES.unpack(half)
    needles = _near_needles(half, skip) if near > 0 else []
    near_found: list[tuple[int, tuple[int, ...]]] = []
    for base, data in readable_chunks(kpt.mapper, ram, CHUNK):
        scanned += len(data)
        for off, differ in _near(data, mine, needles, skip, near):
            page = _PAGE_ENTRIES.unpack_from(data, off)
            if user_half_problem(page, kpt.levels, kpt.rules, ram) is None and (
                user_half_problem(page, kpt.levels, kpt.rules, ram, differ) is None
            ):
                near_found.append((base + off, differ))
        for off in _candidates(data, half, at, needle, pick, skip):
            table = base + off
            entries = _ENTRIES.unpack_from(data, off)
            problem = user_half_problem(entries, kpt.levels, kpt.rules, ram)
            if problem is not None:
                rejected_count += 1
                if len(rejected) < MAX_REJECTED:
                    rejected.append(Rejected(table, problem))
            elif table != kpt.root and not any(entries):
                empty.append(table)
            elif len(roots) >= max_roots:
                truncated = True
            else:
                roots.append(table)
        if progress is not None:
            progress(scanned)
    if kpt.root not in roots and not truncated:
        # The kernel's own table, even where the dump or RAM map left it out.
        roots.append(kpt.root)
    return RootScan(
        tuple(sorted(roots)),
        tuple(rejected),
        rejected_count,
        tuple(empty),
        scanned,
        truncated,
        tuple(sorted(near_found)),
    )


@dataclass(frozen=True)
class Usage:
    """A table's user half: leaf runs, bytes mapped, bytes user mode may access, and bytes
    both writable and executable; ``segments`` are the VA-contiguous ranges of
    user-accessible pages of equal permissions, the highest ones, highest last."""

    runs: int
    bytes: int
    user_bytes: int
    wx_bytes: int
    segments: tuple[AddrRange, ...]
    #: Why the walk stopped early (a table that could not be read), else ``""``.
    problem: str = ""

    @property
    def wx_pages(self) -> int:
        """W+X bytes in 4 KiB pages."""
        return self.wx_bytes // PAGE_SIZE


#: Segments :class:`Usage` keeps (the highest ones: where the stack's top may be).
_TOP_SEGMENTS = 16


def space_usage(pt: X86PageTable) -> Usage:
    """The user mappings of ``pt`` (the table user mode runs on): its user half walked once,
    each table read once. A table linked again (shared, or a hostile table's loop) is counted
    by the bytes it maps, not walked again: its W+X pages are those of its first walk."""
    runs = size = user = wx = 0
    segs: list[tuple[int, int, tuple[bool, bool]]] = []
    problem = ""
    try:
        for rec in pt.iter_runs(AddrRange(0, params(pt.levels).user_end), aliases="collapse"):
            if type(rec) is AliasRun:
                runs += 1
                size += rec.count * rec.mapped
                if rec.user:
                    user += rec.count * rec.mapped
                continue
            if type(rec) is not LeafRun:
                continue
            runs += 1
            n = rec.count * rec.page_size
            size += n
            if rec.writable and rec.executable:
                wx += n
            if not rec.user:
                continue
            user += n
            perms = (rec.writable, rec.executable)
            if segs and segs[-1][1] == rec.vaddr and segs[-1][2] == perms:
                segs[-1] = (segs[-1][0], rec.vaddr + n, perms)
            else:
                segs.append((rec.vaddr, rec.vaddr + n, perms))
                if len(segs) > 2 * _TOP_SEGMENTS:
                    del segs[:_TOP_SEGMENTS]
    except GdbextError as exc:
        problem = str(exc)
    top = tuple(AddrRange(s, e) for s, e, _ in segs[-_TOP_SEGMENTS:])
    return Usage(runs, size, user, wx, top, problem)


@dataclass(frozen=True)
class ExecIdentity:
    """What ``execve`` left at the top of a user stack: the file name it executed and, when
    the pointer array was found, the argument strings and how many environment strings."""

    filename: str
    argv: tuple[str, ...] | None
    envc: int | None
    #: The user VA of the stack's top page.
    page: int


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def _printable(raw: bytes) -> bool:
    return all(b >= 0x20 or b == 0x09 for b in raw)


def exec_identity(data: bytes, base: int) -> ExecIdentity | None:
    """The identity ``execve`` left in ``data``, the highest bytes of a user stack read from
    user VA ``base`` (a multiple of 8 bytes ending where the stack ends), or ``None``.

    ``execve`` ends the stack with a zero pointer; below it the file name, then the
    environment strings, then the argument strings, each NUL-terminated (``copy_strings``);
    below those the platform string, random bytes, the auxiliary vector, then the array
    ``argc, argv[0..argc-1], 0, envp[...], 0`` that points into the strings. The file name is
    the last string; the array, found as a run of words that point at consecutive string
    starts, gives ``argv`` (``None`` when it is not in ``data``).
    """
    if len(data) < 16 or len(data) % 8 or data[-8:] != bytes(8) or data[-9] != 0:
        return None
    strings = data[:-8]
    # The string starts (offsets), last string first, while the bytes read as text.
    starts: list[int] = []
    end = len(strings) - 1  # the NUL ending the last string
    while end > 0:
        begin = strings.rfind(b"\0", 0, end) + 1
        raw = strings[begin:end]
        if not raw or not _printable(raw) or begin == 0:
            break
        starts.append(begin)
        end = begin - 1
    if not starts:
        return None
    filename = _text(strings[starts[0] : len(strings) - 1])
    argv, envc = _pointer_array(data, base, sorted(starts))
    page = base + len(data) - PAGE_SIZE
    if argv is None:
        return ExecIdentity(filename, None, None, page)

    def at(va: int) -> str:
        off = va - base
        return _text(data[off : data.index(b"\0", off)])

    return ExecIdentity(filename, tuple(at(p) for p in argv), envc, page)


def _pointer_array(
    data: bytes, base: int, starts: list[int]
) -> tuple[tuple[int, ...] | None, int | None]:
    """``argv``'s pointers and ``envc`` from the array ``argc, argv..., 0, envp..., 0`` in
    ``data``: its pointers are the VAs of consecutive strings, the last ``envp`` pointer the
    string just below the file name."""
    vas = [base + s for s in starts]
    index = {va: i for i, va in enumerate(vas)}
    words = struct.unpack(f"<{len(data) // 8}Q", data)
    limit = min(len(words), (starts[0] // 8) if starts else 0)
    for i in range(limit - 2):
        argc = words[i]
        if not 0 < argc <= len(vas) - 1 or words[i + 1] not in index:
            continue
        first = index[words[i + 1]]
        if first + argc > len(vas) - 1 or i + argc + 2 >= len(words):
            continue
        if tuple(words[i + 1 : i + 1 + argc]) != tuple(vas[first : first + argc]):
            continue
        if words[i + 1 + argc] != 0:
            continue
        envp = _envp(words, i + argc + 2, vas, first + argc)
        if envp is None:
            continue
        return tuple(vas[first : first + argc]), envp
    return None, None


def _envp(words: Sequence[int], at: int, vas: Sequence[int], first: int) -> int | None:
    """How many ``envp`` pointers from word ``at`` point at ``vas[first:]`` in order, up to
    the string before the file name (the last of ``vas``), then a 0; else ``None``."""
    n = 0
    while at + n < len(words) and words[at + n]:
        if first + n >= len(vas) - 1 or words[at + n] != vas[first + n]:
            return None
        n += 1
    if at + n >= len(words) or first + n != len(vas) - 1:
        return None
    return n


def stack_tops(usage: Usage) -> Iterable[int]:
    """Where a user stack may end: the ends of ``usage``'s highest segments, highest first."""
    return (s.end for s in reversed(usage.segments))
