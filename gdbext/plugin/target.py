"""What a backend opens: physical memory plus the CPU state it knows.

A backend plugin describes itself with a :class:`BackendInfo` (name, options, an ``open``
function) and returns a :class:`Target` when opened. The command layer works on targets only,
so the same command runs on a simulator, a dump or a live debugger.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, TypeVar, cast

from gdbext.errors import UsageError
from gdbext.plugin.facts import KernelFacts

if TYPE_CHECKING:
    from gdbext.addr import AddrRange
    from gdbext.cpu import CpuState
    from gdbext.mapper import FrameAllocator, PhysMapper
    from gdbext.x86.runs import SummaryStore
    from gdbext.x86.tlbflush import FlushHook


class Detail(str):
    """One fact of :attr:`Target.details` with a typed value: the ``str`` is its text for
    people (``info``'s text output), :attr:`value` is for machines (``info --json``): an
    ``int``, a ``bool``, an address as a ``"0x…"`` string, or a mapping of such; no units.

    >>> d = Detail.number(4096, "bytes")
    >>> str(d), d.value
    ('4096 bytes', 4096)
    >>> Detail.address(0x2a10000, "init_top_pgt + phys_base").value
    '0x2a10000'
    """

    value: int | bool | str | Mapping[str, int | bool | str]

    def __new__(cls, text: str, value: int | bool | str | Mapping[str, int | bool | str]) -> Detail:
        obj = super().__new__(cls, text)
        obj.value = value
        return obj

    @classmethod
    def number(cls, value: int, unit: str = "") -> Detail:
        """A count, shown with its ``unit`` (``4096 bytes``)."""
        return cls(f"{value} {unit}" if unit else str(value), value)

    @classmethod
    def address(cls, value: int, note: str = "") -> Detail:
        """An address or other hex quantity, with an optional ``note`` in parentheses."""
        return cls(f"0x{value:x} ({note})" if note else f"0x{value:x}", f"0x{value:x}")

    @classmethod
    def flag(cls, value: bool, why: str = "") -> Detail:
        """A yes/no fact, shown as ``yes (why)``."""
        text = "yes" if value else "no"
        return cls(f"{text} ({why})" if why else text, value)


class BackendOption(NamedTuple):
    """A command-line option a backend needs, e.g. the simulator's ``--scenario FILE``."""

    name: str
    metavar: str
    help: str
    required: bool = False


@dataclass(frozen=True)
class OpenRequest:
    """What the user asked to open: an optional positional source and backend options."""

    source: str | None = None
    options: Mapping[str, str | None] = field(default_factory=dict)

    def option(self, name: str) -> str:
        """The value of a required option; :class:`UsageError` if it was not given."""
        value = self.options.get(name)
        if value is None:
            raise UsageError(f"--{name.replace('_', '-')} is required")
        return value


V = TypeVar("V")


class StopCache:
    """What commands share while the target's memory and CPU state stay as they are: the page
    tables they open (with the tables and summaries those keep) and what is derived from
    them (Linux's layout).

    The backend owns it and clears it whenever the memory or the CPUs may have changed: a
    live target at every resume, memory or register write; a dump's never. Each value is
    made by the ``make`` of its first :meth:`get`; its key names everything the value depends
    on besides the memory (a page table's root, levels, NXE, MAXPHYADDR).

    >>> cache = StopCache()
    >>> cache.get(("answer",), lambda: 42), cache.get(("answer",), lambda: 0)
    (42, 42)
    >>> cache.clear(); cache.get(("answer",), lambda: 0)
    0
    """

    def __init__(self, limit: int = 64, *, by_content: bool = False) -> None:
        #: How many values are kept (the oldest goes first).
        self.limit = limit
        self._values: dict[Hashable, object] = {}
        #: With ``by_content`` (a target whose memory changes: a live one), leaf-table
        #: summaries keyed by the tables' bytes: valid whatever the memory does later, so
        #: :meth:`clear` keeps them. The walk after a resume reads the tables again and
        #: summarises only those that changed.
        self.by_content: SummaryStore | None = {} if by_content else None

    def get(self, key: Hashable, make: Callable[[], V]) -> V:
        """The value kept under ``key``, made by ``make`` (and kept) if there is none."""
        values = self._values
        if key in values:
            return cast(V, values[key])
        value = make()
        if len(values) >= self.limit:
            del values[next(iter(values))]
        values[key] = value
        return value

    def clear(self) -> None:
        """Forget every value (the target's memory or CPU state may have changed)."""
        self._values.clear()


@dataclass
class Target:
    """An opened backend."""

    #: The backend's name (``"sim"``, ``"core"``, ``"gdb"``...).
    backend: str
    #: What was opened, for people (a file name, ``host:port``).
    description: str
    mapper: PhysMapper
    #: Per-CPU control registers; index = CPU number.
    cpus: Sequence[CpuState]
    #: Physical RAM ranges, when the backend knows them.
    ram: Sequence[AddrRange] | None = None
    #: How physical memory is read, for ``info`` (``"in-memory"``, ``"PhyMemMode"``...).
    read_path: str = ""
    #: Called with each TLB flush a page-table change requires.
    flush_hook: FlushHook | None = None
    #: A frame allocator for page-table changes, when the backend owns its memory.
    frame_allocator: FrameAllocator | None = None
    #: Extra facts for ``info``: name -> text, a :class:`Detail` where the value is typed.
    details: Mapping[str, str] = field(default_factory=dict)
    #: What the backend knows of the kernel (its VMCOREINFO, the selected CPU...).
    facts: KernelFacts = field(default_factory=KernelFacts)
    #: Called when the target is no longer needed.
    close: Callable[[], None] | None = None
    #: A context manager a front end enters around each command, for backends that must set
    #: and restore state around their reads (QEMU's PhyMemMode); ``None`` if not needed.
    command_scope: Callable[[], AbstractContextManager[None]] | None = None
    #: Warnings about the target's own data that a command came upon (a VMCOREINFO value out
    #: of range, ignored): each is returned once, by the first call after it arose; front ends
    #: call it after each command and show them on their warning path. ``None``: never any.
    notices: Callable[[], Sequence[str]] | None = None
    #: What commands share until the backend clears it (see :class:`StopCache`): a backend
    #: that knows every change of its memory (a live stop, a dump) gives one; ``None`` (a
    #: simulator's memory, which whoever holds the mapper may write) makes each command
    #: read afresh.
    stop_cache: StopCache | None = None

    def cpu(self, index: int = 0) -> CpuState:
        if not 0 <= index < len(self.cpus):
            raise UsageError(f"there is no CPU {index}; this target has {len(self.cpus)}")
        return self.cpus[index]


class BackendInfo(NamedTuple):
    """A backend as a plugin declares it."""

    name: str
    summary: str
    open: Callable[[OpenRequest], Target]
    options: Sequence[BackendOption] = ()
    #: What the backend takes as its source operand (``"HOST:PORT"``), for messages; ``""``:
    #: it takes none (the dump backend, which takes the DUMP, excepted).
    source: str = ""


class LazyMapping(Mapping[str, V]):
    """A mapping whose ``lazy`` part is computed on the first look-up that needs it (a
    target's details that cost a search, e.g. VMCOREINFO found in RAM).

    :param static: entries known at open time.
    :param lazy: computes the other entries (called at most once).
    :param lazy_keys: keys that need ``lazy``; ``None``: any key not in ``static``.
    """

    def __init__(
        self,
        static: dict[str, V],
        lazy: Callable[[], Mapping[str, V]],
        lazy_keys: frozenset[str] | None = None,
    ) -> None:
        self._static = static
        self._lazy: Callable[[], Mapping[str, V]] | None = lazy
        self._keys = lazy_keys

    def _resolve(self) -> dict[str, V]:
        if self._lazy is not None:
            lazy, self._lazy = self._lazy, None
            self._static = {**self._static, **lazy()}
        return self._static

    def __getitem__(self, key: str) -> V:
        if key in self._static:
            return self._static[key]
        if self._lazy is not None and (self._keys is None or key in self._keys):
            return self._resolve()[key]
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._resolve())

    def __len__(self) -> int:
        return len(self._resolve())
