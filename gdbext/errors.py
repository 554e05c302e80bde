"""The one error tree of gdbext.

Every error a user can cause derives from :class:`GdbextError`. Errors carry data (address,
level, entry, file, offset) as attributes, and render a one-line message with ``str()``.
Front ends catch :class:`GdbextError` once: the command line prints the message and exits with
:attr:`GdbextError.exit_status`; GDB raises it as a ``gdb.GdbError``.

Exit statuses (the command line's documented contract):

- ``0``: success;
- ``1``: :class:`NotFoundError` (an address that is not mapped, nothing found);
- ``2``: every other error: bad input, usage, a malformed file or page table;
- ``3``: ``audit --fail-on SEVERITY`` found something at least that severe
  (:data:`EXIT_FINDINGS`; not an error: the findings are printed).

>>> e = NotMappedError(0xFFFF800000001000, level=2, entry=0)
>>> str(e)
'0xffff800000001000 is not mapped: its PD entry is not present (value 0x0)'
>>> e.exit_status
1
"""

from __future__ import annotations

from gdbext.geometry import index_shift, level_name

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_BAD_INPUT = 2
#: ``audit --fail-on``: findings at or above the given severity.
EXIT_FINDINGS = 3


class GdbextError(Exception):
    """Root of every gdbext error. ``str(err)`` is a one-line message."""

    exit_status: int = EXIT_BAD_INPUT

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# --- Addresses -------------------------------------------------------------------------------


class AddressError(GdbextError):
    """An address that cannot be used as given."""

    def __init__(self, message: str, address: int) -> None:
        super().__init__(message)
        self.address = address


class NonCanonicalAddressError(AddressError):
    """A virtual address whose high bits are not a sign extension of bit ``va_bits - 1``."""

    def __init__(self, address: int, va_bits: int) -> None:
        super().__init__(
            f"0x{address:x} is not canonical for {va_bits}-bit virtual addresses", address
        )
        self.va_bits = va_bits


class AddressOutOfRangeError(NonCanonicalAddressError):
    """A virtual address that does not fit in 64 bits (or is negative): no paging mode has it
    (a kind of non-canonical address, with its own message)."""

    def __init__(self, address: int, va_bits: int = 48) -> None:
        shown = f"-0x{-address:x}" if address < 0 else f"0x{address:x}"
        AddressError.__init__(self, f"{shown} is out of range: addresses are 64-bit", address)
        self.va_bits = va_bits


class MisalignedAddressError(AddressError):
    """An address that must be aligned to ``alignment`` bytes and is not."""

    def __init__(self, address: int, alignment: int, what: str = "address") -> None:
        super().__init__(f"{what} 0x{address:x} is not aligned to 0x{alignment:x}", address)
        self.alignment = alignment


# --- Physical memory -------------------------------------------------------------------------


class PhysMemoryError(GdbextError):
    """A physical access outside the memory a backend has (outside RAM, not in a dump)."""

    def __init__(
        self, paddr: int, size: int, reason: str = "outside RAM", access: str = "access"
    ) -> None:
        super().__init__(f"physical {access} of {size} bytes at 0x{paddr:x}: {reason}")
        self.paddr = paddr
        self.size = size
        self.reason = reason


class NotCapturedError(PhysMemoryError):
    """Physical memory that exists but is not in the dump (say, excluded by makedumpfile's dump
    level). Not the same as "outside RAM", and never the same as "not mapped"."""

    def __init__(self, paddr: int, size: int, reason: str = "not captured in the dump") -> None:
        super().__init__(paddr, size, reason, "read")


class ReadOnlyError(GdbextError):
    """A write that gdbext refuses: the mapper is read-only or the caller did not opt in."""


# --- Page-table walks ------------------------------------------------------------------------


class TranslationError(GdbextError):
    """A walk that stopped at ``level`` because of ``entry`` (``None`` before any entry).

    ``steps`` are the levels walked up to the stop, top first, each a
    :class:`~gdbext.x86.paging.WalkStep` ``(level, table, index, entry)``, the last one holding
    ``entry`` (empty when the walk did not start, or the error did not come from a walk).
    """

    def __init__(self, message: str, vaddr: int, level: int, entry: int | None) -> None:
        super().__init__(message)
        self.vaddr = vaddr
        self.level = level
        self.entry = entry
        self.steps: tuple[tuple[int, int, int, int], ...] = ()


class UntranslatedError(GdbextError):
    """Addresses that ``translate`` could not translate for a reason of exit status 2 (not
    canonical, out of range, reserved bits, an unreadable page): raised by a front end after
    the other addresses' results were printed, so that the message goes where errors go.
    ``errors`` are the per-address errors; the message names at most :attr:`SHOWN` of them."""

    SHOWN = 3

    def __init__(self, command: str, errors: list[TranslationError]) -> None:
        shown = "; ".join(str(e) for e in errors[: self.SHOWN])
        more = len(errors) - self.SHOWN
        if more > 0:
            shown += f"; and {more} more"
        super().__init__(f"{command}: {shown}" if command else shown)
        self.errors = errors


class NotFoundError(GdbextError):
    """Marker base for "nothing there" results: exit status 1."""

    exit_status = EXIT_NOT_FOUND


class ReadGapError(NotFoundError):
    """Raw bytes asked for a read that has gaps (pages not mapped, not captured, not readable):
    raw output has no place to say so, and gdbext never writes zeros for bytes it does not
    know. ``address``, ``size`` and ``reason`` are the first gap's; ``count`` the gaps."""

    def __init__(self, address: int, size: int, reason: str, count: int = 1) -> None:
        more = f" (and {count - 1} more gap{'' if count == 2 else 's'})" if count > 1 else ""
        super().__init__(
            f"raw output stops at a gap: 0x{address:x}-0x{address + size:x} {reason}{more}; "
            "give --fill BYTE to write that byte in gaps, or see them with --format hexdump"
        )
        self.address = address
        self.size = size
        self.reason = reason
        self.count = count


class NotMappedError(TranslationError, NotFoundError):
    """The entry at ``level`` is not present."""

    exit_status = EXIT_NOT_FOUND

    def __init__(self, vaddr: int, level: int, entry: int) -> None:
        super().__init__(
            f"0x{vaddr:x} is not mapped: its {level_name(level)} entry is not present "
            f"(value 0x{entry:x})",
            vaddr,
            level,
            entry,
        )


class ReservedBitsError(TranslationError):
    """The entry at ``level`` has reserved bits set (the MMU would raise #PF with RSVD)."""

    def __init__(self, vaddr: int, level: int, entry: int, bits: int) -> None:
        super().__init__(
            f"0x{vaddr:x}: {level_name(level)} entry 0x{entry:016x} has reserved bits "
            f"0x{bits:x} set",
            vaddr,
            level,
            entry,
        )
        self.bits = bits


class HugePageForbiddenError(ReservedBitsError):
    """HUGE_PAGE set in a PML4 or PML5 entry, where the architecture reserves it."""

    def __init__(self, vaddr: int, level: int, entry: int) -> None:
        TranslationError.__init__(
            self,
            f"0x{vaddr:x}: {level_name(level)} entry 0x{entry:016x} has HUGE_PAGE set, "
            f"which {level_name(level)} does not allow",
            vaddr,
            level,
            entry,
        )
        self.bits = 1 << 7


#: Every x86-64 CPU has at least this many physical-address bits (MAXPHYADDR >= 36).
MIN_PHYS_BITS = 36


class TableOutsideRamError(TranslationError):
    """A table (the root, or the one an entry at ``level`` points to) is not in memory.

    ``entry`` is ``None`` when the root table itself is outside physical memory. With
    ``phys_bits_known`` false (the target does not say its CPU's MAXPHYADDR, so the walk took
    52 and reserved no address bit) and an address with a bit at or above 36 set, the message
    says that those bits are reserved bits on a CPU that narrow: gdbext cannot tell which.
    """

    def __init__(
        self,
        vaddr: int,
        level: int,
        entry: int | None,
        table: int,
        phys_bits_known: bool = True,
    ) -> None:
        if entry is None:
            message = f"the root table 0x{table:x} is outside physical memory"
        else:
            message = (
                f"0x{vaddr:x}: {level_name(level)} entry 0x{entry:016x} points to table "
                f"0x{table:x}, which is outside physical memory"
            )
        top = table.bit_length() - 1
        if not phys_bits_known and top >= MIN_PHYS_BITS:
            message += (
                f" (address bit {top} is set: reserved bits on a CPU whose MAXPHYADDR is "
                f"{top} or less, as QEMU's qemu64 (40); the target does not say its width)"
            )
        super().__init__(message, vaddr, level, entry)
        self.table = table
        #: The level of the table that could not be read, and the index the walk wanted in it.
        self.table_level = level if entry is None else level - 1
        self.table_index = (vaddr >> index_shift(self.table_level)) & 0x1FF


class TableNotCapturedError(TranslationError):
    """A table that is in RAM but not in the dump: whether the address is mapped is unknown.

    Exit status 1, like "not mapped", but a different result with its own message.
    """

    exit_status = EXIT_NOT_FOUND

    def __init__(self, vaddr: int, level: int, entry: int | None, table: int) -> None:
        where = (
            "the root table"
            if entry is None
            else f"{level_name(level)} entry 0x{entry:016x} points to table"
        )
        super().__init__(
            f"0x{vaddr:x}: {where} 0x{table:x}, which is not captured in the dump "
            "(unknown whether it is mapped)",
            vaddr,
            level,
            entry,
        )
        self.table = table
        #: The level of the table that could not be read, and the index the walk wanted in it.
        self.table_level = level if entry is None else level - 1
        self.table_index = (vaddr >> index_shift(self.table_level)) & 0x1FF


# --- Page-table changes ----------------------------------------------------------------------


class MappingError(GdbextError):
    """A map, unmap or flag update that cannot be done."""

    def __init__(self, message: str, vaddr: int, level: int | None, entry: int | None) -> None:
        super().__init__(message)
        self.vaddr = vaddr
        self.level = level
        self.entry = entry


class AlreadyMappedError(MappingError):
    """The leaf slot for ``vaddr`` already holds a present entry."""

    def __init__(self, vaddr: int, level: int, entry: int) -> None:
        super().__init__(
            f"0x{vaddr:x} is already mapped: {level_name(level)} entry 0x{entry:016x}",
            vaddr,
            level,
            entry,
        )


class TableInTheWayError(AlreadyMappedError):
    """A huge page was asked for where an entry links a lower page table."""

    def __init__(self, vaddr: int, level: int, entry: int) -> None:
        MappingError.__init__(
            self,
            f"0x{vaddr:x}: {level_name(level)} entry 0x{entry:016x} links a page table; unmap its "
            "pages and clean up before mapping a huge page there",
            vaddr,
            level,
            entry,
        )


class EntryInUseError(MappingError):
    """A non-present entry with other bits set (an OS's swap or bookkeeping entry).

    gdbext never overwrites, interprets as mapped, or frees such an entry.
    """

    def __init__(self, vaddr: int, level: int, entry: int) -> None:
        super().__init__(
            f"0x{vaddr:x}: {level_name(level)} entry 0x{entry:016x} is not present but not empty; "
            "refusing to overwrite it",
            vaddr,
            level,
            entry,
        )


class ParentHugePageError(MappingError):
    """A parent entry of ``vaddr`` is a huge-page leaf, so no table lies below it."""

    def __init__(self, vaddr: int, level: int, entry: int) -> None:
        super().__init__(
            f"0x{vaddr:x}: {level_name(level)} entry 0x{entry:016x} maps a huge page",
            vaddr,
            level,
            entry,
        )


class PageSizeMismatchError(MappingError):
    """The page at ``vaddr`` is mapped, but with another page size than asked for."""

    def __init__(self, vaddr: int, level: int, entry: int, wanted: int) -> None:
        super().__init__(
            f"0x{vaddr:x} is mapped by {level_name(level)} entry 0x{entry:016x}, "
            f"not as a 0x{wanted:x}-byte page",
            vaddr,
            level,
            entry,
        )
        self.wanted = wanted


class FrameAllocationError(MappingError):
    """The frame allocator had no frame for a new page table."""

    def __init__(self, vaddr: int, level: int) -> None:
        super().__init__(
            f"0x{vaddr:x}: no frame for a new {level_name(level)} table", vaddr, level, None
        )


# --- Input -----------------------------------------------------------------------------------


class InputError(GdbextError):
    """Bad input from a user or a file; ``path`` and ``offset`` say where when known."""

    def __init__(self, message: str, path: str | None = None, offset: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}: "
            if offset is not None:
                where = f"{path} at offset 0x{offset:x}: "
        elif offset is not None:
            where = f"at 0x{offset:x}: "
        super().__init__(where + message)
        self.path = path
        self.offset = offset


class SymbolFileError(InputError):
    """A ``System.map`` or ``vmlinux`` that cannot be read as one; ``line`` (1-based) says
    where in a ``System.map`` when a line is at fault."""

    def __init__(self, message: str, path: str, line: int | None = None) -> None:
        super().__init__(message, path)
        if line is not None:
            self.message = f"{path}:{line}: {message}"
        self.line = line


class UnknownSymbolError(InputError):
    """A symbol name the loaded symbols do not have (or symbols are needed and none were
    given)."""

    def __init__(self, name: str, source: str | None, hint: str = "") -> None:
        super().__init__(
            f"no symbol {name!r} in {source}{hint}"
            if source is not None
            else f"{name!r} is not a number (give --system-map FILE or --vmlinux FILE for symbol "
            "names)"
        )
        self.name = name
        self.source = source


class PagingLevelsError(InputError):
    """A number of paging levels other than 4 and 5 (x86-64 has no other)."""

    def __init__(self, levels: int) -> None:
        super().__init__(f"x86-64 paging has 4 or 5 levels, not {levels}")
        self.levels = levels


class PhysBitsError(InputError):
    """A MAXPHYADDR (physical-address width) outside what x86-64 paging allows."""

    def __init__(self, max_phys_bits: int, lowest: int, highest: int) -> None:
        super().__init__(f"MAXPHYADDR must be {lowest}..{highest}, not {max_phys_bits}")
        self.max_phys_bits = max_phys_bits
        self.lowest = lowest
        self.highest = highest


class LayoutError(InputError):
    """Bases that do not make a Linux x86-64 layout (out of order, outside their ranges), or
    a paging mode Linux's layout does not have."""

    def __init__(self, reason: str, levels: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.levels = levels


class DebugInfoError(InputError):
    """Type information (the kernel's BTF, a vmlinux's DWARF) that is malformed, missing, or
    lacks a type or member asked for."""


class DwarfError(DebugInfoError):
    """A vmlinux whose DWARF cannot be read, is absent (no debug info), or lacks a structure
    or member asked for; ``path`` is the file."""

    def __init__(self, reason: str, path: str) -> None:
        super().__init__(f"DWARF: {reason}", path)
        self.reason = reason


class BtfError(DebugInfoError):
    """BTF (the kernel's type information) that is malformed, or lacks a type or member asked
    for; ``offset`` is where the bad bytes are (a physical address in a dump, or an offset in
    a file), when known."""

    def __init__(self, reason: str, offset: int | None = None) -> None:
        GdbextError.__init__(
            self, f"BTF: {reason}" if offset is None else f"BTF at 0x{offset:x}: {reason}"
        )
        self.path = None
        self.offset = offset
        self.reason = reason


class TaskListError(InputError):
    """A kernel task list that ends badly: a cycle that misses its head, a pointer the kernel's
    tables do not map or the backend cannot read, or more entries than the walk takes. The
    tasks read before are kept by the walk's result; ``read`` says how many."""

    def __init__(self, reason: str, read: int = 0) -> None:
        super().__init__(f"the task list stopped after {read} tasks: {reason}")
        self.reason = reason
        self.read = read


class WalkLimitError(InputError):
    """A walk that would produce more leaf entries than allowed (shared tables multiplying)."""

    def __init__(self, limit: int, vaddr: int) -> None:
        super().__init__(
            f"the walk passed {limit} leaf entries at 0x{vaddr:x}; shared tables may be "
            "multiplying (narrow it with --range, or raise --max-leaves, 0 for no limit; the "
            "text output shows shared tables once)"
        )
        self.limit = limit
        self.vaddr = vaddr


class OutputLimitError(InputError):
    """A per-leaf output (``qemu-tlb``, ``ptdump``, JSON, ``--no-merge``) that would write more
    lines than allowed: tables linked under many entries multiply them, and such an output
    does not collapse them as the text output does."""

    def __init__(self, fmt: str, limit: int, vaddr: int) -> None:
        super().__init__(
            f"--format {fmt} stopped after {limit} lines, at 0x{vaddr:x}: shared tables may be "
            "multiplying them (narrow it with --range, or raise --max-lines, 0 for no limit; "
            "the text output shows shared tables once)"
        )
        self.format = fmt
        self.limit = limit
        self.vaddr = vaddr


class AliasLimitError(InputError):
    """An audit whose tables map more distinct leaf runs through shared tables than it takes:
    tables linked again under other permissions, at several levels (an alias bomb)."""

    def __init__(self, limit: int, vaddr: int, table: int) -> None:
        super().__init__(
            f"the audit passed {limit} leaf runs mapped through shared tables, at 0x{vaddr:x} "
            f"(a link to table 0x{table:x}): tables linked again and again under differing "
            "permissions (an alias bomb?) are not audited run by run"
        )
        self.limit = limit
        self.vaddr = vaddr
        self.table = table


class UsageError(InputError):
    """A command used with wrong or missing arguments."""


class WalkOptionError(UsageError):
    """A walk asked for with an option value it does not take (``option`` = ``value``)."""

    def __init__(self, option: str, value: object, message: str) -> None:
        super().__init__(message)
        self.option = option
        self.value = value


class PluginError(GdbextError):
    """A backend or plugin that is missing, blocked or broken."""


class AuditRuleError(PluginError):
    """An audit rule (a plugin's) that raised, or returned what is not a valid finding;
    ``rule`` is its id."""

    def __init__(self, message: str, rule: str) -> None:
        super().__init__(message)
        self.rule = rule


class FindingsError(GdbextError):
    """``audit --fail-on``: findings at or above the severity (a debugger front end raises it
    after printing them; the command line exits with the status). ``fail_on`` is the severity
    (``"medium"``), ``count`` how many findings are at least that severe."""

    exit_status = EXIT_FINDINGS

    def __init__(self, message: str, fail_on: str = "", count: int = 0) -> None:
        super().__init__(message)
        self.fail_on = fail_on
        self.count = count


class NoUsableMemoryError(NotFoundError):
    """A memory map with no usable region (the heap locator has nothing to choose)."""

    def __init__(self, message: str = "the memory map has no usable region of 4 KiB or more"):
        super().__init__(message)
