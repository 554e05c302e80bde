"""The live backend's state for one debugger connection: read path, RAM, page cache, CPUs.

Everything here runs over a :class:`~gdbext_gdb.link.GdbLink`, so it is tested without GDB and
shared by both debuggers: :mod:`gdbext_gdb.gdb_link` keeps one :class:`LiveState` per GDB
connection and calls :meth:`LiveState.invalidate` on GDB's events (resume, memory or register
write, exit); LLDB's backend (``gdbext_lldb.lldb_link``) keeps one per LLDB process and
invalidates it when the process's stop ID moves. :class:`Naming` says which debugger and
backend the messages and ``info`` name.

- :class:`LiveMapper` reads physical memory through the chosen :mod:`~gdbext_gdb.readpath`
  reader, whole 4 KiB pages at a time, keeps the pages for one stop, refuses reads outside the
  RAM that ``monitor info mtree -f`` shows (QEMU would return zeros for them), never writes, and
  offers :meth:`LiveMapper.prefetch`, which the paging engine calls with the tables a walk is
  about to visit so that neighbouring tables come in one read.
- :class:`LiveCpus` are the vCPUs (the debugger's threads; CPU N is the N-th thread by number,
  thread N+1 with QEMU), their CR0/CR3/CR4/EFER read from its registers when first asked for.
- :meth:`LiveState.open` makes the :class:`~gdbext.plugin.target.Target` a front end asks for once
per
  command; it is cheap after the first call (probes and pages are kept per connection). Its
  VMCOREINFO facts (``kernel_root``...) and details are resolved on first use, per stop
  (:mod:`gdbext_gdb.livekernel`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, overload

from gdbext.cpu import CpuState
from gdbext.errors import PhysMemoryError, ReadOnlyError, UsageError
from gdbext.plugin.facts import KernelFacts
from gdbext.plugin.target import Detail, LazyMapping, OpenRequest, Target
from gdbext.units import parse_int, shown
from gdbext_gdb.link import GdbLink, LiveTargetError, TargetLostError, TargetMemoryError
from gdbext_gdb.phymem import ModeBracket, PhyMemMode
from gdbext_gdb.ram import RamRanges, parse_mtree_ram
from gdbext_gdb.readpath import (
    DirectMapReader,
    PhyMemReader,
    Reader,
    XpReader,
    xp_available,
)

if TYPE_CHECKING:
    from gdbext_gdb.livekernel import LiveVmcoreinfo

BACKEND = "gdb"
PAGE = 4096
PAGE_MASK = ~(PAGE - 1)
#: ``--read-via`` values.
READ_VIA = ("phymem", "xp", "direct-map")
#: Pages kept per stop (32 MiB); the oldest go first beyond that.
CACHE_PAGES = 8192
#: Reads of more pages than this bypass the cache (a scan of RAM, say).
MAX_CACHED_READ_PAGES = 64
#: Pages per read when prefetching adjacent pages (GDB splits a read into packets itself).
MAX_RUN_PAGES = 256
#: Symbol that holds the direct map's base in kernels with a randomised layout.
PAGE_OFFSET_SYMBOL = "page_offset_base"
#: A symbol only a Linux kernel has: with it, the target is taken to be Linux.
LINUX_SYMBOL = "linux_banner"


@dataclass(frozen=True)
class Naming:
    """Who reads: the backend's name and its debugger's, for messages and ``info``."""

    #: The backend plugin's name (``gdb``, ``lldb``).
    backend: str = BACKEND
    #: The debugger, as people call it (``GDB``, ``LLDB``).
    debugger: str = "GDB"


GDB_NAMING = Naming()


@dataclass(frozen=True)
class LiveOptions:
    """The backend options of one open."""

    #: ``--direct-map ADDR``: the kernel direct map's base (reads through it).
    direct_map: int | None = None
    #: ``--read-via phymem|xp|direct-map``; ``None``: the first that works (``direct-map``
    #: when ``direct_map`` is given).
    read_via: str | None = None

    @classmethod
    def from_request(cls, request: OpenRequest, naming: Naming = GDB_NAMING) -> LiveOptions:
        if request.source:
            raise UsageError(
                f"the {naming.backend} backend reads the target {naming.debugger} is connected "
                f"to, not {shown(request.source)}"
            )
        direct_text = request.options.get("direct_map")
        direct = None
        if direct_text is not None:
            try:
                direct = parse_int(direct_text)
            except ValueError as exc:
                raise UsageError(f"--direct-map: {exc}") from None
            if direct >= 1 << 64 or direct & (PAGE - 1):
                raise UsageError(f"--direct-map 0x{direct:x} is not a page-aligned address")
        via = request.options.get("read_via")
        if via is not None and via not in READ_VIA:
            raise UsageError(f"--read-via must be one of {', '.join(READ_VIA)}, not {shown(via)}")
        if via is None and direct is not None:
            via = "direct-map"
        return cls(direct, via)


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

    def __init__(self, bracket: ModeBracket, naming: Naming = GDB_NAMING) -> None:
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


class LiveCpus(Sequence[CpuState]):
    """The vCPUs of the target, read when first asked for (and kept for the stop)."""

    def __init__(self, state: LiveState, threads: Sequence[int]) -> None:
        self._state = state
        self._threads = list(threads)

    def __len__(self) -> int:
        return len(self._threads)

    @overload
    def __getitem__(self, index: int) -> CpuState: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[CpuState]: ...

    def __getitem__(self, index: int | slice) -> CpuState | Sequence[CpuState]:
        if isinstance(index, slice):
            return [self[i] for i in range(len(self))[index]]
        return self._state.cpu_state(self._threads[index])


class LiveState:
    """One debugger connection's view of its target."""

    def __init__(self, link: GdbLink, description: str, naming: Naming = GDB_NAMING) -> None:
        self.link = link
        self.description = description
        self.naming = naming
        self.phymem = PhyMemMode(link)
        self.bracket = ModeBracket(self.phymem, link)
        self.mapper = LiveMapper(self.bracket, naming)
        self._cpus: dict[int, CpuState] = {}
        self._phymem_ok: bool | None = None
        self._xp_ok: bool | None = None
        self._ram_probed = False
        self._ram_note = ""
        self._symbol_base: int | None = None
        self._is_linux: bool | None = None
        self._reader_key: tuple[str | None, int | None] | None = None
        self._vmcoreinfo: LiveVmcoreinfo | None = None

    @property
    def vmcoreinfo(self) -> LiveVmcoreinfo:
        """The kernel's VMCOREINFO, found in memory when first asked for (imported then: the
        debuggers load this module at start-up)."""
        if self._vmcoreinfo is None:
            from gdbext_gdb.livekernel import LiveVmcoreinfo

            self._vmcoreinfo = LiveVmcoreinfo(self.mapper, self._ram_end)
        return self._vmcoreinfo

    @property
    def stats(self) -> ReadStats:
        return self.mapper.stats

    def invalidate(self) -> None:
        """Drop what one stop's cache holds: pages, CPU states and VMCOREINFO (resume, writes,
        exit)."""
        self.mapper.clear()
        self._cpus.clear()
        if self._vmcoreinfo is not None:
            self._vmcoreinfo.invalidate()

    def forget_cpus(self) -> None:
        """Drop the CPU states only, so that they are read again (LLDB: a register write fires
        no event, and its own register cache makes reading them again cheap)."""
        self._cpus.clear()

    def cpu_state(self, thread: int) -> CpuState:
        """The control registers of the debugger's thread ``thread`` (cached until
        :meth:`invalidate`)."""
        cpu = self._cpus.get(thread)
        if cpu is None:
            regs = self.link.registers(thread)
            cpu = CpuState(regs.get("cr0"), regs.get("cr3"), regs.get("cr4"), regs.get("efer"))
            self._cpus[thread] = cpu
        return cpu

    # --- probes (once per connection) ---

    def phymem_supported(self) -> bool:
        if self._phymem_ok is None:
            self._phymem_ok = self.phymem.supported()
        return self._phymem_ok

    def xp_supported(self) -> bool:
        if self._xp_ok is None:
            self._xp_ok = xp_available(self.link)
        return self._xp_ok

    def _probe_ram(self) -> None:
        if self._ram_probed:
            return
        self._ram_probed = True
        try:
            text = self.link.monitor("info mtree -f")
        except TargetLostError:
            self._ram_probed = False
            raise
        except LiveTargetError as exc:
            self._ram_note = f"unknown (monitor info mtree -f: {exc}); reads are not checked"
            return
        ranges = parse_mtree_ram(text)
        if not ranges:
            self._ram_note = "unknown (no RAM block in monitor info mtree -f); reads not checked"
            return
        self.mapper.ram = RamRanges(ranges)

    def _ram_end(self) -> int | None:
        ram = self.mapper.ram
        return None if ram is None or not ram.ranges else ram.ranges[-1].end

    def _direct_map_base(self, options: LiveOptions) -> int | None:
        if options.direct_map is not None:
            return options.direct_map
        if self._symbol_base is None:
            value = self.link.symbol_value(PAGE_OFFSET_SYMBOL)
            if value is not None and value and not value & (PAGE - 1):
                self._symbol_base = value
        return self._symbol_base

    def _choose_reader(self, options: LiveOptions) -> Reader:
        via = options.read_via
        if via in (None, "phymem"):
            if self.phymem_supported():
                return PhyMemReader(self.link)
            if via == "phymem":
                raise LiveTargetError("--read-via phymem: the gdbstub has no PhyMemMode")
        if via in (None, "xp"):
            if self.xp_supported():
                return XpReader(self.link)
            if via == "xp":
                raise LiveTargetError("--read-via xp: the target has no `monitor xp`")
        base = self._direct_map_base(options)
        if base is None:
            raise LiveTargetError(
                "no way to read physical memory: "
                + ("" if via else "the gdbstub has no PhyMemMode and no `monitor xp`, and ")
                + "the direct map's base is unknown (give --direct-map ADDR, or load the "
                f"kernel's symbols for {PAGE_OFFSET_SYMBOL})"
            )
        # QEMU's stub must then be in virtual mode; other stubs have no mode to switch.
        return DirectMapReader(self.link, base, 0 if self.phymem_supported() else None)

    def _reader(self, options: LiveOptions) -> Reader:
        key = (options.read_via, options.direct_map)
        reader = self.mapper.reader
        if reader is None or key != self._reader_key:
            reader = self._choose_reader(options)
            if self.mapper.reader is not None and reader.name != self.mapper.reader.name:
                self.mapper.clear()  # pages read another way are not trusted across paths
            self.mapper.reader = reader
            self._reader_key = key
        return reader

    # --- the target ---

    def open(self, options: LiveOptions) -> Target:
        """The target for one command (cheap after the first call on a connection)."""
        if not self.link.connected():
            raise TargetLostError("lost the connection to the target")
        reader = self._reader(options)
        self._probe_ram()
        threads = self.link.thread_numbers()
        selected = self.link.selected_thread()
        details: dict[str, str] = {"connection": self.description}
        ram = self.mapper.ram
        if ram is None:
            details["RAM"] = self._ram_note or "unknown; reads are not checked"
        details["vCPUs"] = Detail(
            f"{len(threads)} ({self.naming.debugger} threads {_spans(threads)}; "
            "CPU N is thread N+1)"
            if threads
            else "none (no threads)",
            len(threads),
        )
        if self._is_linux is None:
            # With the kernel's symbols loaded, say so: Linux region labels then come on by
            # themselves (--labels auto), as they do for a dump with a VMCOREINFO.
            self._is_linux = self.link.symbol_address(LINUX_SYMBOL) is not None
        cpus = LiveCpus(self, threads)
        index = threads.index(selected) if selected in threads else None
        vmcoreinfo = self.vmcoreinfo

        def cpu() -> CpuState:  # read when VMCOREINFO is first needed, not at every open
            at = index or 0
            return cpus[at] if at < len(cpus) else CpuState()

        facts = KernelFacts(
            os="linux" if self._is_linux else None,
            selected_cpu=index,
            direct_map_base=reader.base if isinstance(reader, DirectMapReader) else None,
            vmcoreinfo_source=lambda: vmcoreinfo.facts(cpu()),
        )
        return Target(
            backend=self.naming.backend,
            description=self.description,
            mapper=self.mapper,
            cpus=cpus,
            ram=None if ram is None else list(ram.ranges),
            read_path=reader.name,
            details=LazyMapping(details, lambda: vmcoreinfo.details(cpu())),
            facts=facts,
            command_scope=self.bracket.scope,
        )


def _spans(numbers: Sequence[int]) -> str:
    """``1-4, 7``: sorted numbers as spans."""
    out: list[str] = []
    start = prev = None
    for n in sorted(numbers):
        if start is None or prev is None or n != prev + 1:
            if start is not None:
                out.append(str(start) if start == prev else f"{start}-{prev}")
            start = n
        prev = n
    if start is not None:
        out.append(str(start) if start == prev else f"{start}-{prev}")
    return ", ".join(out)
