"""A modelled TLB and paging-structure cache, so that a missing invalidation shows in a test.

:class:`SimTlb` translates virtual addresses as an x86-64 MMU does, with its own minimal
hardware walk (it does not use :mod:`gdbext.x86.paging`, so it can check it). Like the hardware it
keeps what it walked:

- the **TLB**: one entry per translated page (keyed by page base and page size), served
  without looking at the tables again, even after they changed;
- the **paging-structure cache** (PSC): for each non-leaf entry it traversed, the address of
  the next table, keyed by the level of the entry and the virtual-address prefix that selects
  it. A later walk starts from the deepest cached table instead of re-reading upper entries.

Nothing leaves either cache but an invalidation: :meth:`SimTlb.invlpg` drops the TLB entries
for one page and (as the Intel SDM says INVLPG does) the whole PSC; :meth:`SimTlb.flush_all`
and :meth:`SimTlb.set_root` (a CR3 write) drop everything. The instance is a
:class:`~gdbext.x86.tlbflush.FlushHook`. :meth:`SimTlb.stale_entries` lists what the caches hold
that a fresh walk of the current tables contradicts: after a correct sequence of changes and
flushes it is empty.

The model caches the worst case: every translation forever (no capacity limit, no eviction)
and PSC entries even for walks that end at a not-present entry. Not-present translations are
never cached, as on the hardware.

>>> import struct
>>> from gdbext_sim.memory import SparsePhysMemory
>>> mem = SparsePhysMemory(1 << 20)
>>> for table, entry in [(0x1000, 0x2003), (0x2000, 0x3003), (0x3000, 0x4003),
...                      (0x4000, 0x80003)]:
...     mem.write(table, struct.pack("<Q", entry))    # index 0 at every level
>>> tlb = SimTlb(mem, root=0x1000, levels=4)
>>> hex(tlb.access(0x123))
'0x80123'
>>> mem.write(0x4000, struct.pack("<Q", 0x90003))     # remap, forget the invlpg
>>> hex(tlb.access(0x123))                            # the TLB still serves the old frame
'0x80123'
>>> [hex(s.cached.frame) for s in tlb.stale_entries()]
['0x80000']
>>> tlb.invlpg(0x0)
>>> hex(tlb.access(0x123)), tlb.stale_entries()
('0x90123', [])
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

from gdbext.addr import check_aligned
from gdbext.errors import NonCanonicalAddressError, PhysMemoryError
from gdbext.geometry import PagingGeometry, entry_span, geometry, index_shift, level_name
from gdbext.mapper import PhysMapper
from gdbext.x86.tlbflush import Flush, FlushAll, FlushPage

#: The next-table / frame address bits of an entry (MAXPHYADDR 52).
ENTRY_ADDR_MASK = 0x000F_FFFF_FFFF_F000
_PRESENT = 1 << 0
_WRITABLE = 1 << 1
_USER = 1 << 2
_HUGE_PAGE = 1 << 7
_NO_EXECUTE = 1 << 63
_U64 = struct.Struct("<Q")
#: Page sizes a TLB entry can have, smallest first.
_PAGE_SIZES = (entry_span(1), entry_span(2), entry_span(3))


@dataclass(frozen=True)
class Rights:
    """Access rights accumulated down a walk: W and U/S are ANDed, XD is ORed (SDM 4.6)."""

    writable: bool = True
    user: bool = True
    no_execute: bool = False

    def through(self, entry: int) -> Rights:
        """These rights restricted by one more paging-structure ``entry``."""
        return Rights(
            self.writable and bool(entry & _WRITABLE),
            self.user and bool(entry & _USER),
            self.no_execute or bool(entry & _NO_EXECUTE),
        )


@dataclass(frozen=True)
class TlbEntry:
    """One translation: the page of ``page_size`` bytes at ``vaddr`` maps to ``frame``."""

    vaddr: int
    page_size: int
    frame: int
    rights: Rights
    #: The leaf entry the translation came from (as read when it was cached).
    entry: int

    @property
    def level(self) -> int:
        """The level of the leaf entry: 1 (4 KiB), 2 (2 MiB) or 3 (1 GiB)."""
        return (self.page_size.bit_length() - 1 - 12) // 9 + 1

    def matches(self, other: TlbEntry | None) -> bool:
        """True if ``other`` translates the same page to the same frame with the same rights."""
        return (
            other is not None
            and other.page_size == self.page_size
            and other.frame == self.frame
            and other.rights == self.rights
        )


@dataclass(frozen=True)
class PscEntry:
    """A cached non-leaf entry at ``level``: the region at ``vaddr`` uses table ``table``.

    ``vaddr`` is the first (canonical) address of the ``entry_span(level)`` bytes the entry
    covers; ``table`` is the physical address of the level ``level - 1`` table it points to.
    """

    level: int
    vaddr: int
    table: int
    rights: Rights

    def matches(self, other: PscEntry | None) -> bool:
        return other is not None and other.table == self.table and other.rights == self.rights


@dataclass(frozen=True)
class StaleEntry:
    """A cached entry and what a fresh walk finds instead (``None``: nothing, or a fault)."""

    cached: TlbEntry | PscEntry
    current: TlbEntry | PscEntry | None

    @property
    def kind(self) -> Literal["tlb", "psc"]:
        return "tlb" if isinstance(self.cached, TlbEntry) else "psc"

    def __str__(self) -> str:
        cached = self.cached
        if isinstance(cached, TlbEntry):
            what = f"TLB entry 0x{cached.vaddr:x}+0x{cached.page_size:x} -> 0x{cached.frame:x}"
        else:
            what = (
                f"{level_name(cached.level)} cache entry 0x{cached.vaddr:x} "
                f"-> table 0x{cached.table:x}"
            )
        current = self.current
        if current is None:
            now = "nothing"
        elif isinstance(current, TlbEntry):
            now = f"0x{current.frame:x} (0x{current.page_size:x} bytes, {current.rights})"
        else:
            now = f"table 0x{current.table:x} ({current.rights})"
        return f"stale {what} ({cached.rights}); the tables now give {now}"


class SimTlb:
    """A TLB plus paging-structure cache in front of the page tables at ``root``.

    :param memory: physical memory holding the tables.
    :param root: physical address of the top-level table (4 KiB-aligned, CR3's address bits).
    :param levels: 4, or 5 for LA57.

    Counters: ``flushes_page`` (:meth:`invlpg` calls), ``flushes_all`` (:meth:`flush_all`
    calls; a :meth:`set_root` is not counted there), ``tlb_hits``, ``tlb_misses``,
    ``psc_hits`` (walks that started below the top level).
    """

    def __init__(self, memory: PhysMapper, root: int, levels: int) -> None:
        self._memory = memory
        self._geometry: PagingGeometry = geometry(levels)
        self.levels = levels
        check_aligned(root, 4096, "page-table root")
        self.root = root
        self._tlb: dict[tuple[int, int], TlbEntry] = {}
        self._psc: dict[tuple[int, int], PscEntry] = {}
        self.flushes_page = 0
        self.flushes_all = 0
        self.tlb_hits = 0
        self.tlb_misses = 0
        self.psc_hits = 0

    # --- Translation --------------------------------------------------------------------

    def access(self, vaddr: int) -> int | None:
        """The physical address ``vaddr`` translates to, as the MMU would use it.

        A cached translation wins even if the tables changed since it was cached. Otherwise
        the tables are walked (from the deepest cached table, if any), the translation cached
        and returned. ``None`` if the walk meets a not-present (or reserved huge) entry.

        :raises NonCanonicalAddressError: for a non-canonical ``vaddr``.
        """
        self._check_canonical(vaddr)
        for size in _PAGE_SIZES:
            hit = self._tlb.get((vaddr & ~(size - 1), size))
            if hit is not None:
                self.tlb_hits += 1
                return hit.frame + (vaddr & (size - 1))
        self.tlb_misses += 1
        translation = self._walk(vaddr, cached=True)
        if translation is None:
            return None
        self._tlb[(translation.vaddr, translation.page_size)] = translation
        return translation.frame + (vaddr & (translation.page_size - 1))

    def walk(self, vaddr: int) -> TlbEntry | None:
        """A fresh walk of the current tables for ``vaddr``: no cache used or filled."""
        self._check_canonical(vaddr)
        return self._walk(vaddr, cached=False)

    def _check_canonical(self, vaddr: int) -> None:
        if not self._geometry.is_canonical(vaddr):
            raise NonCanonicalAddressError(vaddr, self._geometry.va_bits)

    def _prefix(self, vaddr: int, level: int) -> int:
        """The virtual-address bits that select the entry at ``level`` (above its index)."""
        shift = index_shift(level)
        return (vaddr >> shift) & ((1 << (self._geometry.va_bits - shift)) - 1)

    def _read_entry(self, table: int, level: int, vaddr: int) -> int:
        index = (vaddr >> index_shift(level)) & 0x1FF
        return int(_U64.unpack(self._memory.read(table + 8 * index, 8))[0])

    def _walk(self, vaddr: int, *, cached: bool) -> TlbEntry | None:
        table, level, rights = self.root, self.levels, Rights()
        if cached:
            for psc_level in range(2, self.levels + 1):
                hit = self._psc.get((psc_level, self._prefix(vaddr, psc_level)))
                if hit is not None:
                    self.psc_hits += 1
                    table, level, rights = hit.table, psc_level - 1, hit.rights
                    break
        while True:
            entry = self._read_entry(table, level, vaddr)
            if not entry & _PRESENT:
                return None
            huge = bool(entry & _HUGE_PAGE) and level > 1
            if huge and level > 3:
                return None  # PS is reserved in PML4/PML5 entries: a #PF(RSVD)
            rights = rights.through(entry)
            if level == 1 or huge:
                size = entry_span(level)
                return TlbEntry(
                    vaddr & ~(size - 1), size, entry & ENTRY_ADDR_MASK & ~(size - 1), rights, entry
                )
            table = entry & ENTRY_ADDR_MASK
            if cached:
                self._psc[(level, self._prefix(vaddr, level))] = PscEntry(
                    level, self._region_start(vaddr, level), table, rights
                )
            level -= 1

    def _region_start(self, vaddr: int, level: int) -> int:
        return self._geometry.canonicalize(vaddr & ~(entry_span(level) - 1))

    def _fresh_psc_entry(self, level: int, vaddr: int) -> PscEntry | None:
        """What the non-leaf entry at ``level`` for ``vaddr`` holds now, if it is one."""
        table, rights = self.root, Rights()
        for lvl in range(self.levels, level - 1, -1):
            entry = self._read_entry(table, lvl, vaddr)
            if not entry & _PRESENT or entry & _HUGE_PAGE:
                return None
            rights = rights.through(entry)
            table = entry & ENTRY_ADDR_MASK
        return PscEntry(level, self._region_start(vaddr, level), table, rights)

    # --- Invalidation -------------------------------------------------------------------

    def invlpg(self, vaddr: int) -> None:
        """INVLPG: drop the TLB entries of every page size that cover ``vaddr``, and the PSC."""
        self.flushes_page += 1
        for size in _PAGE_SIZES:
            self._tlb.pop((vaddr & ~(size - 1), size), None)
        self._psc.clear()

    def flush_all(self) -> None:
        """Drop every TLB and PSC entry."""
        self.flushes_all += 1
        self._tlb.clear()
        self._psc.clear()

    def set_root(self, root: int) -> None:
        """A CR3 write: switch to the tables at ``root`` and drop every cached entry."""
        check_aligned(root, 4096, "page-table root")
        self.root = root
        self._tlb.clear()
        self._psc.clear()

    def __call__(self, flush: Flush) -> None:
        """The :class:`~gdbext.x86.tlbflush.FlushHook`: perform ``flush``."""
        if isinstance(flush, FlushPage):
            self.invlpg(flush.vaddr)
        elif isinstance(flush, FlushAll):
            self.flush_all()
        else:
            raise TypeError(f"not a flush: {flush!r}")

    # --- Inspection ---------------------------------------------------------------------

    def tlb_entries(self) -> list[TlbEntry]:
        """The cached translations, by page address."""
        return sorted(self._tlb.values(), key=lambda e: (e.vaddr, e.page_size))

    def psc_entries(self) -> list[PscEntry]:
        """The cached paging-structure entries, top level first, then by address."""
        return sorted(self._psc.values(), key=lambda e: (-e.level, e.vaddr))

    def stale_entries(self) -> list[StaleEntry]:
        """Every cached entry that a fresh, uncached walk of the current tables contradicts.

        A TLB entry is stale if its page now translates to another frame, with another page
        size or other rights, or not at all; a PSC entry if its entry now points to another
        table, accumulates other rights, or is no longer a present non-leaf entry. A walk
        that leaves physical memory counts as "not at all".
        """
        stale: list[StaleEntry] = []
        for tlb_entry in self.tlb_entries():
            try:
                fresh_tlb = self._walk(tlb_entry.vaddr, cached=False)
            except PhysMemoryError:
                fresh_tlb = None
            if not tlb_entry.matches(fresh_tlb):
                stale.append(StaleEntry(tlb_entry, fresh_tlb))
        for psc_entry in self.psc_entries():
            try:
                fresh_psc = self._fresh_psc_entry(psc_entry.level, psc_entry.vaddr)
            except PhysMemoryError:
                fresh_psc = None
            if not psc_entry.matches(fresh_psc):
                stale.append(StaleEntry(psc_entry, fresh_psc))
        return stale

    def __repr__(self) -> str:
        return (
            f"SimTlb(root=0x{self.root:x}, levels={self.levels}, tlb={len(self._tlb)}, "
            f"psc={len(self._psc)})"
        )
