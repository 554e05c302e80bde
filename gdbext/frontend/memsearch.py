"""``search``'s core: a byte pattern in the memory a page table maps, or in physical RAM.

:func:`search_memory` checks a request and returns a :class:`SearchResult`, which reads nothing
until :meth:`SearchResult.hits` is iterated:

- virtual (the default): the selected table is walked once (the engine's
  :meth:`~gdbext.x86.paging.X86PageTable.iter_runs`, tables linked again collapsed into
  :class:`Alias` records rather than expanded: ESPfix links one table 65,536 times), each run of
  leaves a :class:`Segment` (virtual start, frame, size, permissions), clipped to ``--range``
  and to what the aliases that meet it copy. The physical ranges the segments map are merged
  and read once each, in chunks of :data:`CHUNK` bytes with ``len(pattern) - 1`` bytes carried
  between chunks, however many virtual addresses map them; a match inside a frame range is
  then reported at every virtual address that maps it (the segments indexed by 2 MiB block,
  then each alias's copies). A match that straddles two virtually consecutive segments whose
  frames are not contiguous is found by reading ``len(pattern) - 1`` bytes on each side of the
  boundary, in virtual order.
- physical (``--phys``): the target's RAM ranges, read in chunks the same way.

Hits are :class:`Hit` values; at most ``max_hits`` (then :attr:`SearchResult.more` says that
more exist, and a virtual search gives the first ``max_hits`` it found, frame range by frame
range, in virtual-address order). Nothing here prints; :mod:`gdbext.render.search` formats the hits.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from gdbext.addr import AddrRange
from gdbext.defaults import DEFAULT_MAX_HITS
from gdbext.errors import EXIT_NOT_FOUND, EXIT_OK, PhysMemoryError, UsageError
from gdbext.flags import NO_EXECUTE, USER_ACCESSIBLE, WRITABLE
from gdbext.frontend.commands import RootOptions, open_page_table, root_warnings, target_layout
from gdbext.frontend.searchwhere import IGNORED_FLAGS, has_window
from gdbext.geometry import PAGE_SIZE
from gdbext.linux.detect import labels_wanted
from gdbext.linux.layout import Layout
from gdbext.mapper import PhysMapper, readable_ranges
from gdbext.permfilter import PermFilter
from gdbext.plugin.target import Target
from gdbext.x86.paging import X86PageTable
from gdbext.x86.records import AliasRun, LeafRun

#: The most bytes read from the backend at once.
CHUNK = 1 << 20
#: The longest pattern: a match straddles at most one page boundary's pair of segments.
MAX_PATTERN = 4096
#: Bytes of context shown from each hit's start (the match, and what follows it).
CONTEXT = 16
#: The index's block: segments are found by the 2 MiB blocks their frames meet.
_BLOCK_SHIFT = 21
#: The leaf's own bits an alias's copy of it is given its permissions from.
_LEAF_BITS = USER_ACCESSIBLE | WRITABLE | NO_EXECUTE


@dataclass(frozen=True)
class Pattern:
    """What to find: literal bytes, or (``pointer_into``) any 8-byte little-endian value in
    ``[start, end)``; ``align``/``offset``: only addresses ``a`` with ``a % align == offset``."""

    data: bytes = b""
    describe: str = ""
    pointer_into: AddrRange | None = None
    align: int = 1
    offset: int = 0

    @property
    def size(self) -> int:
        return 8 if self.pointer_into is not None else len(self.data)


@dataclass(frozen=True)
class SearchOptions:
    """Where to search: ``root``'s mappings (within ``range``), or physical RAM."""

    pattern: Pattern
    root: RootOptions = field(default_factory=RootOptions)
    physical: bool = False
    range: AddrRange | None = None
    max_hits: int = DEFAULT_MAX_HITS
    labels: str = "auto"
    #: Only pages whose effective permissions pass (``--filter``).
    perm: PermFilter | None = None
    #: Only the merged mapping that contains this address (``--has``), within ``range``.
    has: int | None = None


class Segment(NamedTuple):
    """``size`` bytes at virtual ``vaddr``, mapped to the contiguous frames at ``paddr``."""

    vaddr: int
    paddr: int
    size: int
    user: bool
    writable: bool
    executable: bool
    #: The leaf entries' own USER_ACCESSIBLE, WRITABLE and NO_EXECUTE bits.
    leaf: int = 0

    @property
    def end(self) -> int:
        return self.vaddr + self.size


class Alias(NamedTuple):
    """``copies`` copies, ``span`` bytes each from ``vaddr``, of what the walk met first at
    ``[source, source + span)`` (a table linked again: the engine's
    :class:`~gdbext.x86.records.AliasRun`)."""

    vaddr: int
    span: int
    copies: int
    source: int
    user: bool
    writable: bool
    executable: bool
    same_access: bool


@dataclass(frozen=True)
class Hit:
    """A match at ``address`` (virtual, or physical with ``--phys``) whose first byte is at
    physical ``paddr``; ``context``: :data:`CONTEXT` bytes from there, or fewer at the end of
    what could be read; ``perms`` and ``region`` for a virtual hit."""

    address: int
    paddr: int
    context: bytes
    perms: str = ""
    region: str = ""


@dataclass
class SearchResult:
    """A search to be rendered: :meth:`hits` reads as it goes and fills the counts."""

    options: SearchOptions
    mapper: PhysMapper
    page_table: X86PageTable | None = None
    layout: Layout | None = None
    warnings: list[str] = field(default_factory=list)
    #: Physical ranges to read (physical search), in address order.
    ram: list[AddrRange] = field(default_factory=list)
    #: Set after :meth:`hits`: more matches exist than ``max_hits``.
    more: bool = False
    found: int = 0
    bytes_read: int = 0
    #: The tables linked again (a virtual search's, once it has walked).
    aliases: list[Alias] = field(default_factory=list)

    @property
    def physical(self) -> bool:
        return self.page_table is None

    @property
    def exit_status(self) -> int:
        return EXIT_OK if self.found else EXIT_NOT_FOUND

    def hits(self) -> Iterator[Hit]:
        """The hits, at most ``max_hits``: physical ones in address order. Virtual ones are
        found frame range by frame range (then across page boundaries), the search stops
        past ``max_hits`` of them, and those found are given in virtual-address order."""
        limit = self.options.max_hits
        if self.page_table is None:
            for hit in self._physical_hits():
                if self.found >= limit:
                    self.more = True
                    return
                self.found += 1
                yield hit
            return
        held: list[Hit] = []
        for hit in self._virtual_hits():
            if len(held) >= limit:
                self.more = True
                break
            held.append(hit)
        held.sort(key=lambda h: h.address)
        self.found = len(held)
        yield from held

    # --- physical ----------------------------------------------------------------------------

    def _physical_hits(self) -> Iterator[Hit]:
        for start, _data, context in self._scan(self.ram, self.options.pattern):
            yield Hit(start, start, context)

    def _scan(
        self, ranges: list[AddrRange], pattern: Pattern
    ) -> Iterator[tuple[int, bytes, bytes]]:
        """Matches in ``ranges`` (physical, read once each): ``(paddr, match, context)``."""
        size = pattern.size
        carry_len = size - 1
        for part in readable_ranges(self.mapper, ranges):
            carry = b""
            pos = part.start
            while pos < part.end:
                n = min(CHUNK, part.end - pos)
                for at, data in self._read(pos, n):
                    if data is None:  # refused: no match runs across it
                        carry = b""
                        continue
                    self.bytes_read += len(data)
                    if carry:  # matches that start in the carried bytes (no copy of data)
                        edge = carry + data[: carry_len + CONTEXT]
                        base = at - len(carry)
                        for i in _matches(edge, pattern, base):
                            if i >= len(carry):
                                break
                            yield base + i, edge[i : i + size], edge[i : i + max(CONTEXT, size)]
                    for i in _matches(data, pattern, at):
                        yield at + i, data[i : i + size], data[i : i + max(CONTEXT, size)]
                    if not carry_len:
                        carry = b""
                    elif len(data) >= carry_len:
                        carry = data[len(data) - carry_len :]
                    else:
                        carry = (carry + data)[-carry_len:]
                pos += n

    def _read(self, paddr: int, size: int) -> Iterator[tuple[int, bytes | None]]:
        """``size`` bytes at ``paddr``: one piece, or when the backend refuses the chunk,
        a piece a page (``None`` for each page it refuses)."""
        try:
            yield paddr, self.mapper.read(paddr, size)
            return
        except PhysMemoryError:
            pass
        for page in range(paddr, paddr + size, PAGE_SIZE):
            n = min(PAGE_SIZE, paddr + size - page)
            try:
                data: bytes | None = self.mapper.read(page, n)
            except PhysMemoryError:
                data = None
            yield page, data

    # --- virtual -----------------------------------------------------------------------------

    def _walk(self) -> tuple[list[Segment], list[Alias]]:
        """The leaves in virtual order, runs that continue each other in virtual and physical
        address with equal permissions joined, and the tables linked again (not expanded:
        ESPfix links one table thousands of times)."""
        pt = self.page_table
        assert pt is not None
        out: list[Segment] = []
        aliases: list[Alias] = []
        held: list[int] | None = None  # vaddr, paddr, size, user, writable, executable, leaf
        for rec in pt.iter_runs(aliases="collapse", ignore=IGNORED_FLAGS, perm=self.options.perm):
            if type(rec) is AliasRun:
                span = (rec.end - rec.vaddr) // rec.count
                aliases.append(
                    Alias(
                        rec.vaddr,
                        span,
                        rec.count,
                        rec.first_vaddr,
                        rec.user,
                        rec.writable,
                        rec.executable,
                        rec.same_access,
                    )
                )
                continue
            if type(rec) is not LeafRun:
                continue
            va, pa, size = rec.vaddr, rec.paddr, rec.page_size * rec.count
            perms = (rec.user, rec.writable, rec.executable, rec.entry & _LEAF_BITS)
            if (
                held is not None
                and held[0] + held[2] == va
                and held[1] + held[2] == pa
                and tuple(held[3:]) == perms
            ):
                held[2] += size
                continue
            if held is not None:
                out.append(Segment(*held))  # type: ignore[arg-type]
            held = [va, pa, size, *perms]
        if held is not None:
            out.append(Segment(*held))  # type: ignore[arg-type]
        return out, aliases

    def _searched(self, segments: list[Segment], aliases: list[Alias]) -> list[Segment]:
        """``segments`` clipped to ``--range`` and to what the aliases that meet it copy."""
        window = self.options.range
        if window is None:
            return segments
        wanted = [(window.start, window.end)]
        wanted += [
            (a.source, a.source + a.span)
            for a in aliases
            if a.vaddr < window.end and window.start < a.vaddr + a.span * a.copies
        ]
        out: list[Segment] = []
        for part in _merged(sorted(wanted)):
            lo, hi = part.start, part.end
            for seg in segments:
                a, b = max(seg.vaddr, lo), min(seg.end, hi)
                if a < b:
                    out.append(seg._replace(vaddr=a, paddr=seg.paddr + a - seg.vaddr, size=b - a))
        out.sort()
        return out

    def _virtual_hits(self) -> Iterator[Hit]:
        everything, aliases = self._walk()
        segments = self._searched(everything, aliases)
        self.aliases = aliases
        size = self.options.pattern.size
        index: dict[int, list[int]] | None = None  # made at the first match
        frames = _merged(sorted((s.paddr, s.paddr + s.size) for s in segments))
        pattern = self.options.pattern
        # A virtual alignment that divides a page is the frame's; a larger one is checked at
        # each virtual address.
        scan = pattern if PAGE_SIZE % pattern.align == 0 else replace(pattern, align=1, offset=0)
        for paddr, _match, context in self._scan(frames, scan):
            if index is None:
                index = _frame_index(segments)
            for n in index.get(paddr >> _BLOCK_SHIFT, ()):
                seg = segments[n]
                if seg.paddr <= paddr and paddr + size <= seg.paddr + seg.size:
                    vaddr = seg.vaddr + paddr - seg.paddr
                    yield from self._hits(vaddr, paddr, context, seg)
        if size > 1:
            yield from self._straddling(segments)

    def _hits(self, vaddr: int, paddr: int, context: bytes, seg: Segment) -> Iterator[Hit]:
        """The match at ``vaddr`` and at each copy of it the aliases make, within
        ``--range`` and aligned as asked."""
        pattern = self.options.pattern
        window = self.options.range
        wanted = self.options.perm
        size = pattern.size
        perms = (seg.user, seg.writable, seg.executable)
        for va, (user, writable, executable) in _copies(
            vaddr, size, perms, seg.leaf, self.aliases, 0
        ):
            if window is not None and not window.start <= va < window.end:
                continue
            if wanted is not None and not wanted.matches(user, writable, executable):
                continue  # a copy whose path allows other than the first's
            if va % pattern.align != pattern.offset:
                continue
            yield self._hit(va, paddr, context, user, writable, executable)

    def _straddling(self, segments: list[Segment]) -> Iterator[Hit]:
        """Matches across the boundary of two virtually consecutive segments (their frames
        not contiguous, or their permissions different), found in virtual order."""
        pattern = self.options.pattern
        size = pattern.size
        for i in range(1, len(segments)):
            prev, seg = segments[i - 1], segments[i]
            if prev.end != seg.vaddr:
                continue
            before = self._virtual_bytes(segments, i - 1, size - 1, backward=True)
            after = self._virtual_bytes(segments, i, size - 1 + CONTEXT, backward=False)
            if before is None or after is None:
                continue
            buf = before + after
            base = seg.vaddr - len(before)
            for j in _matches(buf, pattern, base):
                if j >= len(before) or j + size <= len(before):
                    continue  # wholly on one side: found in the frames
                vaddr = base + j
                owner = prev if vaddr < prev.end else seg
                paddr = owner.paddr + vaddr - owner.vaddr
                yield from self._hits(vaddr, paddr, buf[j : j + max(CONTEXT, size)], owner)

    def _virtual_bytes(
        self, segments: list[Segment], i: int, count: int, backward: bool
    ) -> bytes | None:
        """``count`` bytes ending at segment ``i``'s end (``backward``) or starting at its
        start, across virtually consecutive segments; fewer where the mappings end, ``None``
        when a frame cannot be read."""
        parts: list[bytes] = []
        left = count
        step = -1 if backward else 1
        while left > 0 and 0 <= i < len(segments):
            seg = segments[i]
            n = min(left, seg.size)
            pa = seg.paddr + seg.size - n if backward else seg.paddr
            try:
                parts.append(self.mapper.read(pa, n))
            except PhysMemoryError:
                return None
            left -= n
            nxt = i + step
            if not 0 <= nxt < len(segments):
                break
            other = segments[nxt]
            if (other.end != seg.vaddr) if backward else (seg.end != other.vaddr):
                break
            i = nxt
        return b"".join(reversed(parts) if backward else parts)

    def _hit(
        self, vaddr: int, paddr: int, context: bytes, user: bool, writable: bool, executable: bool
    ) -> Hit:
        perms = ("r" + ("w" if writable else "-") + ("x" if executable else "-")) + (
            " user" if user else " kernel"
        )
        region = ""
        if self.layout is not None:
            region = self.layout.label(vaddr).name
        return Hit(vaddr, paddr, context, perms, region)


def _copies(
    vaddr: int,
    size: int,
    perms: tuple[bool, bool, bool],
    leaf: int,
    aliases: list[Alias],
    depth: int,
) -> Iterator[tuple[int, tuple[bool, bool, bool]]]:
    """``vaddr`` and every address an alias copies ``[vaddr, vaddr + size)`` to (a copy
    inside what another alias copies is copied again), with the permissions there: the
    alias's path ANDed with the leaf's own bits, unless it allows what the first path did."""
    yield vaddr, perms
    if depth > 8:
        return
    for a in aliases:
        if not (a.source <= vaddr and vaddr + size <= a.source + a.span):
            continue
        there = perms
        if not a.same_access:
            there = (
                a.user and bool(leaf & USER_ACCESSIBLE),
                a.writable and bool(leaf & WRITABLE),
                a.executable and not leaf & NO_EXECUTE,
            )
        for k in range(a.copies):
            copy = a.vaddr + k * a.span + vaddr - a.source
            if copy != vaddr:
                yield from _copies(copy, size, there, leaf, aliases, depth + 1)


def _frame_index(segments: list[Segment]) -> dict[int, list[int]]:
    """The segments (their indices) by the 2 MiB physical blocks their frames meet."""
    index: dict[int, list[int]] = {}
    for n, (_, paddr, size, *_perms) in enumerate(segments):
        for block in range(paddr >> _BLOCK_SHIFT, ((paddr + size - 1) >> _BLOCK_SHIFT) + 1):
            index.setdefault(block, []).append(n)
    return index


def _matches(buf: bytes, pattern: Pattern, base: int) -> Iterator[int]:
    """Offsets in ``buf`` (at address ``base``) where ``pattern`` matches, aligned as asked."""
    align, offset = pattern.align, pattern.offset
    if pattern.pointer_into is not None:
        yield from _pointers(buf, pattern.pointer_into, base, align, offset)
        return
    data = pattern.data
    # Look for the pattern without its leading and trailing zero bytes (memory is mostly
    # zeros, on which a pattern ending in zeros is slow to look for), then check the rest.
    core = data.strip(b"\0")
    lead = len(data) - len(data.lstrip(b"\0")) if core else 0
    anchor = core or data
    end = len(buf) - len(data)
    j = buf.find(anchor, lead)
    while j >= 0:
        i = j - lead
        if i > end:
            return
        if (core is data or buf[i : i + len(data)] == data) and (
            align == 1 or (base + i) % align == offset
        ):
            yield i
        j = buf.find(anchor, j + 1)


def _pointers(buf: bytes, window: AddrRange, base: int, align: int, offset: int) -> Iterator[int]:
    """Offsets of 8-byte little-endian values in ``[window.start, window.end)``: found by
    the high bytes every such value shares, when there are some."""
    lo, hi = window.start, window.end - 1
    shared = 0
    while shared < 8 and (lo >> (56 - 8 * shared)) == (hi >> (56 - 8 * shared)):
        shared += 1
    if shared == 0:
        for i in range((offset - base) % align, len(buf) - 7, align):
            if lo <= int.from_bytes(buf[i : i + 8], "little") <= hi:
                yield i
        return
    top = (lo >> (64 - 8 * shared)).to_bytes(shared, "little")
    at = 8 - shared
    j = buf.find(top, at)
    while j >= 0:
        i = j - at
        if i + 8 > len(buf):
            return
        if (align == 1 or (base + i) % align == offset) and lo <= int.from_bytes(
            buf[i : i + 8], "little"
        ) <= hi:
            yield i
        j = buf.find(top, j + 1)


def _merged(ranges: list[tuple[int, int]]) -> list[AddrRange]:
    """Sorted ``(start, end)`` pairs merged where they overlap or touch."""
    out: list[list[int]] = []
    for start, end in ranges:
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1][1] = end
            continue
        out.append([start, end])
    return [AddrRange(start, end) for start, end in out]


def search_memory(target: Target, options: SearchOptions) -> SearchResult:
    """A search on ``target``: physical RAM with ``options.physical``, else the mappings of
    the table ``options.root`` selects.

    :raises UsageError: an empty or too long pattern, a bad alignment, ``--max`` below 1, root
        options with a physical search.
    """
    pattern = options.pattern
    if pattern.pointer_into is None and not pattern.data:
        raise UsageError("search: the pattern is empty")
    if pattern.size > MAX_PATTERN:
        raise UsageError(f"search: the pattern is over {MAX_PATTERN} bytes")
    if pattern.align < 1 or not 0 <= pattern.offset < pattern.align:
        raise UsageError(
            f"search: --align {pattern.align},{pattern.offset}: N must be 1 or more and "
            "OFFSET below N"
        )
    if options.max_hits < 1:
        raise UsageError(f"search: --max must be 1 or more, not {options.max_hits}")
    if options.physical:
        root = options.root
        if root.cr3 is not None or root.kernel or root.user_pgd or root.cpu is not None:
            raise UsageError(
                "search: --phys searches physical memory: it takes no page-table option"
            )
        if options.perm is not None or options.has is not None:
            raise UsageError("search: --phys searches physical memory: no --filter or --has")
        window = options.range
        if target.ram is None:
            if window is None:
                raise UsageError(
                    f"search: {target.description} does not say where its RAM is: give --range"
                )
            ram = [window]
        else:
            ram = list(target.ram)
        if window is not None:
            ram = [
                AddrRange(max(r.start, window.start), min(r.end, window.end))
                for r in ram
                if r.start < window.end and window.start < r.end
            ]
        return SearchResult(options, target.mapper, ram=ram)
    if options.has is not None:
        window = has_window(target, options.root, options.has, options.perm, options.range)
        options = replace(options, range=window)
    pt = open_page_table(target, options.root)
    layout = None
    if labels_wanted(options.labels, target.facts):
        layout = target_layout(target, pt)
    return SearchResult(options, target.mapper, pt, layout, root_warnings(pt, options.root))
