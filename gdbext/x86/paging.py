"""The paging engine: one x86-64 page table, 4- or 5-level, over an injected physical mapper.

:class:`X86PageTable` translates, walks and (when explicitly allowed) changes page tables:

- :meth:`~X86PageTable.translate` walks one address the way the MMU does and reports every step
  and the *effective* permissions (user and writable ANDed over all levels, no-execute ORed over
  all levels and honoured only with EFER.NXE);
- :meth:`~X86PageTable.iter_runs` and :meth:`~X86PageTable.iter_mappings` stream every leaf in
  virtual-address order, descending only into subtrees that meet the requested range, reading
  each shared table once per walk, and reporting self-referencing (recursive) entries instead of
  following them;
- :meth:`~X86PageTable.map_range`, :meth:`~X86PageTable.map`, :meth:`~X86PageTable.unmap`,
  :meth:`~X86PageTable.update_flags` and :meth:`~X86PageTable.clean_up` change tables, report the
  TLB flushes they require and hand each to the flush hook.

**Non-present entries.** An entry maps something only if PRESENT is set. A non-present entry
with other bits set belongs to the OS (a Linux swap or migration entry, say): gdbext never
reports it as mapped, never overwrites it, never updates it and never frees a table holding one.

**Ownership.** A page table that may be changed (``allow_writes=True``) assumes exclusive
ownership of the root frame and of every table below it, and a mapper that gives non-aliased
access to them for the table's lifetime; nothing else may change them meanwhile. gdbext never
writes unless the caller opted in, and never through a mapper that declares ``read_only``.

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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from itertools import compress, pairwise, repeat
from typing import NamedTuple

from gdbext.addr import AddrRange, check_aligned, hex_repr
from gdbext.cpu import CpuState
from gdbext.errors import (
    AddressOutOfRangeError,
    AlreadyMappedError,
    EntryInUseError,
    FrameAllocationError,
    HugePageForbiddenError,
    InputError,
    MisalignedAddressError,
    NonCanonicalAddressError,
    NotCapturedError,
    NotMappedError,
    PageSizeMismatchError,
    ParentHugePageError,
    PhysMemoryError,
    ReadOnlyError,
    ReservedBitsError,
    TableInTheWayError,
    TableNotCapturedError,
    TableOutsideRamError,
    TranslationError,
    WalkLimitError,
)
from gdbext.flags import (
    FLAGS_MASK,
    HUGE_PAGE,
    NO_EXECUTE,
    PAT_LARGE,
    PRESENT,
    USER_ACCESSIBLE,
    WRITABLE,
    PageTableFlags,
)
from gdbext.geometry import (
    ENTRIES_PER_TABLE,
    ENTRY_SIZE,
    HUGE_LEAF_LEVELS,
    LEAF_LEVEL_OF_SIZE,
    SIZE_1G,
    SIZE_2M,
    SIZE_4K,
    TABLE_SIZE,
    PagingGeometry,
    entry_span,
    geometry,
    index_shift,
)
from gdbext.mapper import TABLE_STRUCT, FrameAllocator, PhysMapper, is_read_only
from gdbext.permfilter import PermFilter, perm_index
from gdbext.x86.entries import EntryRules, entry_rules
from gdbext.x86.tlbflush import Flush, FlushAll, FlushHook, FlushPage

__all__ = [
    "SIZE_1G",
    "SIZE_2M",
    "SIZE_4K",
    "AliasRun",
    "Anomaly",
    "CleanUp",
    "LeafRun",
    "Mapping",
    "PageTableFlags",
    "Translation",
    "Unmapped",
    "WalkStep",
    "X86PageTable",
]

_U64 = struct.Struct("<Q")
_PERM_BITS = USER_ACCESSIBLE | WRITABLE
#: The bits of a leaf that decide its effective permissions.
_PERM_KEY = USER_ACCESSIBLE | WRITABLE | NO_EXECUTE
#: Effective-permission accumulator at the root: nothing restricted yet.
_EFF_ROOT = USER_ACCESSIBLE | WRITABLE
#: A leaf table summary with at most this many runs is memoised for the whole walk.
_COMPACT_RUNS = 64
#: How many larger summaries a walk keeps (least recently used goes first).
_BIG_MEMO_TABLES = 64
#: Above this many pages a change asks for a full flush instead of one per page (Linux: 33).
FLUSH_PAGE_CEILING = 33


@hex_repr("table", "entry")
class WalkStep(NamedTuple):
    """One level of a walk: the table read, the index used and the raw entry found."""

    level: int
    table: int
    index: int  # type: ignore[assignment]  # shadows tuple.index on purpose (public name)
    entry: int


@hex_repr("vaddr", "paddr", "page_size", "entry")
class Translation(NamedTuple):
    """A successful translation of ``vaddr``."""

    vaddr: int
    paddr: int
    page_size: int
    #: The raw leaf entry.
    entry: int
    #: The level of the leaf (1 for 4 KiB, 2 for 2 MiB, 3 for 1 GiB).
    level: int
    user: bool
    writable: bool
    executable: bool
    steps: tuple[WalkStep, ...]

    @property
    def flags(self) -> PageTableFlags:
        """The leaf entry's own flag bits."""
        return PageTableFlags(self.entry & FLAGS_MASK)

    @property
    def frame(self) -> int:
        """Physical address of the start of the page."""
        return self.paddr - (self.vaddr & (self.page_size - 1))


@hex_repr("vaddr", "paddr", "page_size", "entry")
class Mapping(NamedTuple):
    """One leaf: a page of ``page_size`` bytes at ``vaddr`` mapped to ``paddr``."""

    vaddr: int
    paddr: int
    page_size: int
    #: The raw leaf entry.
    entry: int
    user: bool
    writable: bool
    executable: bool

    @property
    def flags(self) -> PageTableFlags:
        return PageTableFlags(self.entry & FLAGS_MASK)


_new_mapping = partial(tuple.__new__, Mapping)
_new_step = partial(tuple.__new__, WalkStep)
_new_translation = partial(tuple.__new__, Translation)


@hex_repr("vaddr", "paddr", "page_size", "entry")
class LeafRun(NamedTuple):
    """``count`` consecutive leaves of one table, contiguous in VA and PA, with equal flags.

    The leaves' entries differ only by their address, except in the bits a walk was told to
    ignore (:meth:`X86PageTable.iter_runs`'s ``ignore``).
    """

    vaddr: int
    paddr: int
    count: int  # type: ignore[assignment]  # shadows tuple.count on purpose (public name)
    page_size: int
    #: The first leaf's raw entry.
    entry: int
    user: bool
    writable: bool
    executable: bool

    @property
    def end(self) -> int:
        """Exclusive end of the virtual range."""
        return self.vaddr + self.count * self.page_size

    @property
    def size(self) -> int:
        return self.count * self.page_size

    @property
    def flags(self) -> PageTableFlags:
        return PageTableFlags(self.entry & FLAGS_MASK)

    def mappings(self) -> Iterator[Mapping]:
        """The run's leaves, one :class:`Mapping` each."""
        ps, n = self.page_size, self.count
        return map(
            _new_mapping,
            zip(
                range(self.vaddr, self.vaddr + n * ps, ps),
                range(self.paddr, self.paddr + n * ps, ps),
                repeat(ps, n),
                range(self.entry, self.entry + n * ps, ps),
                repeat(self.user, n),
                repeat(self.writable, n),
                repeat(self.executable, n),
                strict=True,
            ),
        )


_new_run = partial(tuple.__new__, LeafRun)


@hex_repr("vaddr", "end", "table", "first_vaddr", "mapped")
@dataclass(frozen=True, slots=True)
class AliasRun:
    """``count`` consecutive entries that link a table already walked elsewhere.

    Only produced by :meth:`X86PageTable.iter_runs` with ``aliases="collapse"``. The linked
    table (at ``level``) was first walked under ``first_vaddr``; each link maps ``leaves`` leaves
    (``mapped`` bytes) again. ``user``, ``writable`` and ``executable`` are what the path down to
    the linked table allows (each leaf's own bits are ANDed in, as ever); ``same_access`` says
    whether that path allows the same as the path of the first walk, so that every leaf has the
    same effective permissions as there.
    """

    vaddr: int
    end: int
    count: int
    table: int
    level: int
    first_vaddr: int
    leaves: int
    mapped: int
    user: bool
    writable: bool
    executable: bool
    same_access: bool = True


@hex_repr("vaddr", "table", "entry")
@dataclass(frozen=True, slots=True)
class Anomaly:
    """Something a walk found and did not follow.

    ``kind`` is one of ``"reserved-bits"``, ``"huge-page-forbidden"``, ``"recursive"`` (the
    entry links a table that is already on the path from the root, such as a bootloader's
    recursive index), ``"table-outside-ram"`` or ``"table-not-captured"`` (in RAM, but not in
    the dump: unknown whether anything below it is mapped).
    """

    kind: str
    vaddr: int
    level: int
    table: int
    index: int
    entry: int
    detail: str = ""


def _missing_table(
    exc: PhysMemoryError, va: int, level: int, parent: int, index: int, entry: int, table: int
) -> Anomaly:
    """The anomaly for a table that could not be read: outside RAM, or not in the dump."""
    kind = "table-not-captured" if isinstance(exc, NotCapturedError) else "table-outside-ram"
    return Anomaly(kind, va, level + 1, parent, index, entry, f"table 0x{table:x}")


WalkRecord = LeafRun | AliasRun | Anomaly
_Batch = list[WalkRecord]


@hex_repr("vaddr", "paddr", "page_size", "entry")
@dataclass(frozen=True, slots=True)
class Unmapped:
    """What :meth:`X86PageTable.unmap` removed."""

    vaddr: int
    paddr: int
    page_size: int
    entry: int
    flushes: tuple[Flush, ...]


@dataclass(frozen=True, slots=True)
class CleanUp:
    """What :meth:`X86PageTable.clean_up` freed (table frames) and the flushes it required."""

    freed: tuple[int, ...]
    #: Empty tables left in place because more than one entry links them.
    shared: tuple[int, ...]
    flushes: tuple[Flush, ...]


@dataclass
class _LeafSummary:
    """Per-walk memo of a leaf-bearing table: runs by index, anomalies, and totals."""

    runs: list[tuple[int, int, int]]  # (first index, count, first entry)
    anomalies: list[tuple[int, str, int, str]]  # (index, kind, entry, detail)
    leaves: int
    mapped: int
    #: Only leaf runs: no links to lower tables, no anomalies (set once, read per emission).
    plain: bool = field(init=False)

    def __post_init__(self) -> None:
        self.plain = not self.anomalies and all(count for _, count, _ in self.runs)


@dataclass
class _Walk:
    """State of one walk."""

    lo: int
    hi: int
    collapse: bool
    #: Entry bits that must agree for leaves to share a run (all but the ignored ones).
    keep: int
    leaf_memo: dict[tuple[int, int], _LeafSummary]
    big_memo: dict[tuple[int, int], _LeafSummary]
    table_memo: dict[tuple[int, int], tuple[int, ...]]
    # (table, level) -> (first va, leaves, mapped, effective permissions of the path there)
    seen: dict[tuple[int, int], tuple[int, int, int, int]]
    path: list[int]
    #: With a permission filter: by combination index (:func:`perm_index`), whether a leaf
    #: passes, and whether a subtree reached with those accumulated permissions may hold one.
    leaf_ok: tuple[bool, ...] | None = None
    may_match: tuple[bool, ...] | None = None
    #: The mapper's optional ``prefetch(paddrs)``: told which tables the walk is about to read.
    prefetch: Callable[[list[int]], object] | None = None


class X86PageTable:
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
        are cheap. Changes made through this object
        keep the cache right; after any other change of the memory call
        :meth:`invalidate_cache`.
    """

    def __init__(
        self,
        mapper: PhysMapper,
        root: int,
        levels: int = 4,
        *,
        nxe: bool = True,
        max_phys_bits: int = 52,
        phys_bits_known: bool = True,
        allow_writes: bool = False,
        flush_hook: FlushHook | None = None,
        cache: bool = False,
        cache_tables: int = 8192,
        cache_pages: int = 1 << 16,
    ) -> None:
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
        self.addr_mask = ((1 << max_phys_bits) - 1) & ~0xFFF
        if root & ~self.addr_mask:
            raise MisalignedAddressError(root, SIZE_4K, "page-table root")
        self.root = root
        base_rsvd = ((1 << 52) - 1) & ~((1 << max_phys_bits) - 1)
        if not nxe:
            base_rsvd |= NO_EXECUTE
        # Reserved bits of a present entry, by level, for a table pointer and for a leaf.
        self._rsvd_table = {lvl: base_rsvd for lvl in range(1, levels + 1)}
        self._rsvd_leaf = {
            1: base_rsvd,
            2: base_rsvd | (((1 << 21) - 1) & ~0x1FFF),
            3: base_rsvd | (((1 << 30) - 1) & ~0x1FFF),
        }
        self._nx_bit = NO_EXECUTE if nxe else 0
        # Per level, top first: (level, index shift, reserved bits of a table pointer, of a leaf).
        self._levels_info = tuple(
            (
                lvl,
                index_shift(lvl),
                self._rsvd_table[lvl] | (HUGE_PAGE if lvl >= 4 else 0),
                self._rsvd_leaf.get(lvl, 0),
            )
            for lvl in range(levels, 0, -1)
        )
        va_bits = self.geometry.va_bits
        self._sign_shift = va_bits - 1
        self._canon_tops = (0, (1 << (65 - va_bits)) - 1)
        #: Raw bytes of tables read, by physical address (only with ``cache=True``).
        self._cache: dict[int, bytes] | None = {} if cache else None
        #: Translations by 4 KiB page number (only with ``cache=True``): a software TLB.
        self._memo: dict[int, Translation] | None = {} if cache else None
        self.cache_tables = cache_tables
        self.cache_pages = cache_pages
        self._entry_at = self._entry_cached if cache else self._entry_uncached

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
        """The page table ``cpu`` uses: root from CR3, levels from CR4.LA57, NX from EFER.NXE.

        ``root`` and ``levels`` override what the CPU state says.
        """
        if root is None:
            root = cpu.root
        if root is None:
            raise InputError("CR3 is unknown; give the page-table root explicitly")
        return cls(
            mapper,
            root,
            cpu.levels if levels is None else levels,
            nxe=cpu.nxe,
            **kwargs,  # type: ignore[arg-type]
        )

    # ------------------------------------------------------------------------------------------
    # Reading

    def _read_entry(self, table: int, index: int) -> int:
        return self._entry_at(table, index)

    def _read_table(self, table: int) -> tuple[int, ...]:
        return TABLE_STRUCT.unpack(self.mapper.read(table, TABLE_SIZE))

    def read_table(self, table: int) -> tuple[int, ...]:
        """The 512 entries of the table at physical address ``table``.

        :raises PhysMemoryError: the table is not in memory (``NotCapturedError``: not in the
            dump).
        """
        return TABLE_STRUCT.unpack(self.mapper.read(table, TABLE_SIZE))

    def read_entry(self, table: int, index: int) -> int:
        """Entry ``index`` of the table at physical address ``table`` (through the table cache
        when the page table has one)."""
        return self._entry_at(table, index)

    def _eff(self, acc: int, entry: int) -> int:
        """Fold ``entry`` into the effective-permission accumulator ``acc``."""
        return (acc & entry & _PERM_BITS) | ((acc | entry) & self._nx_bit)

    def _check_canonical(self, vaddr: int) -> None:
        if not 0 <= vaddr < 1 << 64:
            raise AddressOutOfRangeError(vaddr, self.geometry.va_bits)
        if not self.geometry.is_canonical(vaddr):
            raise NonCanonicalAddressError(vaddr, self.geometry.va_bits)

    def _reserved(self, level: int, entry: int, leaf: bool) -> int:
        if level >= 4 and entry & HUGE_PAGE:
            return HUGE_PAGE
        return entry & (self._rsvd_leaf[level] if leaf else self._rsvd_table[level])

    def translate(self, vaddr: int) -> Translation:
        """Walk ``vaddr`` as the MMU does.

        :raises AddressOutOfRangeError: ``vaddr`` is negative or does not fit in 64 bits.
        :raises NonCanonicalAddressError: ``vaddr`` is not canonical for this paging mode.
        :raises NotMappedError: an entry on the way is not present (``level``, ``entry``).
        :raises HugePageForbiddenError: HUGE_PAGE in a PML4 or PML5 entry.
        :raises ReservedBitsError: reserved bits set in an entry on the way.
        :raises TableOutsideRamError: an entry points to a table outside physical memory.
        """
        if not 0 <= vaddr < 1 << 64 or (vaddr >> self._sign_shift) not in self._canon_tops:
            self._check_canonical(vaddr)
        memo = self._memo
        if memo is not None:
            hit = memo.get(vaddr >> 12)
            if hit is not None:
                offset = vaddr & 0xFFF
                return _new_translation(
                    (vaddr, hit[1] + offset, hit[2], hit[3], hit[4], hit[5], hit[6], hit[7], hit[8])
                )
            result = self._walk_one(vaddr)
            if len(memo) >= self.cache_pages:
                del memo[next(iter(memo))]
            memo[vaddr >> 12] = _new_translation(
                (vaddr & ~0xFFF, result.paddr & ~0xFFF, *result[2:])
            )
            return result
        return self._walk_one(vaddr)

    def _walk_one(self, vaddr: int) -> Translation:
        table = self.root
        acc = _EFF_ROOT
        steps: list[WalkStep] = []
        entry_at = self._entry_at
        addr_mask = self.addr_mask
        parent_entry: int | None = None
        for level, shift, rsvd_table, rsvd_leaf in self._levels_info:
            index = (vaddr >> shift) & 0x1FF
            try:
                entry = entry_at(table, index)
            except PhysMemoryError as exc:
                at = level if parent_entry is None else level + 1
                err: TranslationError
                if isinstance(exc, NotCapturedError):
                    err = TableNotCapturedError(vaddr, at, parent_entry, table)
                else:
                    err = TableOutsideRamError(
                        vaddr, at, parent_entry, table, self.phys_bits_known
                    )
                err.steps = tuple(steps)
                raise err from None
            steps.append(_new_step((level, table, index, entry)))
            if not entry & PRESENT:
                err = NotMappedError(vaddr, level, entry)
                err.steps = tuple(steps)
                raise err
            leaf = level == 1 or (entry & HUGE_PAGE and level < 4)
            bad = entry & (rsvd_leaf if leaf else rsvd_table)
            if bad:
                if bad & HUGE_PAGE and level >= 4:
                    err = HugePageForbiddenError(vaddr, level, entry)
                else:
                    err = ReservedBitsError(vaddr, level, entry, bad)
                err.steps = tuple(steps)
                raise err
            acc = (acc & entry & _PERM_BITS) | ((acc | entry) & self._nx_bit)  # _eff, inlined
            if leaf:
                size = 1 << shift
                frame = entry & addr_mask & ~(size - 1)
                return _new_translation(
                    (
                        vaddr,
                        frame | (vaddr & (size - 1)),
                        size,
                        entry,
                        level,
                        bool(acc & USER_ACCESSIBLE),
                        bool(acc & WRITABLE),
                        not acc & NO_EXECUTE,
                        tuple(steps),
                    )
                )
            parent_entry = entry
            table = entry & addr_mask
        raise AssertionError("unreachable: level 1 is always a leaf")

    def invalidate_cache(self) -> None:
        """Forget cached tables (after the memory changed behind this object's back)."""
        if self._cache is not None:
            self._cache.clear()
        if self._memo is not None:
            self._memo.clear()

    def _entry_uncached(self, table: int, index: int) -> int:
        return int(_U64.unpack(self.mapper.read(table + index * ENTRY_SIZE, ENTRY_SIZE))[0])

    def _entry_cached(self, table: int, index: int) -> int:
        cache = self._cache
        assert cache is not None
        raw = cache.get(table)
        if raw is None:
            raw = self.mapper.read(table, TABLE_SIZE)
            if len(cache) >= self.cache_tables:
                del cache[next(iter(cache))]
            cache[table] = raw
        return int(_U64.unpack_from(raw, index * ENTRY_SIZE)[0])

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

    # ------------------------------------------------------------------------------------------
    # Walking

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
            raise ValueError("ignore may only name flag bits other than PRESENT and HUGE_PAGE")
        if aliases not in ("expand", "collapse"):
            raise ValueError(f"aliases must be 'expand' or 'collapse', not {aliases!r}")
        lo, hi = (0, 1 << 64) if range is None else (range.start, range.end)
        if lo >= hi:
            return
        walk = _Walk(
            lo, hi, aliases == "collapse", ~ignore & ((1 << 64) - 1), {}, {}, {}, {}, [self.root]
        )
        walk.prefetch = getattr(self.mapper, "prefetch", None)
        if perm is not None:
            if perm.empty:
                return
            walk.leaf_ok = perm.leaf_ok
            walk.may_match = perm.may_match(self.nxe)
        # Internally the walk produces batches (lists of records, one per table or so), so that
        # the nested generators pass along one object per table rather than one per run.
        batches = self._walk_top(walk)
        if max_leaves is not None:
            batches = _limit_leaves(batches, max_leaves)
        if not walk.collapse:
            for batch in batches:
                yield from batch
            return
        pending: AliasRun | None = None
        for batch in batches:
            for record in batch:
                if type(record) is AliasRun:
                    if pending is not None and _extends(pending, record):
                        pending = _merge_alias(pending, record)
                        continue
                    if pending is not None:
                        yield pending
                    pending = record
                    continue
                if pending is not None:
                    yield pending
                    pending = None
                yield record
        if pending is not None:
            yield pending

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
                    yield _new_mapping(
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

    def _walk_top(self, walk: _Walk) -> Iterator[_Batch]:
        level = self.levels
        shift = index_shift(level)
        span = 1 << shift
        try:
            entries = self._read_table(self.root)
        except NotCapturedError:
            raise TableNotCapturedError(0, level, None, self.root) from None
        except PhysMemoryError:
            # Nothing to walk at all: an error of the input (a wrong CR3), not an anomaly.
            raise TableOutsideRamError(0, level, None, self.root) from None
        canon = self.geometry.canonicalize
        if walk.prefetch is not None:
            self._prefetch(
                walk,
                level,
                _EFF_ROOT,
                [
                    entry
                    for index, entry in enumerate(entries)
                    if entry & PRESENT
                    and canon(index << shift) < walk.hi
                    and walk.lo < canon(index << shift) + span
                ],
            )
        for index in range(ENTRIES_PER_TABLE):
            entry = entries[index]
            if not entry & PRESENT:
                continue
            base = canon(index << shift)
            if not (base < walk.hi and walk.lo < base + span):
                continue
            yield from self._visit_or_alias(walk, self.root, level, index, entry, base, _EFF_ROOT)

    def _visit_entry(
        self, walk: _Walk, table: int, level: int, index: int, entry: int, va: int, acc: int
    ) -> Iterator[_Batch]:
        """A present non-leaf-table entry at ``level`` (``level >= 2``) covering ``va``."""
        bad = self._reserved(level, entry, leaf=False)
        if bad:
            kind = "huge-page-forbidden" if bad == HUGE_PAGE else "reserved-bits"
            yield [Anomaly(kind, va, level, table, index, entry, f"bits 0x{bad:x}")]
            return
        child = entry & self.addr_mask
        if child in walk.path:
            detail = f"links table 0x{child:x}"
            yield [Anomaly("recursive", va, level, table, index, entry, detail)]
            return
        acc = self._eff(acc, entry)
        if walk.may_match is not None and not walk.may_match[perm_index(acc)]:
            return  # nothing below can pass the permission filter: do not read it
        yield from self._walk_table(walk, child, level - 1, va, acc, table, index, entry)

    def _walk_table(
        self,
        walk: _Walk,
        table: int,
        level: int,
        base: int,
        acc: int,
        parent: int,
        parent_index: int,
        parent_entry: int,
    ) -> Iterator[_Batch]:
        """Walk the table at ``level`` whose first entry maps ``base``."""
        shift = index_shift(level)
        span = 1 << shift
        lo, hi = walk.lo, walk.hi
        first = 0 if lo <= base else (lo - base) >> shift
        last = ENTRIES_PER_TABLE - 1 if hi >= base + (span << 9) else (hi - 1 - base) >> shift
        key = (table, level)
        if level == 1 or level in HUGE_LEAF_LEVELS:
            summary = walk.leaf_memo.get(key)
            if summary is None:
                summary = walk.big_memo.pop(key, None)
                if summary is not None:
                    walk.big_memo[key] = summary  # most recently used last
            if summary is None:
                try:
                    summary = self._summarise(table, level, walk.keep)
                except PhysMemoryError as exc:
                    missing = _missing_table(
                        exc, base, level, parent, parent_index, parent_entry, table
                    )
                    yield [missing]
                    return
                if walk.prefetch is not None and not summary.plain:
                    self._prefetch(
                        walk,
                        level,
                        acc,
                        [e for i, c, e in summary.runs if not c and first <= i <= last],
                    )
                if len(summary.runs) + len(summary.anomalies) <= _COMPACT_RUNS:
                    walk.leaf_memo[key] = summary
                else:
                    # Big summaries (scattered leaves) are kept for a few recent tables only, so
                    # that a walk's memory grows with its tables, not its leaves; links to one
                    # table come in bursts (ESPFIX), which a short LRU catches.
                    walk.big_memo[key] = summary
                    if len(walk.big_memo) > _BIG_MEMO_TABLES:
                        del walk.big_memo[next(iter(walk.big_memo))]
            yield from self._emit_table(walk, table, level, base, acc, summary, first, last)
        else:
            entries = walk.table_memo.get(key)
            if entries is None:
                try:
                    entries = self._read_table(table)
                except PhysMemoryError as exc:
                    missing = _missing_table(
                        exc, base, level, parent, parent_index, parent_entry, table
                    )
                    yield [missing]
                    return
                walk.table_memo[key] = entries
                if walk.prefetch is not None:
                    self._prefetch(
                        walk, level, acc, [e for e in entries[first : last + 1] if e & PRESENT]
                    )
            walk.path.append(table)
            try:
                for index in range(first, last + 1):
                    entry = entries[index]
                    if entry & PRESENT:
                        yield from self._visit_or_alias(
                            walk, table, level, index, entry, base + (index << shift), acc
                        )
            finally:
                walk.path.pop()

    def _visit_or_alias(
        self, walk: _Walk, table: int, level: int, index: int, entry: int, va: int, acc: int
    ) -> Iterator[_Batch]:
        if walk.collapse:
            child_key = (entry & self.addr_mask, level - 1)
            first = walk.seen.get(child_key)
            if first is not None and not self._reserved(level, entry, leaf=False):
                eff = self._eff(acc, entry)
                if walk.may_match is not None:
                    if not walk.may_match[perm_index(eff)]:
                        return
                    if eff != first[3]:
                        # Other permissions on this path: other leaves pass. Walk it again.
                        yield from self._visit_entry(walk, table, level, index, entry, va, acc)
                        return
                    if not first[1]:
                        return  # the first walk found no leaf that passes
                span = entry_span(level)
                alias = AliasRun(
                    va,
                    va + span,
                    1,
                    child_key[0],
                    level - 1,
                    first[0],
                    first[1],
                    first[2],
                    bool(eff & USER_ACCESSIBLE),
                    bool(eff & WRITABLE),
                    not eff & NO_EXECUTE,
                    eff == first[3],
                )
                yield [alias]
                return
            # Remember the first walk of this child, with its totals once known.
            leaves = mapped = 0
            followed = True
            for batch in self._visit_entry(walk, table, level, index, entry, va, acc):
                for record in batch:
                    if type(record) is LeafRun:
                        leaves += record.count
                        mapped += record.count * record.page_size
                    elif type(record) is AliasRun:
                        leaves += record.leaves * record.count
                        mapped += record.mapped * record.count
                    elif (
                        type(record) is Anomaly
                        and record.level == level
                        and record.table == table
                        and record.index == index
                    ):
                        followed = False  # this very link was not followed
                yield batch
            if (
                followed
                and child_key not in walk.seen
                and self._covers(walk, va, entry_span(level))
            ):
                walk.seen[child_key] = (va, leaves, mapped, self._eff(acc, entry))
            return
        yield from self._visit_entry(walk, table, level, index, entry, va, acc)

    def _prefetch(self, walk: _Walk, level: int, acc: int, links: list[int]) -> None:
        """Tell the mapper which tables the present entries ``links`` of a level-``level``
        table lead to, before the walk reads them one by one (entries the walk will not follow,
        for reserved bits or the permission filter, are left out)."""
        prefetch = walk.prefetch
        assert prefetch is not None
        rsvd = self._rsvd_table[level] | (HUGE_PAGE if level >= 4 else 0)
        may_match = walk.may_match
        mask = self.addr_mask
        children = [
            entry & mask
            for entry in links
            if not entry & rsvd
            and (may_match is None or may_match[perm_index(self._eff(acc, entry))])
        ]
        if children:
            prefetch(children)

    @staticmethod
    def _covers(walk: _Walk, va: int, span: int) -> bool:
        """True if the walk's range covers all of ``[va, va + span)`` (totals are complete)."""
        return walk.lo <= va and va + span <= walk.hi

    def _summarise(self, table: int, level: int, keep: int = (1 << 64) - 1) -> _LeafSummary:
        """Read a table that may hold leaves and group its leaves into runs.

        Leaves join a run when their entries, masked with ``keep``, continue the run's first
        entry by one page each.
        """
        entries = self._read_table(table)
        step = entry_span(level)
        runs: list[tuple[int, int, int]] = []
        anomalies: list[tuple[int, str, int, str]] = []
        leaf_rsvd = self._rsvd_leaf[level]
        e0 = entries[0]
        n = ENTRIES_PER_TABLE
        # Fast path: 512 leaves, equal flags, contiguous frames (direct maps): compared in C.
        if (
            e0 & PRESENT
            and (level == 1 or e0 & HUGE_PAGE)
            and not e0 & leaf_rsvd
            and (e0 & self.addr_mask) + n * step <= self.addr_mask + SIZE_4K
        ):
            uniform = entries[-1] == e0 + (n - 1) * step and entries == tuple(
                range(e0, e0 + n * step, step)
            )
            if not uniform and keep != (1 << 64) - 1:
                m0 = e0 & keep
                uniform = (entries[-1] & keep) == m0 + (n - 1) * step and [
                    e & keep for e in entries
                ] == list(range(m0, m0 + n * step, step))
            if uniform:
                return _LeafSummary([(0, n, e0)], [], n, n * step)
        # Second fast path: every entry a present, well-formed leaf (a used kernel's tables, whose
        # neighbours differ in ACCESSED/DIRTY): find run starts with comprehensions, not a loop.
        addr_mask = self.addr_mask
        if (
            all(e & PRESENT for e in entries)
            and (level == 1 or all(e & HUGE_PAGE for e in entries))
            and not any(e & leaf_rsvd for e in entries)
            and max(e & addr_mask for e in entries) + step <= addr_mask
        ):
            keyed = entries if keep == (1 << 64) - 1 else [e & keep for e in entries]
            starts = [0]
            starts += [i for i in range(1, n) if keyed[i] != keyed[i - 1] + step]
            starts.append(n)
            runs = [(a, b - a, entries[a]) for a, b in pairwise(starts)]
            return _LeafSummary(runs, [], n, n * step)
        run_index = run_count = run_entry = 0
        expect = -1
        leaves = 0
        # Only present entries (most tables of a real kernel are sparse): picked in C.
        for index in compress(range(n), map(PRESENT.__and__, entries)):
            entry = entries[index]
            if level > 1 and not entry & HUGE_PAGE:
                # A link to a lower table inside a PD or PDPT: handled by the caller's loop.
                if run_count:
                    runs.append((run_index, run_count, run_entry))
                    run_count = 0
                runs.append((index, 0, entry))
                expect = -1
                continue
            bad = entry & leaf_rsvd
            if bad:
                if run_count:
                    runs.append((run_index, run_count, run_entry))
                    run_count = 0
                anomalies.append((index, "reserved-bits", entry, f"bits 0x{bad:x}"))
                expect = -1
                continue
            leaves += 1
            masked = entry & keep
            if masked == expect and index == run_index + run_count:
                run_count += 1
            else:
                if run_count:
                    runs.append((run_index, run_count, run_entry))
                run_index, run_count, run_entry = index, 1, entry
            expect = masked + step
            if (entry & self.addr_mask) + step > self.addr_mask:
                expect = -1  # the next address would carry into the flag bits
        if run_count:
            runs.append((run_index, run_count, run_entry))
        return _LeafSummary(runs, anomalies, leaves, leaves * step)

    def _perm_table(self, acc: int, summary: _LeafSummary) -> dict[int, tuple[bool, bool, bool]]:
        """Effective (user, writable, executable) by a leaf's permission bits, under ``acc``."""
        table: dict[int, tuple[bool, bool, bool]] = {}
        for _, _, entry in summary.runs:
            key = entry & _PERM_KEY
            if key not in table:
                eff = self._eff(acc, key)
                table[key] = (
                    bool(eff & USER_ACCESSIBLE),
                    bool(eff & WRITABLE),
                    not eff & NO_EXECUTE,
                )
        return table

    def _emit_table(
        self,
        walk: _Walk,
        table: int,
        level: int,
        base: int,
        acc: int,
        summary: _LeafSummary,
        first: int,
        last: int,
    ) -> Iterator[_Batch]:
        """The records of a summarised table between indices ``first`` and ``last``."""
        step = entry_span(level)
        mask = self.addr_mask & ~(step - 1)
        if first == 0 and last == ENTRIES_PER_TABLE - 1 and summary.plain:
            # The common case, built in one comprehension: every run, whole.
            perm = self._perm_table(acc, summary)
            leaf_ok = walk.leaf_ok
            if leaf_ok is None:
                batch: _Batch = [
                    _new_run((base + i * step, e & mask, c, step, e, *perm[e & _PERM_KEY]))
                    for i, c, e in summary.runs
                ]
            else:
                ok = {key: leaf_ok[perm_index(self._eff(acc, key))] for key in perm}
                batch = [
                    _new_run((base + i * step, e & mask, c, step, e, *perm[e & _PERM_KEY]))
                    for i, c, e in summary.runs
                    if ok[e & _PERM_KEY]
                ]
            if batch:
                yield batch
            return
        anomalies = summary.anomalies
        a_pos = 0
        out: _Batch = []
        for index, count, entry in summary.runs:
            while a_pos < len(anomalies) and anomalies[a_pos][0] < index:
                _add_anomaly(out, table, level, base, step, anomalies[a_pos], first, last)
                a_pos += 1
            if count == 0:
                # A table link inside a PD/PDPT.
                if first <= index <= last:
                    if out:
                        yield out
                        out = []
                    walk.path.append(table)
                    try:
                        yield from self._visit_or_alias(
                            walk, table, level, index, entry, base + index * step, acc
                        )
                    finally:
                        walk.path.pop()
                continue
            start = index if index > first else first
            stop = index + count if index + count <= last else last + 1
            if start >= stop:
                continue
            eff = self._eff(acc, entry)
            if walk.leaf_ok is not None and not walk.leaf_ok[perm_index(eff)]:
                continue
            skip = start - index
            out.append(
                _new_run(
                    (
                        base + start * step,
                        (entry & mask) + skip * step,
                        stop - start,
                        step,
                        entry + skip * step,
                        bool(eff & USER_ACCESSIBLE),
                        bool(eff & WRITABLE),
                        not eff & NO_EXECUTE,
                    )
                )
            )
        while a_pos < len(anomalies):
            _add_anomaly(out, table, level, base, step, anomalies[a_pos], first, last)
            a_pos += 1
        if out:
            yield out

    # ------------------------------------------------------------------------------------------
    # Changing

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

    def _write(self, paddr: int, data: bytes) -> None:
        """Every write of the engine goes through here, so the table cache stays right."""
        if self._memo:
            self._memo.clear()
        if self._cache is not None:
            self._cache.pop(paddr & ~(TABLE_SIZE - 1), None)
            self._cache.pop((paddr + len(data) - 1) & ~(TABLE_SIZE - 1), None)
            if len(data) > TABLE_SIZE:
                self._cache.clear()
        self.mapper.write(paddr, data)

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
            entry = self._read_entry(table, index)
            steps.append(WalkStep(lvl, table, index, entry))
            if entry == 0:
                return None, steps
            if not entry & PRESENT:
                raise EntryInUseError(vaddr, lvl, entry)
            if entry & HUGE_PAGE:
                if lvl >= 4:
                    raise HugePageForbiddenError(vaddr, lvl, entry)
                raise ParentHugePageError(vaddr, lvl, entry)
            table = entry & self.addr_mask
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
        parent_bits = PRESENT | (flags & _PERM_BITS)
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
                entries = self._read_table(table)
                shift = index_shift(leaf_level)
                for index in range(
                    (chunk >> shift) & 0x1FF, ((chunk_end - 1) >> shift & 0x1FF) + 1
                ):
                    entry = entries[index]
                    if entry & PRESENT:
                        where = (chunk & ~(table_span - 1)) + (index << shift)
                        if leaf_level > 1 and not entry & HUGE_PAGE:
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
            entry = self._read_entry(table, index)
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
            table = entry & self.addr_mask
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
            entry = self._read_entry(parent, (vaddr >> index_shift(level)) & 0x1FF)
            if entry & PRESENT:
                raise AlreadyMappedError(vaddr, level, entry)
            if entry:
                raise EntryInUseError(vaddr, level, entry)
        frames = self._allocate(allocator, missing, vaddr, level)
        parent_bits = PRESENT | (flags & _PERM_BITS)
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
            entry = self._read_entry(table, index)
            steps.append(WalkStep(level, table, index, entry))
            if not entry & PRESENT:
                raise NotMappedError(vaddr, level, entry)
            if level >= 4 and entry & HUGE_PAGE:
                raise HugePageForbiddenError(vaddr, level, entry)
            if level == 1 or (level in HUGE_LEAF_LEVELS and entry & HUGE_PAGE):
                return steps, level
            table = entry & self.addr_mask
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
        steps, _level, size = self._leaf_for(vaddr, page_size)
        leaf = steps[-1]
        self._write_entry(leaf.table, leaf.index, 0)
        frame = leaf.entry & self.addr_mask & ~(size - 1)
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
        steps, _level, size = self._leaf_for(vaddr, page_size)
        if size == SIZE_4K and flags & HUGE_PAGE:
            raise InputError("HUGE_PAGE follows from the page size; a 4 KiB page cannot have it")
        leaf = steps[-1]
        frame_bits = leaf.entry & self.addr_mask & ~(size - 1)
        if size != SIZE_4K:
            frame_bits |= leaf.entry & PAT_LARGE  # keep the PAT bit of a large page
        new = frame_bits | flags | PRESENT | (HUGE_PAGE if size != SIZE_4K else 0)
        parent_bits = PRESENT | (flags & _PERM_BITS)
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
        return not any(self._read_table(table))

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
                entries = self._read_table(table)
            except PhysMemoryError:
                return
            for entry in entries:
                if not entry & PRESENT or (level in HUGE_LEAF_LEVELS and entry & HUGE_PAGE):
                    continue
                child = entry & self.addr_mask
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
        entry = self._read_entry(table, index)
        if not entry & PRESENT or level == 1:
            return
        if level in HUGE_LEAF_LEVELS and entry & HUGE_PAGE:
            return
        if level >= 4 and entry & HUGE_PAGE:
            return
        child = entry & self.addr_mask
        if child == table or child in path or child == self.root:
            return
        try:
            child_entries = self._read_table(child)
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
            child_entries = self._read_table(child)
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


def _extends(a: AliasRun, b: AliasRun) -> bool:
    return (
        a.end == b.vaddr
        and a.table == b.table
        and a.level == b.level
        and (a.user, a.writable, a.executable, a.same_access)
        == (b.user, b.writable, b.executable, b.same_access)
    )


def _merge_alias(a: AliasRun, b: AliasRun) -> AliasRun:
    return AliasRun(
        a.vaddr,
        b.end,
        a.count + b.count,
        a.table,
        a.level,
        a.first_vaddr,
        a.leaves,
        a.mapped,
        a.user,
        a.writable,
        a.executable,
        a.same_access,
    )


def _add_anomaly(
    out: _Batch,
    table: int,
    level: int,
    base: int,
    step: int,
    item: tuple[int, str, int, str],
    first: int,
    last: int,
) -> None:
    index, kind, entry, detail = item
    if first <= index <= last:
        out.append(Anomaly(kind, base + index * step, level, table, index, entry, detail))


def _limit_leaves(batches: Iterator[_Batch], limit: int) -> Iterator[_Batch]:
    total = 0
    for batch in batches:
        for record in batch:
            if type(record) is LeafRun:
                total += record.count
                if total > limit:
                    raise WalkLimitError(limit, record.vaddr)
        yield batch
