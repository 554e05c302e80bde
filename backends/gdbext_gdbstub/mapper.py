"""Physical memory of a live target, read through a gdbstub and kept for one stop.

:class:`LiveMapper` reads through the chosen :mod:`~gdbext_gdbstub.readpath` reader, whole
4 KiB pages at a time, keeps the pages for one stop, refuses reads outside the RAM that
``monitor info mtree -f`` shows (QEMU would return zeros for them; :mod:`~gdbext_gdbstub.ram`),
never writes, and offers :meth:`LiveMapper.prefetch`, which the paging engine calls with the
tables a walk is about to visit so that neighbouring tables come in one read. Every read runs
inside the :class:`~gdbext_gdbstub.phymem.ModeBracket` its reader's PhyMemMode needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gdbext.errors import PhysMemoryError, ReadOnlyError
from gdbext.geometry import PAGE_SIZE as PAGE
from gdbext_gdbstub.link import LiveTargetError, TargetMemoryError
from gdbext_gdbstub.options import Naming
from gdbext_gdbstub.phymem import ModeBracket
from gdbext_gdbstub.ram import RamRanges
from gdbext_gdbstub.readpath import Reader

PAGE_MASK = ~(PAGE - 1)
#: Pages kept per stop (32 MiB); the oldest go first beyond that.
CACHE_PAGES = 8192
#: Reads of more pages than this bypass the cache (a scan of RAM, say).
MAX_CACHED_READ_PAGES = 64
#: Pages per read when prefetching adjacent pages (the debugger splits a read into packets itself).
MAX_RUN_PAGES = 256


@dataclass
class ReadStats:
    """What the mapper did since the state was made (tests and benchmarks read it)."""

    #: Reads sent to the reader (each may be several packets).
    reads: int = 0
    #: Bytes those reads returned.
    bytes: int = 0
    #: Page lookups served from the cache.
    hits: int = 0
    #: Pages read by :meth:`LiveMapper.prefetch`.
    prefetched: int = 0
    #: How often the cache was dropped.
    invalidations: int = 0


class LiveMapper:
    """Physical memory of the live target (read-only), cached per stop in 4 KiB pages."""

    read_only = True

    def __init__(self, bracket: ModeBracket, naming: Naming) -> None:
        self._bracket = bracket
        self._naming = naming
        self.reader: Reader | None = None
        self.ram: RamRanges | None = None
        self.cache: dict[int, bytes] = {}
        self.stats = ReadStats()

    # --- the PhysMapper protocol ---

    def read(self, paddr: int, size: int) -> bytes:
        """``size`` bytes at ``paddr``.

        :raises PhysMemoryError: outside the known RAM, or refused by the target.
        """
        page = paddr & PAGE_MASK
        offset = paddr - page
        if offset + size <= PAGE and size > 0:
            data = self.cache.get(page)
            if data is not None:
                self.stats.hits += 1
            else:
                self._check_ram(paddr, size)
                if self.ram is not None and not self.ram.contains(page, PAGE):
                    return self._read_raw(paddr, size)  # the page straddles RAM's end
                data = self._read_raw(page, PAGE)
                self._store(page, data)
            return data if size == PAGE else data[offset : offset + size]
        if size <= 0:
            if size == 0:
                return b""
            raise ValueError(f"negative read size {size}")
        self._check_ram(paddr, size)
        last = (paddr + size - 1) & PAGE_MASK
        pages = range(page, last + PAGE, PAGE)
        if len(pages) > MAX_CACHED_READ_PAGES or (
            self.ram is not None and not self.ram.contains(page, last + PAGE - page)
        ):
            return self._read_raw(paddr, size)
        missing = [p for p in pages if p not in self.cache]
        self.stats.hits += len(pages) - len(missing)
        if missing:
            self._fetch(missing, strict=True)
        data = b"".join(self.cache[p] for p in pages)
        return data[offset : offset + size]

    def write(self, paddr: int, data: bytes) -> None:
        raise ReadOnlyError(
            f"the {self._naming.backend} backend never writes to the target's memory"
        )

    # --- batching ---

    def prefetch(self, paddrs: Iterable[int]) -> None:
        """Read the pages at ``paddrs`` (table addresses) that are not cached yet, adjacent
        pages in one read. Pages outside RAM and reads the target refuses are skipped: the
        later :meth:`read` of such a page reports it."""
        cache = self.cache
        ram = self.ram
        wanted = {p & PAGE_MASK for p in paddrs}
        pages = sorted(
            p for p in wanted if p not in cache and (ram is None or ram.contains(p, PAGE))
        )
        room = CACHE_PAGES - len(cache)
        if room <= 0 or not pages:
            return
        pages = pages[:room]
        self.stats.prefetched += self._fetch(pages, strict=False)

    # --- internals ---

    def clear(self) -> None:
        """Forget every cached page."""
        if self.cache:
            self.cache = {}
        self.stats.invalidations += 1

    def _check_ram(self, paddr: int, size: int) -> None:
        if self.ram is not None and not self.ram.contains(paddr, size):
            raise PhysMemoryError(paddr, size, "outside RAM", "read")

    def _store(self, page: int, data: bytes) -> None:
        cache = self.cache
        if len(cache) >= CACHE_PAGES:
            del cache[next(iter(cache))]
        cache[page] = data

    def _fetch(self, pages: Sequence[int], strict: bool) -> int:
        """Read sorted ``pages`` in runs of adjacent pages; the number of pages stored."""
        stored = 0
        i = 0
        while i < len(pages):
            j = i + 1
            while j < len(pages) and pages[j] == pages[j - 1] + PAGE and j - i < MAX_RUN_PAGES:
                j += 1
            start, count = pages[i], j - i
            try:
                data = self._read_raw(start, count * PAGE)
            except PhysMemoryError:
                if strict:
                    raise
            else:
                for k in range(count):
                    self._store(start + k * PAGE, data[k * PAGE : (k + 1) * PAGE])
                stored += count
            i = j
        return stored

    def _read_raw(self, paddr: int, size: int) -> bytes:
        """Read through the reader, inside a mode bracket (its own if none is open)."""
        reader = self.reader
        if reader is None:
            raise LiveTargetError(f"the {self._naming.backend} backend has no read path yet")
        bracket = self._bracket
        if bracket.depth == 0:
            with bracket.scope():
                return self._read_raw(paddr, size)
        bracket.ensure(reader.mode)
        try:
            data = reader.read(paddr, size)
        except TargetMemoryError as exc:
            raise PhysMemoryError(paddr, size, f"the target refused it ({exc})", "read") from None
        if len(data) != size:
            raise PhysMemoryError(paddr, size, f"the target returned {len(data)} bytes", "read")
        self.stats.reads += 1
        self.stats.bytes += size
        return data
