"""What a backend opens: physical memory plus the CPU state it knows.

A backend plugin describes itself with a :class:`BackendInfo` (name, options, an ``open``
function) and returns a :class:`Target` when opened. The command layer works on targets only,
so the same command runs on a simulator, a dump or a live debugger.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TypeVar

from gdbext.addr import AddrRange
from gdbext.cpu import CpuState
from gdbext.errors import UsageError
from gdbext.mapper import FrameAllocator, PhysMapper
from gdbext.tlbflush import FlushHook


@dataclass(frozen=True)
class BackendOption:
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
    #: Extra facts for ``info`` (name -> value, already formatted).
    details: Mapping[str, str] = field(default_factory=dict)
    #: Defaults a backend suggests to commands (e.g. ``bootinfo_at`` for ``heap``).
    hints: Mapping[str, object] = field(default_factory=dict)
    #: Called when the target is no longer needed.
    close: Callable[[], None] | None = None
    #: A context manager a front end enters around each command, for backends that must set
    #: and restore state around their reads (QEMU's PhyMemMode); ``None`` if not needed.
    command_scope: Callable[[], AbstractContextManager[None]] | None = None

    def cpu(self, index: int = 0) -> CpuState:
        if not 0 <= index < len(self.cpus):
            raise UsageError(f"there is no CPU {index}; this target has {len(self.cpus)}")
        return self.cpus[index]


@dataclass(frozen=True)
class BackendInfo:
    """A backend as a plugin declares it."""

    name: str
    summary: str
    open: Callable[[OpenRequest], Target]
    options: Sequence[BackendOption] = ()


V = TypeVar("V")


class LazyMapping(Mapping[str, V]):
    """A mapping whose ``lazy`` part is computed on the first look-up that needs it (a
    target's hints and details that cost a search, e.g. VMCOREINFO found in RAM).

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
