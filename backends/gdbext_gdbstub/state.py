"""The live backend's state for one debugger connection: read path, RAM, page cache, CPUs.

Everything here runs over a :class:`~gdbext_gdbstub.link.DebuggerLink`, so it is tested without
a debugger and shared by both: GDB's adapter (``gdbext_gdb.gdb_link``) keeps one
:class:`LiveState` per GDB connection and calls :meth:`LiveState.invalidate` on GDB's events
(resume, memory or register write, exit); LLDB's (``gdbext_lldb.lldb_link``) keeps one per LLDB
process and invalidates it when the process's stop ID moves. A
:class:`~gdbext_gdbstub.options.Naming` says which debugger and backend the messages and
``info`` name.

- :class:`~gdbext_gdbstub.mapper.LiveMapper` is the target's physical memory, cached per stop.
- :class:`LiveCpus` are the vCPUs (the debugger's threads; CPU N is the N-th thread by number,
  thread N+1 with QEMU), their CR0/CR3/CR4/EFER read from its registers when first asked for.
- :meth:`LiveState.open` makes the :class:`~gdbext.plugin.target.Target` a front end asks for
  once per command; it is cheap after the first call (probes and pages are kept per
  connection). Its VMCOREINFO facts (``kernel_root``...) and details are resolved on first use,
  per stop (:mod:`gdbext_gdbstub.livekernel`).

A target that runs (GDB's ``continue &``, LLDB's asynchronous ``process continue``) is read
only through the host path, checked at an earlier stop, and nothing is sent to it: no
PhyMemMode, no register read (the debugger would refuse, or wait for a stop). Its CPU states are
those read at the last stop, if any; pages are read afresh by each command, as the guest moves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, overload

from gdbext.addr import AddrRange, merge_ranges
from gdbext.cpu import CpuState
from gdbext.geometry import PAGE_SIZE as PAGE
from gdbext.plugin.facts import KernelFacts
from gdbext.plugin.target import Detail, LazyMapping, StopCache, Target
from gdbext_gdbstub.hostmem import HostMemReader, map_ram, verified
from gdbext_gdbstub.hostpid import HostPathUnavailable, stub_pid
from gdbext_gdbstub.link import DebuggerLink, LiveTargetError, TargetLostError, TargetMemoryError
from gdbext_gdbstub.mapper import LiveMapper, ReadStats
from gdbext_gdbstub.options import LiveOptions, Naming
from gdbext_gdbstub.phymem import ModeBracket, PhyMemMode
from gdbext_gdbstub.ram import RamPiece, RamRanges, parse_mtree_pieces
from gdbext_gdbstub.readpath import (
    DirectMapReader,
    PhyMemReader,
    Reader,
    XpReader,
    xp_available,
)

if TYPE_CHECKING:
    from gdbext_gdbstub.livekernel import LiveVmcoreinfo

#: Symbol that holds the direct map's base in kernels with a randomised layout.
PAGE_OFFSET_SYMBOL = "page_offset_base"
#: A symbol only a Linux kernel has: with it, the target is taken to be Linux.
LINUX_SYMBOL = "linux_banner"
#: CR3's bits that address the root table (no PCID, no flags).
ROOT_MASK = 0x000F_FFFF_FFFF_F000
#: Finds the PID of the process that serves the gdbstub at an address (tests pass their own).
PidFinder = Callable[[tuple[str, int] | None], int]


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

    def __init__(
        self,
        link: DebuggerLink,
        description: str,
        naming: Naming,
        find_pid: PidFinder = stub_pid,
    ) -> None:
        self.link = link
        self.description = description
        self.naming = naming
        self.phymem = PhyMemMode(link)
        self.bracket = ModeBracket(self.phymem, link)
        self.mapper = LiveMapper(self.bracket, naming)
        self._cpus: dict[int, CpuState] = {}
        #: The CPU states read at the last stop, kept while the target runs (registers cannot
        #: be read then).
        self._kept_cpus: dict[int, CpuState] = {}
        #: The last :meth:`open` found the target running.
        self._ran = False
        #: The debugger's thread numbers at this stop (GDB asks the stub for them: 2-3 round
        #: trips that a stopped target answers the same way until it runs).
        self._threads: list[int] | None = None
        #: The thread numbers last read (a VM's vCPUs stay), for when the target runs.
        self._last_threads: list[int] = []
        self._phymem_ok: bool | None = None
        self._xp_ok: bool | None = None
        self._ram_probed = False
        self._ram_note = ""
        self._ram_pieces: list[RamPiece] = []
        self._find_pid = find_pid
        #: The host read path once probed (per connection): its reader, or why there is none.
        self._host_probed = False
        self._host_pid: int | None = None
        self._host: HostMemReader | None = None
        self._host_reason = ""
        self._host_checked_at = 0
        self._symbol_base: int | None = None
        self._is_linux: bool | None = None
        self._reader_key: tuple[str | None, int | None] | None = None
        self._vmcoreinfo: LiveVmcoreinfo | None = None
        #: What commands share for the stop (page tables, Linux's layout): every target
        #: :meth:`open` makes carries it, and :meth:`invalidate` clears it.
        self.stop_cache = StopCache(by_content=True)

    @property
    def vmcoreinfo(self) -> LiveVmcoreinfo:
        """The kernel's VMCOREINFO, found in memory when first asked for (imported then: the
        debuggers load this module at start-up)."""
        if self._vmcoreinfo is None:
            from gdbext_gdbstub.livekernel import LiveVmcoreinfo

            self._vmcoreinfo = LiveVmcoreinfo(self.mapper, self._ram_end)
        return self._vmcoreinfo

    @property
    def stats(self) -> ReadStats:
        return self.mapper.stats

    def invalidate(self) -> None:
        """Drop what one stop's cache holds: pages, threads, CPU states, VMCOREINFO and the
        commands' :attr:`stop_cache` (resume, writes, exit). The CPU states read at this
        stop are kept for commands while the target runs."""
        self._drop_pages()
        if self._cpus:
            self._kept_cpus = self._cpus
            self._cpus = {}
        self._threads = None

    def _drop_pages(self) -> None:
        self.mapper.clear()
        self.stop_cache.clear()
        if self._vmcoreinfo is not None:
            self._vmcoreinfo.invalidate()

    def stopped(self) -> None:
        """The target stopped again (GDB's stop event, LLDB's stop ID; :meth:`open` sees it
        too): drop what was read while it ran, and the CPU states of the stop before."""
        self._kept_cpus = {}
        self.invalidate()

    def registers_changed(self) -> None:
        """A register was written (GDB's event): drop the stop's cache and its CPU states,
        also those kept for when the target runs."""
        self.invalidate()
        self._kept_cpus = {}

    def forget_cpus(self) -> None:
        """Read the CPU states again when next asked (LLDB, at each command: a register write
        fires no event, and its own register cache makes reading them again cheap); until
        then, the ones read last are kept for when the target runs."""
        if self._cpus:
            self._kept_cpus = self._cpus
            self._cpus = {}

    def cpu_state(self, thread: int) -> CpuState:
        """The control registers of the debugger's thread ``thread`` (cached until
        :meth:`invalidate`)."""
        cpu = self._cpus.get(thread)
        if cpu is None:
            if self._ran:  # no register read while it runs: the last stop's, else unknown
                return self._kept_cpus.get(thread, CpuState())
            regs = self.link.registers(thread)
            cpu = CpuState(regs.get("cr0"), regs.get("cr3"), regs.get("cr4"), regs.get("efer"))
            self._cpus[thread] = cpu
        return cpu

    def thread_numbers(self) -> list[int]:
        """The debugger's thread numbers (cached until :meth:`invalidate`); while the target
        runs, the last ones known (asking would send a packet), else the selected thread."""
        if self._threads is None:
            if self._ran:
                selected = self.link.selected_thread()
                return self._last_threads or ([] if selected is None else [selected])
            self._threads = self._last_threads = self.link.thread_numbers()
        return self._threads

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
        self._ram_pieces = parse_mtree_pieces(text)
        ranges = merge_ranges([AddrRange(p.start, p.end) for p in self._ram_pieces])
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
        if via in (None, "host"):
            host = self._host_reader()
            if host is not None:
                return host
            if via == "host":
                raise LiveTargetError(f"--read-via host: {self._host_reason}")
        return self._stub_reader(options, None if via == "stub" else via)

    def _stub_reader(self, options: LiveOptions, via: str | None) -> Reader:
        """The reader through the stub: ``via`` names one, ``None`` takes the first that
        works (PhyMemMode, ``monitor xp``, the direct map)."""
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

    # --- the host read path (once per connection) ---

    def _host_reader(self) -> HostMemReader | None:
        """QEMU's memory on this host, checked once per connection; ``None`` (and
        :attr:`host_reason` says why) when it cannot be used."""
        if not self._host_probed:
            try:
                self._host = self._probe_host()
                self._host_reason = ""
                self._host_probed = True
            except HostPathUnavailable as exc:
                self._host_reason = exc.reason
                self._host_probed = not exc.for_now  # else asked again at the next command
        return self._host

    @property
    def host_reason(self) -> str:
        """Why the host read path is not used ("" when it is, or was not tried)."""
        return self._host_reason

    def _probe_host(self) -> HostMemReader:
        if self._host_pid is None:  # found once (no packet is sent for it)
            self._host_pid = self._find_pid(self.link.stub_address())
        self._probe_ram()
        if not self._ram_pieces:
            raise HostPathUnavailable(f"the guest's RAM map is {self._ram_note or 'unknown'}")
        root = self._root_to_check()
        reader = HostMemReader(self._host_pid, map_ram(self.link, self._ram_pieces))
        try:
            self._verify_host(reader, root)
        except BaseException:
            reader.close()
            raise
        return reader

    def _root_to_check(self) -> int:
        """The root table of the selected CPU's CR3, on which the host path is checked.
        :raises HostPathUnavailable: none in RAM (yet: a CPU before paging is asked again at
        the next command)."""
        threads = self.thread_numbers()
        selected = self.link.selected_thread()
        thread = selected if selected in threads else (threads[0] if threads else None)
        cr3 = None if thread is None else self.cpu_state(thread).cr3
        root = (cr3 or 0) & ROOT_MASK
        ram = self.mapper.ram
        if not root or (ram is not None and not ram.contains(root, PAGE)):
            raise HostPathUnavailable(
                "no page table in RAM (CR3) to check the host path on yet", for_now=True
            )
        return root

    def _verify_host(self, reader: HostMemReader, root: int) -> None:
        """Compare the table at ``root`` read through ``reader`` and through the stub.
        :raises HostPathUnavailable: cannot, or unequal."""
        try:
            stub = self._stub_reader(LiveOptions(), None)
        except LiveTargetError as exc:
            raise HostPathUnavailable(f"no stub path to check it against ({exc})") from None

        def stub_read(paddr: int, size: int) -> bytes:
            with self.bracket.scope():
                self.bracket.ensure(stub.mode)
                try:
                    return stub.read(paddr, size)
                except TargetMemoryError as exc:
                    raise HostPathUnavailable(
                        f"the gdbstub refused the table at 0x{paddr:x} ({exc})"
                    ) from None

        verified(reader, stub_read, root)
        self._host_checked_at = root

    def _kept_detail(self, threads: Sequence[int], index: int) -> str:
        """What ``info`` says of the CPU states while the target runs (``index``: the default
        CPU, the selected thread's, else CPU 0)."""
        kept = self._kept_cpus
        why = "registers cannot be read while the VM runs"
        if not kept:
            return (
                f"unknown: {why}, and none were read at its last stop (give --cr3 ADDR, or --phys)"
            )
        which = f"{self.naming.debugger} threads {_spans(list(kept))}"
        thread = threads[index] if index < len(threads) else None
        cpu = None if thread is None else kept.get(thread)
        if cpu is None or cpu.cr3 is None:
            return (
                f"as read at the last stop ({why}), of {which}; CPU {index}'s CR3 is unknown "
                "(give --cpu N or --cr3 ADDR)"
            )
        return (
            f"as read at the last stop ({why}), of {which}; CPU {index}'s CR3 0x{cpu.cr3:x} "
            "is the default root"
        )

    def _host_detail(self, reader: Reader) -> str | None:
        """What ``info`` says of the host read path: used (where, checked how) or why not."""
        if isinstance(reader, HostMemReader):
            return (
                f"QEMU process {reader.pid}, {len(reader.ranges)} RAM runs mapped by gpa2hva, "
                f"checked against the gdbstub on the table at 0x{self._host_checked_at:x}; "
                "reads neither stop nor change the VM"
            )
        if self._host_reason:
            return f"not used: {self._host_reason}"
        return None

    def _running_reader(self, options: LiveOptions) -> Reader:
        """The host path while the target runs, checked at an earlier stop (the check reads
        through the stub, which needs a stopped target). :raises LiveTargetError: none."""
        running = "the target is running"
        if options.read_via not in (None, "host"):
            raise LiveTargetError(
                f"{running}, and --read-via {options.read_via} reads through the gdbstub, which "
                f"{self.naming.debugger} cannot use until it stops: interrupt it first"
            )
        if self._host is not None:
            self.mapper.reader = self._host
            self._reader_key = (options.read_via, options.direct_map)
            return self._host
        only = "the host read path (the only one that reads a running VM)"
        if self._host_probed:
            raise LiveTargetError(f"{running}, and {only} is not usable: {self._host_reason}")
        note = f" ({self._host_reason})" if self._host_reason else ""
        raise LiveTargetError(
            f"{running}, and {only} was not checked yet{note}: it is checked against the "
            "gdbstub at a stop; interrupt the target and run a command there first"
        )

    def _reader(self, options: LiveOptions) -> Reader:
        if self._ran:
            return self._running_reader(options)
        key = (options.read_via, options.direct_map)
        reader = self.mapper.reader
        retry = options.read_via is None and not self._host_probed  # the host path, again
        if reader is None or key != self._reader_key or retry:
            reader = self._choose_reader(options)
            if self.mapper.reader is not None and reader.name != self.mapper.reader.name:
                self.mapper.clear()  # pages read another way are not trusted across paths
                self.stop_cache.clear()
            self.mapper.reader = reader
            self._reader_key = key
        return reader

    # --- the target ---

    def open(self, options: LiveOptions) -> Target:
        """The target for one command (cheap after the first call on a connection)."""
        if not self.link.connected():
            raise TargetLostError("lost the connection to the target")
        if isinstance(self.mapper.reader, HostMemReader):
            # The debugger notices a QEMU that died only at its next packet; the host path
            # sends none, so it looks itself.
            self.mapper.reader.check_alive()
        running = self.link.is_running()
        if running:  # pages read before are stale; the last stop's CPU states are kept
            if not self._ran:
                self.invalidate()  # the resume, if the debugger did not say
            self._drop_pages()
        elif self._ran:
            self.stopped()
        self._ran = running
        reader = self._reader(options)
        self._probe_ram()
        threads = self.thread_numbers()
        selected = self.link.selected_thread()
        details: dict[str, str] = {"connection": self.description}
        if running:
            details["state"] = (
                "running (reads from QEMU's memory while the VM runs; each read is consistent "
                "only with itself)"
            )
            default = threads.index(selected) if selected in threads else 0
            details["CPU state"] = self._kept_detail(threads, default)
        host = self._host_detail(reader)
        if host is not None:
            details["host memory"] = host
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
            stop_cache=self.stop_cache,
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
