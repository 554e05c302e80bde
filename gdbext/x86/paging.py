"""The paging engine: one x86-64 page table, 4- or 5-level, over an injected physical mapper.

:class:`X86PageTable` translates, walks and (when explicitly allowed) changes page tables:

- :meth:`~X86PageTable.translate` walks one address the way the MMU does and reports every step
  and the *effective* permissions (user and writable ANDed over all levels, no-execute ORed over
  all levels and honoured only with EFER.NXE);
- :meth:`~X86PageTable.iter_runs` and :meth:`~X86PageTable.iter_mappings` stream every leaf in
  virtual-address order, descending only into subtrees that meet the requested range, reading
  each shared table once per walk, and reporting self-referencing (recursive) entries instead of
  following them (:mod:`gdbext.x86.walk`);
- :meth:`~X86PageTable.map_range`, :meth:`~X86PageTable.map`, :meth:`~X86PageTable.unmap`,
  :meth:`~X86PageTable.update_flags` and :meth:`~X86PageTable.clean_up` change tables, report the
  TLB flushes they require and hand each to the flush hook (:mod:`gdbext.x86.mutate`).

What an entry means is :mod:`gdbext.x86.entries`' alone; the results are :mod:`gdbext.x86.records`.

**Non-present entries.** An entry maps something only if PRESENT is set. A non-present entry
with other bits set belongs to the OS (a Linux swap or migration entry, say): gdbext never
reports it as mapped, never overwrites it, never updates it and never frees a table holding one.

**Ownership.** A page table that may be changed (``allow_writes=True``) assumes exclusive
ownership of the root frame and of every table below it, and a mapper that gives non-aliased
access to them for the table's lifetime; nothing else may change them meanwhile. gdbext never
writes unless the caller opted in, and never through a mapper that declares ``read_only``.

>>> from gdbext.flags import PageTableFlags
>>> from gdbext_sim.memory import SparsePhysMemory, TopDownFrameAllocator
>>> mem = SparsePhysMemory(16 << 20)
>>> alloc = TopDownFrameAllocator(mem)
>>> pt = X86PageTable(mem, alloc.allocate_frame(), 4, allow_writes=True)
>>> _ = pt.map(0xffff800000000000, 0x200000, SIZE_2M, PageTableFlags.WRITABLE, alloc)
>>> t = pt.translate(0xffff800000001234)
>>> hex(t.paddr), t.page_size == SIZE_2M, t.writable, t.user
('0x201234', True, True, False)
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import cast

from gdbext.addr import AddrRange
from gdbext.cpu import CpuState
from gdbext.errors import (
    AddressOutOfRangeError,
    HugePageForbiddenError,
    InputError,
    MisalignedAddressError,
    NonCanonicalAddressError,
    NotCapturedError,
    NotMappedError,
    PagingLevelsError,
    PhysMemoryError,
    ReservedBitsError,
    TableNotCapturedError,
    TableOutsideRamError,
    TranslationError,
    WalkOptionError,
)
from gdbext.flags import FLAGS_MASK, HUGE_PAGE, NO_EXECUTE, PRESENT, USER_ACCESSIBLE, WRITABLE
from gdbext.geometry import (
    ENTRY_SIZE,
    SIZE_1G,
    SIZE_2M,
    SIZE_4K,
    TABLE_SIZE,
    PagingGeometry,
    geometry,
)
from gdbext.mapper import TABLE_STRUCT, PhysMapper
from gdbext.permfilter import PermFilter
from gdbext.x86.entries import (
    MAX_PHYS_BITS,
    PERM_BITS,
    PERM_KEY,
    ROOT_ACCESS,
    EntryRules,
    access_by_leaf,
    entry_rules,
)
from gdbext.x86.mutate import PageTableEditor
from gdbext.x86.records import (
    Anomaly,
    LeafRun,
    Mapping,
    Translation,
    WalkRecord,
    WalkStep,
    new_mapping,
    new_step,
    new_translation,
)
from gdbext.x86.runs import SummaryStore
from gdbext.x86.tlbflush import FlushHook
from gdbext.x86.walk import Walker, WalkMemo, reachable_tables

__all__ = ["SIZE_1G", "SIZE_2M", "SIZE_4K", "X86PageTable"]

_U64 = struct.Struct("<Q")
#: A table held in the cache: its 512 entries, indexable. On a little-endian host, the raw bytes
#: seen as unsigned 64-bit integers (4 KiB a table, an entry read in C); else unpacked.
_as_entries: Callable[[bytes], Sequence[int]] = (
    (lambda raw: memoryview(raw).cast("Q"))
    if sys.byteorder == "little" and struct.calcsize("Q") == ENTRY_SIZE
    else TABLE_STRUCT.unpack
)
#: A walk down to a table (a page table, or a page directory): (its entries, its address, the
#: steps above it, the effective permissions of a leaf in it by the leaf's ``PERM_KEY`` bits
#: (:func:`~gdbext.x86.entries.access_by_leaf`), the permissions so far, the entry linking it).
_ByLeaf = dict[int, tuple[bool, bool, bool]]
_Prefix = tuple[Sequence[int], int, tuple[WalkStep, ...], _ByLeaf, int, int]
#: The walk options ``aliases`` accepts.
_ALIAS_MODES = ("expand", "collapse")


class X86PageTable(PageTableEditor):
    """An x86-64 page table rooted at the physical address ``root``.

    :param mapper: physical memory (see :class:`~gdbext.mapper.PhysMapper`).
    :param root: physical address of the top-level table (CR3 with PCID bits masked).
    :param levels: 4, or 5 for LA57.
    :param nxe: EFER.NXE. With it, bit 63 means no-execute; without it, bit 63 is reserved.
    :param max_phys_bits: MAXPHYADDR; address bits at or above it are reserved.
    :param phys_bits_known: whether ``max_phys_bits`` is the CPU's (else 52 assumed: see
        :class:`~gdbext.errors.TableOutsideRamError`).
    :param allow_writes: the caller's explicit opt-in to changes (see the module docstring).
    :param flush_hook: called with every TLB flush a change requires.
    :param cache: keep the tables :meth:`translate` reads (at most ``cache_tables`` of them) and
        its results (at most ``cache_pages`` pages), so that translations repeated at one moment
        are cheap. Changes made through this object keep the cache right; after any other
        change of the memory call :meth:`invalidate_cache`.
    :param summaries: leaf-table summaries by content (:data:`~gdbext.x86.runs.SummaryStore`).
    """

    def __init__(
        self,
        mapper: PhysMapper,
        root: int,
        levels: int = 4,
        *,
        nxe: bool = True,
        max_phys_bits: int = MAX_PHYS_BITS,
        phys_bits_known: bool = True,
        allow_writes: bool = False,
        flush_hook: FlushHook | None = None,
        cache: bool = False,
        cache_tables: int = 8192,
        cache_pages: int = 1 << 16,
        summaries: SummaryStore | None = None,
    ) -> None:
        if levels not in (4, 5):
            raise PagingLevelsError(levels)
        self.geometry: PagingGeometry = geometry(levels)
        #: The entry rules of this CPU configuration (:mod:`gdbext.x86.entries`).
        self.rules: EntryRules = entry_rules(max_phys_bits, nxe)
        self.mapper = mapper
        self.levels = levels
        self.nxe = nxe
        self.max_phys_bits = max_phys_bits
        #: False when ``max_phys_bits`` is an assumption (the target does not say its CPU's
        #: MAXPHYADDR): errors then say which address bits a narrower CPU reserves.
        self.phys_bits_known = phys_bits_known
        self.allow_writes = allow_writes
        self.flush_hook = flush_hook
        self.addr_mask = self.rules.addr_mask
        if root & ~self.addr_mask:
            raise MisalignedAddressError(root, SIZE_4K, "page-table root")
        self.root = root
        self._sign_shift = self.geometry.va_bits - 1
        self._canon_tops = (0, (1 << (65 - self.geometry.va_bits)) - 1)
        # Per level, top first, what the translation loop needs: (level, index shift, reserved
        # bits of a link, of a leaf, whether always a leaf, whether PS makes a leaf, frame mask
        # of a leaf, page size): the rules of :mod:`gdbext.x86.entries`, flattened.
        self._hot = tuple(
            (
                r.level,
                r.shift,
                r.link_reserved,
                r.leaf_reserved,
                r.always_leaf,
                r.ps_leaf,
                r.frame_mask,
                r.span,
            )
            for r in self.rules.top_down(levels)
        )
        #: Tables read, by physical address (only with ``cache=True``).
        self._cache: dict[int, Sequence[int]] | None = {} if cache else None
        #: Translations by 4 KiB page number (only with ``cache=True``): a software TLB.
        self._memo: dict[int, Translation] | None = {} if cache else None
        #: By 2 MiB region (only with ``cache=True``), as the MMU's paging-structure cache: the
        #: walk down to the region's page table (:data:`_Prefix`), or the large page mapping it.
        self._regions: dict[int, Translation | _Prefix] | None = {} if cache else None
        #: By 1 GiB region, the same: the walk down to its page directory, or its 1 GiB page.
        self._uppers: dict[int, Translation | _Prefix] = {}
        #: A page-table entry masked by this is PRESENT exactly when it is a valid leaf.
        self._pt_check = PRESENT | self.rules.level(1).leaf_reserved
        #: What walks share while the memory does not change (only with ``cache=True``).
        self._walk_memo = WalkMemo(cache_tables, summaries) if cache else None
        self.cache_tables = cache_tables
        self.cache_pages = cache_pages

    @classmethod
    def from_cpu(
        cls,
        mapper: PhysMapper,
        cpu: CpuState,
        *,
        root: int | None = None,
        levels: int | None = None,
        **kwargs: object,
    ) -> X86PageTable:
        """The page table ``cpu`` uses: root from CR3, levels from CR4.LA57, NX from EFER.NXE,
        MAXPHYADDR from the CPU's ``max_phys_bits`` (52, marked as assumed, when unknown).

        ``root`` and ``levels`` override what the CPU state says, as do ``max_phys_bits`` and
        ``phys_bits_known`` in ``kwargs``.
        """
        if root is None:
            root = cpu.root
        if root is None:
            raise InputError("CR3 is unknown; give the page-table root explicitly")
        kwargs.setdefault("max_phys_bits", cpu.max_phys_bits or MAX_PHYS_BITS)
        kwargs.setdefault("phys_bits_known", cpu.max_phys_bits is not None)
        return cls(
            mapper,
            root,
            cpu.levels if levels is None else levels,
            nxe=cpu.nxe,
            **kwargs,  # type: ignore[arg-type]
        )

    def with_root(self, root: int, *, cache: bool | None = None) -> X86PageTable:
        """The page table rooted at ``root`` in the same memory, paging mode and CPU
        configuration (another process's, the user half of a PTI pair), read-only.

        ``cache`` defaults to whether this page table caches. Two that cache share what their
        walks summarise (:class:`~gdbext.x86.walk.WalkMemo`), which a change made through this
        one clears for both: the tables below the roots are the same memory (a kernel's half
        is shared by every process).
        """
        table = X86PageTable(
            self.mapper,
            root,
            self.levels,
            nxe=self.nxe,
            max_phys_bits=self.max_phys_bits,
            phys_bits_known=self.phys_bits_known,
            cache=self._cache is not None if cache is None else cache,
            cache_tables=self.cache_tables,
            cache_pages=self.cache_pages,
        )
        if self._walk_memo is not None and table._walk_memo is not None:
            table._walk_memo = self._walk_memo
        return table

    # -- Reading -----------------------------------------------------------------------------

    def read_table(self, table: int) -> tuple[int, ...]:
        """The 512 entries of the table at physical address ``table``.

        :raises PhysMemoryError: the table is not in memory (``NotCapturedError``: not in the
            dump).
        """
        return TABLE_STRUCT.unpack(self.mapper.read(table, TABLE_SIZE))

    def read_entry(self, table: int, index: int) -> int:
        """Entry ``index`` of the table at physical address ``table`` (through the table cache
        when the page table has one)."""
        cache = self._cache
        if cache is None:
            return int(_U64.unpack(self.mapper.read(table + index * ENTRY_SIZE, ENTRY_SIZE))[0])
        entries = cache.get(table)
        if entries is None:
            entries = self._load(table)
        return entries[index]

    def _load(self, table: int) -> Sequence[int]:
        """Read the table at ``table`` into the cache (the oldest table goes when it is full)."""
        cache = self._cache
        assert cache is not None
        entries = _as_entries(self.mapper.read(table, TABLE_SIZE))
        if len(cache) >= self.cache_tables:
            del cache[next(iter(cache))]
        cache[table] = entries
        return entries

    def translate(self, vaddr: int) -> Translation:
        """Walk ``vaddr`` as the MMU does.

        :raises AddressOutOfRangeError: ``vaddr`` is negative or does not fit in 64 bits.
        :raises NonCanonicalAddressError: ``vaddr`` is not canonical for this paging mode.
        :raises NotMappedError: an entry on the way is not present (``level``, ``entry``).
        :raises HugePageForbiddenError: HUGE_PAGE in a PML4 or PML5 entry.
        :raises ReservedBitsError: reserved bits set in an entry on the way.
        :raises TableOutsideRamError: an entry points to a table outside physical memory.
        """
        memo = self._memo
        if memo is None:
            if not 0 <= vaddr < 1 << 64 or (vaddr >> self._sign_shift) not in self._canon_tops:
                self._check_canonical(vaddr)
            result = self._walk(vaddr, None)
            assert isinstance(result, Translation)  # a prefix comes only with the caches
            return result
        # The caches hold canonical addresses only, and a 4 KiB page (a 2 MiB, a 1 GiB region)
        # holding one is canonical all through: only a walk from the root checks.
        page = vaddr >> 12
        hit = memo.get(page)
        if hit is not None:
            if hit[0] == vaddr:
                return hit  # immutable: the same answer again
            return new_translation((vaddr, hit[1] + (vaddr - hit[0]), *hit[2:]))
        region = self._regions.get(page >> 9)  # type: ignore[union-attr]  # kept with the memo
        if region is None:
            region = self._region(vaddr)
        if type(region) is tuple:  # the region's page table: the walk's level-1 step, inlined
            entries, table, above, by_leaf, _, _ = region
            index = page & 0x1FF
            entry = entries[index]
            if entry & self._pt_check == PRESENT:
                user, writable, exe = by_leaf[entry & PERM_KEY]
                paddr = (entry & self.addr_mask) | (vaddr & 0xFFF)
                steps = (*above, new_step((1, table, index, entry)))
                result = new_translation(
                    (vaddr, paddr, SIZE_4K, entry, 1, user, writable, exe, steps)
                )
            else:
                self._walk(vaddr, region)  # raises the error
                raise AssertionError("unreachable: the entry is no valid leaf")
        else:  # in a large page
            large = cast(Translation, region)
            result = new_translation((vaddr, large[1] + (vaddr - large[0]), *large[2:]))
        if len(memo) >= self.cache_pages:
            del memo[next(iter(memo))]
        memo[page] = result
        return result

    def _region(self, vaddr: int) -> Translation | _Prefix:
        """What the caches keep for the 2 MiB region of ``vaddr``, walked from the root or from
        its 1 GiB region's page directory: the walk down to its page table, or the large page
        that maps it (the page table's entry is not read)."""
        upper = self._uppers.get(vaddr >> 30)
        if upper is None:
            self._check_canonical(vaddr)
        elif isinstance(upper, Translation):
            return upper
        return self._walk(vaddr, upper, to_region=True)

    def _check_canonical(self, vaddr: int) -> None:
        if not 0 <= vaddr < 1 << 64:
            raise AddressOutOfRangeError(vaddr, self.geometry.va_bits)
        if not self.geometry.is_canonical(vaddr):
            raise NonCanonicalAddressError(vaddr, self.geometry.va_bits)

    def _walk(
        self, vaddr: int, start: _Prefix | None, to_region: bool = False
    ) -> Translation | _Prefix:
        """The MMU's walk for ``vaddr``: from the root, or from the table that ``start`` (a
        prefix from the region caches) names. With the caches, it remembers what it read for
        the 1 GiB and the 2 MiB region of ``vaddr``; ``to_region`` stops it at the page table
        (read), whose walk prefix it then returns."""
        cache = self._cache
        pending: tuple[int, tuple[WalkStep, ...], _ByLeaf, int, int] | None = None
        if start is None:
            table, acc, steps, parent_entry = self.root, ROOT_ACCESS, [], None
            hot = self._hot
        else:
            _, table, above, _, acc, parent_entry = start
            steps = list(above)
            hot = self._hot[len(above) :]
        nx_bit = self.rules.nx_bit
        addr_mask = self.addr_mask
        for level, shift, link_rsvd, leaf_rsvd, always_leaf, ps_leaf, frame_mask, size in hot:
            index = (vaddr >> shift) & 0x1FF
            try:
                if cache is None:
                    entry = self.read_entry(table, index)
                else:
                    entries = cache.get(table)
                    if entries is None:
                        entries = self._load(table)
                    entry = entries[index]
                    if pending is not None:  # the region's table, now read
                        prefix: _Prefix = (entries, *pending)
                        self._remember(vaddr, level + 1, prefix)
                        if to_region and level == 1:
                            return prefix
                        pending = None
            except PhysMemoryError as exc:
                raise self._unreadable(exc, vaddr, level, parent_entry, table, steps) from None
            steps.append(new_step((level, table, index, entry)))
            if not entry & PRESENT:
                err: TranslationError = NotMappedError(vaddr, level, entry)
                err.steps = tuple(steps)
                raise err
            leaf = always_leaf or (ps_leaf and entry & HUGE_PAGE)  # entries.is_leaf
            bad = entry & (leaf_rsvd if leaf else link_rsvd)
            if bad:
                if bad & HUGE_PAGE and level >= 4:
                    err = HugePageForbiddenError(vaddr, level, entry)
                else:
                    err = ReservedBitsError(vaddr, level, entry, bad)
                err.steps = tuple(steps)
                raise err
            acc = (acc & entry & PERM_BITS) | ((acc | entry) & nx_bit)  # entries.fold
            if leaf:
                result = new_translation(
                    (
                        vaddr,
                        (entry & frame_mask) | (vaddr & (size - 1)),
                        size,
                        entry,
                        level,
                        bool(acc & USER_ACCESSIBLE),
                        bool(acc & WRITABLE),
                        not acc & NO_EXECUTE,
                        tuple(steps),
                    )
                )
                if cache is not None and level > 1:
                    self._remember(vaddr, level, result)
                return result
            parent_entry = entry
            table = entry & addr_mask
            if cache is not None and level <= 3:
                pending = (table, tuple(steps), access_by_leaf(acc, nx_bit), acc, entry)
        raise AssertionError("unreachable: level 1 is always a leaf")

    def _remember(self, vaddr: int, level: int, what: Translation | _Prefix) -> None:
        """Keep ``what`` for the 2 MiB (``level`` 2) or 1 GiB (``level`` 3) region of
        ``vaddr``: the large page mapping it, or the walk down to its table."""
        if level == 2:
            regions, key = self._regions, vaddr >> 21
            assert regions is not None
        else:
            regions, key = self._uppers, vaddr >> 30
        if len(regions) >= self.cache_pages:
            del regions[next(iter(regions))]
        regions[key] = what

    def _unreadable(
        self,
        exc: PhysMemoryError,
        vaddr: int,
        level: int,
        parent_entry: int | None,
        table: int,
        steps: list[WalkStep],
    ) -> TranslationError:
        """The error for a table a translation could not read."""
        at = level if parent_entry is None else level + 1
        err: TranslationError
        if isinstance(exc, NotCapturedError):
            err = TableNotCapturedError(vaddr, at, parent_entry, table)
        else:
            err = TableOutsideRamError(vaddr, at, parent_entry, table, self.phys_bits_known)
        err.steps = tuple(steps)
        return err

    def invalidate_cache(self) -> None:
        """Forget cached tables (after the memory changed behind this object's back)."""
        if self._cache is not None:
            self._cache.clear()
        if self._memo is not None:
            self._memo.clear()
        if self._regions is not None:
            self._regions.clear()
        self._uppers.clear()
        if self._walk_memo is not None:
            self._walk_memo.clear()

    def try_translate(self, vaddr: int) -> Translation | None:
        """:meth:`translate`, or ``None`` where it would raise a translation error."""
        try:
            return self.translate(vaddr)
        except (
            NotMappedError,
            ReservedBitsError,
            TableOutsideRamError,
            TableNotCapturedError,
            NonCanonicalAddressError,
        ):
            return None

    # -- Walking -----------------------------------------------------------------------------

    def iter_runs(
        self,
        range: AddrRange | None = None,
        *,
        aliases: str = "expand",
        ignore: int = 0,
        max_leaves: int | None = None,
        perm: PermFilter | None = None,
    ) -> Iterator[WalkRecord]:
        """Stream the leaves that meet ``range`` (all by default) in virtual-address order.

        Leaves come grouped as :class:`LeafRun` (consecutive leaves of one table, contiguous in
        VA and PA with equal flags); entries the walk did not follow come as :class:`Anomaly`.
        Each table is read once per walk however often it is linked. With
        ``aliases="collapse"``, an entry linking a table already walked is reported as an
        :class:`AliasRun` (consecutive links merged) instead of its leaves again.

        ``ignore`` names leaf bits (say ACCESSED and DIRTY) in which the leaves of one run may
        differ; a run then reports only its first leaf's entry. Renderers that do not show
        those bits use it to group leaves faster.

        ``max_leaves`` bounds the leaves produced: shared tables linked under shared tables can
        multiply into billions of leaves (an "alias bomb", malformed or hostile), and a walk that
        would produce more raises :class:`~gdbext.errors.WalkLimitError` instead of running for
        hours. Collapsed aliases do not count.

        ``perm`` keeps only leaves whose effective permissions pass the filter, and prunes: a
        subtree whose path already rules out every accepted combination is not read, so its
        leaves and anomalies are not reported. A collapsed alias is reported only when its
        path allows the same as the first walk's (with that walk's matching leaves counted);
        a link whose path allows something else is walked again, filtered.
        """
        if ignore & ~FLAGS_MASK or ignore & (PRESENT | HUGE_PAGE):
            raise WalkOptionError(
                "ignore",
                ignore,
                "ignore may only name flag bits other than PRESENT and HUGE_PAGE",
            )
        if aliases not in _ALIAS_MODES:
            raise WalkOptionError(
                "aliases", aliases, f"aliases must be 'expand' or 'collapse', not {aliases!r}"
            )
        lo, hi = (0, 1 << 64) if range is None else (range.start, range.end)
        walker = Walker(
            self.read_table,
            self.root,
            self.levels,
            self.rules,
            getattr(self.mapper, "prefetch", None),
            self._walk_memo,
        )
        return walker.runs(
            lo,
            hi,
            collapse=aliases == "collapse",
            keep=~ignore & ((1 << 64) - 1),
            max_leaves=max_leaves,
            perm=perm,
        )

    def iter_mappings(
        self,
        range: AddrRange | None = None,
        *,
        on_anomaly: Callable[[Anomaly], None] | None = None,
    ) -> Iterator[Mapping]:
        """Every leaf mapping that meets ``range``, one :class:`Mapping` per leaf, in VA order.

        Aliases are all reported. Entries the walk did not follow go to ``on_anomaly``.
        """
        for record in self.iter_runs(range):
            if type(record) is LeafRun:
                if record.count == 1:
                    yield new_mapping(
                        (
                            record.vaddr,
                            record.paddr,
                            record.page_size,
                            record.entry,
                            record.user,
                            record.writable,
                            record.executable,
                        )
                    )
                else:
                    yield from record.mappings()
            elif type(record) is Anomaly and on_anomaly is not None:
                on_anomaly(record)

    def tables(self) -> dict[int, int]:
        """Every page-table frame reachable from the root -> its level (the root included):
        see :func:`~gdbext.x86.walk.reachable_tables`."""
        return reachable_tables(self.read_table, self.root, self.levels, self.rules)

    # -- Changing (the operations are :class:`~gdbext.x86.mutate.PageTableEditor`'s) ---------

    def _write(self, paddr: int, data: bytes) -> None:
        """Every write of the engine goes through here, so the table cache stays right."""
        if self._memo:
            self._memo.clear()
        if self._regions:
            self._regions.clear()
        self._uppers.clear()
        if self._walk_memo is not None:
            self._walk_memo.clear()
        if self._cache is not None:
            self._cache.pop(paddr & ~(TABLE_SIZE - 1), None)
            self._cache.pop((paddr + len(data) - 1) & ~(TABLE_SIZE - 1), None)
            if len(data) > TABLE_SIZE:
                self._cache.clear()
        self.mapper.write(paddr, data)
