"""What a live backend is called and which options it takes: :class:`Naming`, the
:data:`LIVE_OPTIONS` both debuggers' backends declare, and :class:`LiveOptions`, those options
checked for one open.

Light on purpose: each debugger's ``plugin.py`` imports it when the plugin host lists the
backends (``gdbext backends``), long before anything is read.
"""

from __future__ import annotations

from typing import NamedTuple

from gdbext.errors import UsageError
from gdbext.geometry import PAGE_SIZE
from gdbext.plugin.target import BackendOption, OpenRequest
from gdbext.units import parse_int, shown

#: ``--read-via`` values: ``auto`` (the default) reads QEMU's memory on this host when it can
#: (:mod:`gdbext_gdbstub.hostmem`), else through the stub; ``stub`` reads through the stub only
#: (PhyMemMode, else ``monitor xp``, else the direct map); the others name one path.
READ_VIA = ("auto", "host", "stub", "phymem", "xp", "direct-map")

#: What the live backends do (``gdb``, and ``lldb`` over the same logic).
LIVE_SUMMARY = "QEMU's gdbstub (its RAM on this host, PhyMemMode), KGDB via the direct map"
#: The options of the live backends (:class:`LiveOptions` reads them).
LIVE_OPTIONS = (
    BackendOption(
        "direct_map",
        "ADDR",
        "read physical memory through the kernel's direct map at ADDR (stubs without PhyMemMode "
        "or monitor xp: KGDB, VMware)",
    ),
    BackendOption(
        "read_via",
        "PATH",
        "auto (default: QEMU's memory on this host if it checks out, else the stub), host, "
        "stub (PhyMemMode, else xp, else direct-map), phymem, xp or direct-map",
    ),
)


class Naming(NamedTuple):
    """Who reads: the backend's name and its debugger's, for messages and ``info``. (A named
    tuple: every command line loads the plugins that name theirs, and making a dataclass
    costs start-up time.)"""

    #: The backend plugin's name (``gdb``, ``lldb``).
    backend: str
    #: The debugger, as people call it (``GDB``, ``LLDB``).
    debugger: str


class LiveOptions(NamedTuple):
    """The backend options of one open."""

    #: ``--direct-map ADDR``: the kernel direct map's base (reads through it).
    direct_map: int | None = None
    #: ``--read-via host|stub|phymem|xp|direct-map``; ``None`` (``auto``): the host path if it
    #: checks out, else the first stub path that works (``direct-map`` when ``direct_map`` is
    #: given).
    read_via: str | None = None

    @classmethod
    def from_request(cls, request: OpenRequest, naming: Naming) -> LiveOptions:
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
            if direct >= 1 << 64 or direct & (PAGE_SIZE - 1):
                raise UsageError(f"--direct-map 0x{direct:x} is not a page-aligned address")
        via = request.options.get("read_via")
        if via is not None and via not in READ_VIA:
            raise UsageError(f"--read-via must be one of {', '.join(READ_VIA)}, not {shown(via)}")
        if via == "auto":
            via = None
        if via is None and direct is not None:
            via = "direct-map"
        return cls(direct, via)
