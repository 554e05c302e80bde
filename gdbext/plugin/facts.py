"""What a backend knows of the kernel it opened, as typed fields.

A backend fills a :class:`KernelFacts` once per target; commands read its fields (the
kernel's root table for ``--kernel``, the selected CPU, whether labels apply). Facts that cost
a search (a VMCOREINFO found in RAM) are given as a function and computed on first use.

>>> facts = KernelFacts(os="linux", selected_cpu=1)
>>> facts.is_linux, facts.selected_cpu, facts.kernel_root
(True, 1, None)
>>> calls = []
>>> def find() -> VmcoreFacts:
...     calls.append(1)
...     return VmcoreFacts({"OSRELEASE": "6.1.0"}, kernel_root=0x2a10000, kernel_levels=4)
>>> lazy = KernelFacts(vmcoreinfo_source=find)
>>> hex(lazy.kernel_root), lazy.kernel_levels, lazy.is_linux, len(calls)
('0x2a10000', 4, True, 1)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property


@dataclass(frozen=True)
class VmcoreFacts:
    """What a kernel's VMCOREINFO says that commands use.

    :param entries: the ``KEY=value`` lines, as text (``SYMBOL(init_top_pgt)`` → ``"ffff..."``).
    :param kernel_root: physical address of the kernel's top table (``init_top_pgt`` moved by
        ``phys_base``), ``None`` if the note lacks what it takes.
    :param kernel_levels: 4 or 5, ``None`` if the note does not say.
    :param kernel_offset: the KASLR slide of the kernel image.
    """

    entries: Mapping[str, str]
    kernel_root: int | None = None
    kernel_levels: int | None = None
    kernel_offset: int | None = None


@dataclass(frozen=True)
class BootInfoFacts:
    """Where a scenario's ``BootInfo`` (the bootloader crate's) is, for ``heap``'s defaults."""

    at: int
    version: str = "0.11"
    features: tuple[str, ...] | None = None


@dataclass(frozen=True)
class KernelFacts:
    """What the backend knows of the kernel beyond memory and registers; every field may be
    unknown (``None``)."""

    #: ``"linux"`` when the backend knows the kernel is Linux without a VMCOREINFO (symbols).
    os: str | None = None
    #: The CPU the debugger has selected (its thread), the default for ``--cpu``.
    selected_cpu: int | None = None
    #: Where the backend found the direct map (live: ``page_offset_base`` read by symbol).
    direct_map_base: int | None = None
    #: Linux layout bases the backend read itself, preferred to a search of the tables.
    page_offset_base: int | None = None
    vmalloc_base: int | None = None
    vmemmap_base: int | None = None
    #: The memory map ``heap`` uses by default (``"bootinfo"`` for a scenario with one).
    memmap: str | None = None
    bootinfo: BootInfoFacts | None = None
    #: The VMCOREINFO, or a function finding it (called at most once, on first use).
    vmcoreinfo_source: VmcoreFacts | Callable[[], VmcoreFacts | None] | None = field(
        default=None, repr=False
    )

    @cached_property
    def vmcoreinfo(self) -> VmcoreFacts | None:
        """The kernel's VMCOREINFO facts, found on first use when the backend searches."""
        source = self.vmcoreinfo_source
        if source is None or isinstance(source, VmcoreFacts):
            return source
        return source()

    @property
    def kernel_root(self) -> int | None:
        """The kernel's top table (VMCOREINFO), ``None`` if unknown."""
        info = self.vmcoreinfo
        return None if info is None else info.kernel_root

    @property
    def kernel_levels(self) -> int | None:
        """The kernel's paging levels (VMCOREINFO), ``None`` if unknown."""
        info = self.vmcoreinfo
        return None if info is None else info.kernel_levels

    @property
    def kernel_offset(self) -> int | None:
        """The kernel image's KASLR slide (VMCOREINFO), ``None`` if unknown."""
        info = self.vmcoreinfo
        return None if info is None else info.kernel_offset

    @property
    def is_linux(self) -> bool:
        """Whether the kernel is known to be Linux: a VMCOREINFO, or the backend says so."""
        if self.os == "linux":
            return True
        info = self.vmcoreinfo
        return info is not None and bool(info.entries)
