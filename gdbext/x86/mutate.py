"""Changing a page table: map, link, unmap, update flags, free empty tables.

:class:`PageTableEditor` is the half of :class:`~gdbext.x86.paging.X86PageTable` that writes
(the class inherits it). Every change

- refuses to run unless the page table was opened with ``allow_writes=True`` and the mapper is
  not read-only;
- checks the whole request, and allocates every table frame it needs, before it writes anything,
  so that an error leaves the tables as they were;
- ORs WRITABLE and USER_ACCESSIBLE of a new leaf into every parent entry (x86 ANDs them down a
  walk), never clears a parent's NO_EXECUTE, and never overwrites a non-present entry that holds
  something (the OS's);
- returns the TLB flushes it requires (:mod:`gdbext.x86.tlbflush`: one page per changed leaf,
  everything for a changed intermediate entry or a freed table, or above
  :data:`FLUSH_PAGE_CEILING` pages) and hands each to the flush hook;
- gives freed table frames back to the :class:`~gdbext.mapper.FrameAllocator`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from gdbext.addr import AddrRange, check_aligned
from gdbext.errors import (
    AlreadyMappedError,
    EntryInUseError,
    FrameAllocationError,
    HugePageForbiddenError,
    InputError,
    NonCanonicalAddressError,
    NotMappedError,
    PageSizeMismatchError,
    ParentHugePageError,
    PhysMemoryError,
    ReadOnlyError,
    TableInTheWayError,
)
from gdbext.flags import (
    FLAGS_MASK,
    HUGE_PAGE,
    NO_EXECUTE,
    PAT_LARGE,
    PRESENT,
    PageTableFlags,
)
from gdbext.geometry import (
    ENTRIES_PER_TABLE,
    ENTRY_SIZE,
    LEAF_LEVEL_OF_SIZE,
    SIZE_4K,
    TABLE_SIZE,
    PagingGeometry,
    entry_span,
    index_shift,
)
from gdbext.mapper import TABLE_STRUCT, FrameAllocator, PhysMapper, is_read_only
from gdbext.x86.entries import (
    PERM_BITS,
    EntryRules,
    frame_address,
    huge_forbidden,
    is_leaf,
    is_link,
    link_address,
)
from gdbext.x86.records import CleanUp, Unmapped, WalkStep
from gdbext.x86.tlbflush import Flush, FlushAll, FlushHook, FlushPage

__all__ = ["FLUSH_PAGE_CEILING", "PageTableEditor"]

_U64 = struct.Struct("<Q")
#: Above this many pages a change asks for a full flush instead of one per page (Linux: 33).
FLUSH_PAGE_CEILING = 33


class PageTableEditor:
    """The changing operations of a page table (see the module docstring).

    A mixin: the class that inherits it provides the attributes below, table reads and
    ``_write``, through which every write goes so that its caches stay right.
    """

    mapper: PhysMapper
    root: int
    levels: int
    nxe: bool
    max_phys_bits: int
    allow_writes: bool
    flush_hook: FlushHook | None
    geometry: PagingGeometry
    rules: EntryRules
    addr_mask: int

    def read_table(self, table: int) -> tuple[int, ...]:
        raise NotImplementedError

    def read_entry(self, table: int, index: int) -> int:
        raise NotImplementedError

    def _check_canonical(self, vaddr: int) -> None:
        raise NotImplementedError

    def _write(self, paddr: int, data: bytes) -> None:
        raise NotImplementedError

    def _check_writable(self) -> None:
        if is_read_only(self.mapper):
            raise ReadOnlyError("refusing to change page tables: the backend is read-only")
        if not self.allow_writes:
            raise ReadOnlyError(
                "refusing to change page tables: this page table was not opened for writing "
                "(allow_writes=True)"
            )

    def _notify(self, flushes: tuple[Flush, ...]) -> tuple[Flush, ...]:
        if self.flush_hook is not None:
            for flush in flushes:
                self.flush_hook(flush)
        return flushes

    def _write_entry(self, table: int, index: int, value: int) -> None:
        self._write(table + index * ENTRY_SIZE, _U64.pack(value))

    def _check_leaf_args(self, vaddr: int, paddr: int, length: int, page_size: int) -> int:
        """Validate a mapping request; return the leaf level."""
        level = LEAF_LEVEL_OF_SIZE.get(page_size)
        if level is None:
            raise InputError(f"page size 0x{page_size:x} is not 4K, 2M or 1G")
        check_aligned(vaddr, page_size, "virtual address")
        check_aligned(paddr, page_size, "physical address")
        if length <= 0 or length % page_size:
            raise InputError(f"length 0x{length:x} is not a positive multiple of 0x{page_size:x}")
        self._check_canonical(vaddr)
        self._check_canonical(vaddr + length - 1)
        if vaddr < self.geometry.lower_half_end <= vaddr + length - 1:
            raise NonCanonicalAddressError(self.geometry.lower_half_end, self.geometry.va_bits)
        if paddr + length > 1 << self.max_phys_bits:
            raise InputError(
                f"physical range 0x{paddr:x}+0x{length:x} exceeds MAXPHYADDR "
                f"({self.max_phys_bits} bits)"
            )
        return level

    def _find_table(self, vaddr: int, level: int) -> tuple[int | None, list[WalkStep]]:
        """The table at ``level`` that maps ``vaddr``, or ``None`` if a parent entry is zero.

        Raises for a parent that is a huge page or holds a non-present, non-zero entry.
        """
        table = self.root
        steps: list[WalkStep] = []
        for lvl in range(self.levels, level, -1):
            index = (vaddr >> index_shift(lvl)) & 0x1FF
            entry = self.read_entry(table, index)
            steps.append(WalkStep(lvl, table, index, entry))
            if entry == 0:
                return None, steps
            if not entry & PRESENT:
                raise EntryInUseError(vaddr, lvl, entry)
            rules = self.rules.level(lvl)
            if huge_forbidden(entry, rules):
                raise HugePageForbiddenError(vaddr, lvl, entry)
            if is_leaf(entry, rules):
                raise ParentHugePageError(vaddr, lvl, entry)
            table = link_address(entry, rules)
        return table, steps

    def map(
        self,
        vaddr: int,
        paddr: int,
        page_size: int,
        flags: PageTableFlags | int,
        allocator: FrameAllocator,
    ) -> tuple[Flush, ...]:
        """Map one page of ``page_size`` (4K, 2M or 1G) at ``vaddr`` to ``paddr``.

        PRESENT is implied and HUGE_PAGE follows from the size. Missing parent tables are
        allocated and zeroed; WRITABLE and USER_ACCESSIBLE of ``flags`` are ORed into every
        parent entry so that the leaf's permissions are reachable (x86 ANDs them). NO_EXECUTE
        of a parent is never cleared (that would make its other pages executable): a page
        under such a parent stays non-executable, as :meth:`translate` then reports.

        :raises AlreadyMappedError: the slot holds a present entry.
        :raises EntryInUseError: the slot, or a parent slot, is non-present but not empty.
        :raises ParentHugePageError: a parent entry maps a huge page.
        :raises FrameAllocationError: no frame for a new table (nothing is changed then).
        :raises MisalignedAddressError: ``vaddr`` or ``paddr`` not aligned to ``page_size``.
        :raises InputError: bad flags (address bits; NO_EXECUTE without EFER.NXE).
        :returns: the TLB flushes required (already passed to the flush hook).
        """
        return self.map_range(vaddr, paddr, page_size, page_size, flags, allocator)

    def map_range(
        self,
        vaddr: int,
        paddr: int,
        length: int,
        page_size: int,
        flags: PageTableFlags | int,
        allocator: FrameAllocator,
    ) -> tuple[Flush, ...]:
        """Map ``length`` bytes at ``vaddr`` to ``paddr`` with pages of ``page_size``.

        Like :meth:`map` for each page, but writes each leaf table once. The whole request is
        checked, and every needed table frame allocated, before anything is written: an error
        leaves the tables as they were.
        """
        self._check_writable()
        leaf_level = self._check_leaf_args(vaddr, paddr, length, page_size)
        flags = int(flags)
        if flags & ~FLAGS_MASK:
            raise InputError(f"flags 0x{flags:x} have address bits set")
        if flags & NO_EXECUTE and not self.nxe:
            raise InputError("NO_EXECUTE is a reserved bit without EFER.NXE")
        if page_size == SIZE_4K and flags & HUGE_PAGE:
            raise InputError("HUGE_PAGE follows from the page size; a 4 KiB page cannot have it")
        leaf_template = flags | PRESENT | (HUGE_PAGE if page_size != SIZE_4K else 0)
        parent_bits = PRESENT | (flags & PERM_BITS)
        table_span = entry_span(leaf_level + 1)
        end = vaddr + length

        # Phase 1: check every slot; count the tables to create.
        missing: set[tuple[int, int]] = set()
        chunk = vaddr
        while chunk < end:
            chunk_end = min(end, (chunk // table_span + 1) * table_span)
            table, steps = self._find_table(chunk, leaf_level)
            if table is None:
                zero_level = steps[-1].level
                for lvl in range(zero_level - 1, leaf_level - 1, -1):
                    missing.add((lvl, chunk >> index_shift(lvl + 1)))
            else:
                entries = self.read_table(table)
                shift = index_shift(leaf_level)
                for index in range(
                    (chunk >> shift) & 0x1FF, ((chunk_end - 1) >> shift & 0x1FF) + 1
                ):
                    entry = entries[index]
                    if entry & PRESENT:
                        where = (chunk & ~(table_span - 1)) + (index << shift)
                        if not is_leaf(entry, self.rules.level(leaf_level)):
                            raise TableInTheWayError(where, leaf_level, entry)
                        raise AlreadyMappedError(where, leaf_level, entry)
                    if entry:
                        raise EntryInUseError(
                            (chunk & ~(table_span - 1)) + (index << shift), leaf_level, entry
                        )
            chunk = chunk_end

        # Phase 2: allocate every new table up front.
        top_missing = max((lvl for lvl, _ in missing), default=leaf_level)
        frames = self._allocate(allocator, len(missing), vaddr, top_missing)

        # Phase 3: write.
        changed_parent = False
        pages = 0
        chunk = vaddr
        pa = paddr
        while chunk < end:
            chunk_end = min(end, (chunk // table_span + 1) * table_span)
            table, changed = self._descend_creating(chunk, leaf_level, parent_bits, frames)
            changed_parent |= changed
            shift = index_shift(leaf_level)
            i0 = (chunk >> shift) & 0x1FF
            n = (chunk_end - chunk) >> shift
            new_entries = range(pa | leaf_template, (pa | leaf_template) + n * page_size, page_size)
            if n == ENTRIES_PER_TABLE:
                self._write(table, TABLE_STRUCT.pack(*new_entries))
            else:
                self._write(table + i0 * ENTRY_SIZE, struct.pack(f"<{n}Q", *new_entries))
            pages += n
            pa += n * page_size
            chunk = chunk_end
        assert not frames
        if changed_parent or pages > FLUSH_PAGE_CEILING:
            return self._notify((FlushAll(),))
        return self._notify(tuple(FlushPage(v, page_size) for v in range(vaddr, end, page_size)))

    def _descend_creating(
        self, vaddr: int, level: int, parent_bits: int, frames: list[int]
    ) -> tuple[int, bool]:
        """The level-``level`` table mapping ``vaddr``, creating missing tables from ``frames``.

        ``parent_bits`` are ORed into every entry on the way. The caller has checked the path
        (:meth:`_find_table`) and allocated the frames. Returns the table and whether an
        intermediate entry changed.
        """
        table = self.root
        changed = False
        for lvl in range(self.levels, level, -1):
            index = (vaddr >> index_shift(lvl)) & 0x1FF
            entry = self.read_entry(table, index)
            if entry == 0:
                new = frames.pop()
                self._write(new, bytes(TABLE_SIZE))
                self._write_entry(table, index, new | parent_bits)
                changed = True
                table = new
                continue
            if entry & parent_bits != parent_bits:
                self._write_entry(table, index, entry | parent_bits)
                changed = True
            table = link_address(entry, self.rules.level(lvl))
        return table, changed

    def _allocate(self, allocator: FrameAllocator, count: int, vaddr: int, level: int) -> list[int]:
        """``count`` frames, or none at all and :class:`FrameAllocationError`."""
        frames: list[int] = []
        for _ in range(count):
            frame = allocator.allocate_frame()
            if frame is None:
                for got in frames:
                    allocator.deallocate_frame(got)
                raise FrameAllocationError(vaddr, level)
            frames.append(frame)
        return frames

    def link_table(
        self,
        vaddr: int,
        level: int,
        table: int,
        flags: PageTableFlags | int,
        allocator: FrameAllocator,
    ) -> tuple[Flush, ...]:
        """Make the level-``level`` entry that maps ``vaddr`` link the existing ``table``.

        This shares a lower table between several entries, as Linux's ESPFIX area and KASAN
        shadow do. ``table`` is a level ``level - 1`` table; ``flags`` are the entry's flags
        (PRESENT implied). Missing parents are created and WRITABLE/USER_ACCESSIBLE propagated
        as :meth:`map` does. The slot must be zero.

        :raises AlreadyMappedError: the slot holds a present entry.
        :raises EntryInUseError: the slot is non-present but not empty.
        """
        self._check_writable()
        if not 2 <= level <= self.levels:
            raise InputError(f"a table link lives at level 2..{self.levels}, not {level}")
        self._check_canonical(vaddr)
        check_aligned(table, TABLE_SIZE, "table address")
        flags = int(flags)
        if flags & ~FLAGS_MASK or flags & HUGE_PAGE:
            raise InputError(f"flags 0x{flags:x} are not flags of a table link")
        if flags & NO_EXECUTE and not self.nxe:
            raise InputError("NO_EXECUTE is a reserved bit without EFER.NXE")
        if table & ~self.addr_mask:
            raise InputError(f"table 0x{table:x} is beyond MAXPHYADDR")
        vaddr &= ~(entry_span(level) - 1)
        parent, steps = self._find_table(vaddr, level)
        if parent is None:
            missing = steps[-1].level - level
        else:
            missing = 0
            entry = self.read_entry(parent, (vaddr >> index_shift(level)) & 0x1FF)
            if entry & PRESENT:
                raise AlreadyMappedError(vaddr, level, entry)
            if entry:
                raise EntryInUseError(vaddr, level, entry)
        frames = self._allocate(allocator, missing, vaddr, level)
        parent_bits = PRESENT | (flags & PERM_BITS)
        parent, _ = self._descend_creating(vaddr, level, parent_bits, frames)
        self._write_entry(parent, (vaddr >> index_shift(level)) & 0x1FF, table | flags | PRESENT)
        return self._notify((FlushAll(),))

    def _find_leaf(self, vaddr: int) -> tuple[list[WalkStep], int]:
        """The steps to the present leaf mapping ``vaddr`` and its level."""
        self._check_canonical(vaddr)
        table = self.root
        steps: list[WalkStep] = []
        for level in range(self.levels, 0, -1):
            index = (vaddr >> index_shift(level)) & 0x1FF
            entry = self.read_entry(table, index)
            steps.append(WalkStep(level, table, index, entry))
            if not entry & PRESENT:
                raise NotMappedError(vaddr, level, entry)
            rules = self.rules.level(level)
            if huge_forbidden(entry, rules):
                raise HugePageForbiddenError(vaddr, level, entry)
            if is_leaf(entry, rules):
                return steps, level
            table = link_address(entry, rules)
        raise AssertionError("unreachable")

    def _leaf_for(self, vaddr: int, page_size: int | None) -> tuple[list[WalkStep], int, int]:
        steps, level = self._find_leaf(vaddr)
        size = entry_span(level)
        if page_size is not None and page_size != size:
            raise PageSizeMismatchError(vaddr, level, steps[-1].entry, page_size)
        check_aligned(vaddr, size, "virtual address")
        return steps, level, size

    def unmap(self, vaddr: int, page_size: int | None = None) -> Unmapped:
        """Remove the leaf that maps the page at ``vaddr`` and return what it mapped.

        ``vaddr`` must be the start of the page. ``page_size``, if given, must match.
        Tables are never freed here; see :meth:`clean_up`.
        """
        self._check_writable()
        steps, level, size = self._leaf_for(vaddr, page_size)
        leaf = steps[-1]
        self._write_entry(leaf.table, leaf.index, 0)
        frame = frame_address(leaf.entry, self.rules.level(level))
        flushes = self._notify((FlushPage(vaddr, size),))
        return Unmapped(vaddr, frame, size, leaf.entry, flushes)

    def update_flags(
        self, vaddr: int, flags: PageTableFlags | int, page_size: int | None = None
    ) -> tuple[Flush, ...]:
        """Replace the flags of the present leaf at ``vaddr`` (its address is kept).

        PRESENT is implied and HUGE_PAGE follows from the page size; WRITABLE and
        USER_ACCESSIBLE are ORed into the parents as :meth:`map` does.
        """
        self._check_writable()
        flags = int(flags)
        if flags & ~FLAGS_MASK:
            raise InputError(f"flags 0x{flags:x} have address bits set")
        if flags & NO_EXECUTE and not self.nxe:
            raise InputError("NO_EXECUTE is a reserved bit without EFER.NXE")
        steps, level, size = self._leaf_for(vaddr, page_size)
        if size == SIZE_4K and flags & HUGE_PAGE:
            raise InputError("HUGE_PAGE follows from the page size; a 4 KiB page cannot have it")
        leaf = steps[-1]
        frame_bits = frame_address(leaf.entry, self.rules.level(level))
        if size != SIZE_4K:
            frame_bits |= leaf.entry & PAT_LARGE  # keep the PAT bit of a large page
        new = frame_bits | flags | PRESENT | (HUGE_PAGE if size != SIZE_4K else 0)
        parent_bits = PRESENT | (flags & PERM_BITS)
        changed_parent = False
        for step in steps[:-1]:
            if step.entry & parent_bits != parent_bits:
                self._write_entry(step.table, step.index, step.entry | parent_bits)
                changed_parent = True
        self._write_entry(leaf.table, leaf.index, new)
        if changed_parent:
            return self._notify((FlushAll(),))
        return self._notify((FlushPage(vaddr, size),))

    def is_table_empty(self, table: int) -> bool:
        """True if all 512 entries of ``table`` are zero (a non-present, non-zero one counts)."""
        return not any(self.read_table(table))

    def clean_up(self, allocator: FrameAllocator, range: AddrRange | None = None) -> CleanUp:
        """Free every empty intermediate table under ``range`` (all by default).

        A table is freed when all 512 of its entries are zero; its parent entry is zeroed and
        the frame given back to ``allocator``. Parents are re-examined bottom-up, so a chain of
        empty tables goes at once. The root is never freed; neither is a table that more than
        one entry links (it is reported in :attr:`CleanUp.shared`), nor one reached through a
        recursive entry. Anything freed needs a full flush, which is reported and passed to the
        flush hook: a paging-structure cache may still hold the freed tables.
        """
        self._check_writable()
        lo, hi = (0, 1 << 64) if range is None else (range.start, range.end)
        links = self._count_links()
        freed: list[int] = []
        shared: list[int] = []
        canon = self.geometry.canonicalize
        top = self.levels
        shift = index_shift(top)
        for index in _indices():
            base = canon(index << shift)
            if base < hi and lo < base + (1 << shift):
                self._clean_entry(self.root, top, index, base, lo, hi, links, freed, shared, [])
        flushes: tuple[Flush, ...] = (FlushAll(),) if freed else ()
        for frame in freed:
            allocator.deallocate_frame(frame)
        return CleanUp(tuple(freed), tuple(sorted(set(shared))), self._notify(flushes))

    def _count_links(self) -> dict[int, int]:
        """How many present table-pointer entries link each table (not following recursion)."""
        links: dict[int, int] = {}
        seen: set[tuple[int, int]] = set()

        def visit(table: int, level: int, path: list[int]) -> None:
            if (table, level) in seen:
                return
            seen.add((table, level))
            try:
                entries = self.read_table(table)
            except PhysMemoryError:
                return
            rules = self.rules.level(level)
            for entry in entries:
                if not is_link(entry, rules):
                    continue
                child = link_address(entry, rules)
                links[child] = links.get(child, 0) + 1
                if level > 2 and child not in path:
                    visit(child, level - 1, [*path, child])

        visit(self.root, self.levels, [self.root])
        return links

    def _clean_entry(
        self,
        table: int,
        level: int,
        index: int,
        base: int,
        lo: int,
        hi: int,
        links: dict[int, int],
        freed: list[int],
        shared: list[int],
        path: list[int],
    ) -> None:
        entry = self.read_entry(table, index)
        rules = self.rules.level(level)
        if not is_link(entry, rules) or huge_forbidden(entry, rules):
            return
        child = link_address(entry, rules)
        if child == table or child in path or child == self.root:
            return
        try:
            child_entries = self.read_table(child)
        except PhysMemoryError:
            return
        if level - 1 > 1:
            shift = index_shift(level - 1)
            first = 0 if lo <= base else (lo - base) >> shift
            last = 511 if hi >= base + (1 << (shift + 9)) else (hi - 1 - base) >> shift
            for i in _indices(first, last + 1):
                if child_entries[i] & PRESENT:
                    self._clean_entry(
                        child,
                        level - 1,
                        i,
                        base + (i << shift),
                        lo,
                        hi,
                        links,
                        freed,
                        shared,
                        [*path, table],
                    )
            child_entries = self.read_table(child)
        if any(child_entries):
            return
        if links.get(child, 0) > 1:
            shared.append(child)
            return
        self._write_entry(table, index, 0)
        freed.append(child)


def _indices(start: int = 0, stop: int = ENTRIES_PER_TABLE) -> Iterable[int]:
    """Table indices; a name for ``range`` where a parameter of that name shadows it."""
    return range(start, stop)
