"""The Python API: open a target, choose a page table, then translate, walk and audit it.

``gdbext.open`` (this module's :func:`open_target`) opens what the command line opens (a dump
file with the ``core`` backend, or any backend by name with its options as keywords) and
returns an :class:`OpenedTarget`; its :meth:`~OpenedTarget.page_table` chooses a root the way
``--cpu``, ``--cr3``, ``--kernel``, ``--user-pgd`` and ``--pid``/``--comm``/``--exe`` do
(:func:`gdbext.frontend.commands.open_page_table`
resolves both), and the :class:`PageTable` it returns has :meth:`~PageTable.translate`,
:meth:`~PageTable.walk` and :meth:`~PageTable.audit`. They return the engine's own values
(:class:`~gdbext.x86.paging.Translation`, :class:`~gdbext.x86.paging.Mapping`,
:class:`~gdbext.audit.engine.AuditResult` of :class:`~gdbext.audit.model.Finding`), whose reprs
show addresses in hex, and raise :class:`~gdbext.errors.GdbextError` subclasses.

Live targets (the ``gdb`` and ``lldb`` backends, inside their debugger, and ``gdbstub``
anywhere: ``gdbext.open(backend="gdbstub", address="127.0.0.1:1234")``) hold state per stop:
every call opens the target again and enters its command scope (QEMU's PhyMemMode bracket), as
the debuggers' ``pt-*`` commands do, so a page table chosen by CPU follows that CPU's CR3 from
one stop to the next.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

from gdbext.addr import AddrRange
from gdbext.audit.registry import audit_rules
from gdbext.errors import InputError, UsageError
from gdbext.frontend import commands
from gdbext.permfilter import PermFilter
from gdbext.plugin.host import DUMP_BACKEND, Host
from gdbext.plugin.target import BackendInfo, OpenRequest, Target
from gdbext.units import parse_int
from gdbext.x86.paging import X86PageTable
from gdbext.x86.records import Anomaly, LeafRun, Mapping, Translation

if TYPE_CHECKING:
    from gdbext.audit.engine import AuditResult

__all__ = ["Mappings", "OpenedTarget", "PageTable", "open_target"]

#: Default bound on the leaves :meth:`PageTable.walk` returns: a list holds each (about 230
#: bytes a leaf), so the bound is lower than the streaming command line's (2,097,152 leaves,
#: about 470 MB; a kernel with 128 MiB has 73,000, ESPFIX's 65,536 included).
WALK_MAX_LEAVES = 1 << 21

#: An address as the API takes it: an int, or text as the command line takes it (``"0x..."``).
Address = int | str


def open_target(
    source: str | os.PathLike[str] | None = None,
    *,
    backend: str | None = None,
    host: Host | None = None,
    **options: str | int | None,
) -> OpenedTarget:
    """Open a dump file (backend ``core``, format from its magic) or the backend ``backend``.

    :param source: the dump file (``core``), or the source of another backend that takes one
        (``gdbstub``: ``"HOST:PORT"``, as ``address=``).
    :param backend: ``"core"`` (the default with a ``source``), ``"sim"``, ``"gdb"`` (inside
        GDB), ``"lldb"`` (inside LLDB), ``"gdbstub"`` (no debugger; closing the target leaves
        the VM as it was found), or any backend a plugin provides.
    :param host: the plugin host (default: a new one, with the installed plugins).
    :param options: the backend's options, as the command line names them without ``--``
        (``scenario="demo.json"``, ``format_in="raw"``, ``base=0x100000``...).
    :raises UsageError: an unknown backend or option, a missing required option.
    """
    if host is None:
        host = Host.create()
    name = backend
    if name is None:
        if source is None:
            raise UsageError("gdbext.open needs a dump file or backend=NAME")
        name = DUMP_BACKEND
    known = {opt.name for info in host.backends().values() for opt in info.options}
    unknown = sorted(set(options) - known)
    if unknown:
        names = ", ".join(sorted(known)) or "none"
        raise UsageError(f"gdbext.open: no backend option {unknown[0]!r} (options: {names})")
    path = None if source is None else os.fspath(source)
    given = {k: None if v is None else _option_text(v) for k, v in options.items()}
    info, request = host.backend_request(name, given, path)
    try:
        target = info.open(request)
    except OSError as exc:  # a backend's own I/O: still one of our errors
        raise InputError(f"{path or name}: {exc.strerror or exc}") from None
    return OpenedTarget(host, info, request, target)


def _option_text(value: str | int) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise UsageError(f"a backend option is text or a number, not {value!r}")
    return hex(value) if isinstance(value, int) else value


def _address(value: object, what: str) -> int:
    """An address from an int or from text (``"0xffffffff81000000"``); :class:`UsageError`
    for anything else."""
    if type(value) is int and value >= 0:
        return value
    if isinstance(value, int | str) and not isinstance(value, bool):
        try:
            return parse_int(value)
        except ValueError:
            pass
    raise UsageError(f"{what}: not an address: {value!r}")


def _range(value: AddrRange | tuple[Address, Address] | str | None) -> AddrRange | None:
    """``range=``: an :class:`AddrRange`, ``(start, end)`` or ``"START-END"``/``"START+SIZE"``."""
    if value is None or isinstance(value, AddrRange):
        return value
    try:
        if isinstance(value, str):
            return AddrRange.parse(value)
        if isinstance(value, tuple) and len(value) == 2:
            return AddrRange(_address(value[0], "range"), _address(value[1], "range"))
    except ValueError as exc:
        raise UsageError(f"range: {exc}") from None
    raise UsageError(f"range: not (start, end) or 'START-END': {value!r}")


class OpenedTarget:
    """An opened backend: what :func:`gdbext.open` returns. Close it (or use ``with``) to
    release what it holds (a dump's mmap)."""

    def __init__(self, host: Host, info: BackendInfo, request: OpenRequest, target: Target):
        self.host = host
        self._info = info
        self._request = request
        self._target: Target | None = target
        #: Opened again for every call (per-stop state); see the module docstring.
        self.live = target.command_scope is not None

    @property
    def target(self) -> Target:
        """The core :class:`~gdbext.plugin.target.Target` (mapper, CPUs, facts)."""
        if self._target is None:
            raise UsageError(f"the target {self._request.source or self._info.name} is closed")
        return self._target

    @property
    def backend(self) -> str:
        return self.target.backend

    @property
    def description(self) -> str:
        return self.target.description

    def page_table(
        self,
        cpu: int | None = None,
        root: Address | None = None,
        kernel: bool = False,
        user_pgd: bool = False,
        levels: int | None = None,
        *,
        pid: int | None = None,
        comm: str | None = None,
        exe: str | None = None,
    ) -> PageTable:
        """The page table that ``--cpu``, ``--cr3``, ``--kernel``, ``--user-pgd``,
        ``--levels``, ``--pid``, ``--comm`` and ``--exe`` choose: CPU ``cpu``'s CR3 (default:
        the selected CPU, else 0), or the root ``root``, or the kernel's own (VMCOREINFO), or
        the address space of the process ``pid``, of the one task named ``comm``, or of the
        one process that ran the file ``exe`` (:mod:`gdbext.frontend.selection`); ``user_pgd``
        then takes the PTI user half. What the choice warns of is
        :attr:`PageTable.warnings`.

        :raises SelectionError: no process, or several, match ``pid``/``comm``/``exe`` (the
            candidates listed).
        """
        options = commands.RootOptions(
            cpu=cpu,
            cr3=None if root is None else _address(root, "root"),
            levels=levels,
            kernel=kernel,
            user_pgd=user_pgd,
        )
        warnings: tuple[str, ...] = ()
        with self._scope() as target:
            if (pid, comm, exe) != (None, None, None):
                from gdbext.frontend.selection import RootSelector, resolve

                options, warnings = resolve(
                    target, RootSelector(pid=pid, comm=comm, exe=exe), options
                )
            table = commands.open_page_table(target, options)
        return PageTable(self, options, table, warnings)

    def close(self) -> None:
        """Release the target (a dump's mmap); later calls raise :class:`UsageError`."""
        target, self._target = self._target, None
        if target is not None and target.close is not None:
            target.close()

    def __enter__(self) -> OpenedTarget:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._target is None else self._target.description
        return f"<gdbext target {self._info.name}: {state}>"

    @contextlib.contextmanager
    def _scope(self) -> Iterator[Target]:
        """The target for one call, inside its command scope (opened again when live)."""
        target = self.target
        if self.live:
            target = self._target = self._info.open(self._request)
        scope = target.command_scope
        with scope() if scope is not None else contextlib.nullcontext():
            yield target


class Mappings(list[Mapping]):
    """The leaves of a walk in virtual-address order, one :class:`~gdbext.x86.paging.Mapping`
    each; :attr:`anomalies` lists the entries the walk did not follow (reserved bits, a table
    not in the dump...)."""

    def __init__(self, mappings: Iterable[Mapping] = (), anomalies: Iterable[Anomaly] = ()):
        super().__init__(mappings)
        self.anomalies: list[Anomaly] = list(anomalies)


class PageTable:
    """One page table of an :class:`OpenedTarget` (see :meth:`OpenedTarget.page_table`)."""

    def __init__(
        self,
        opened: OpenedTarget,
        options: commands.RootOptions,
        table: X86PageTable,
        warnings: tuple[str, ...] = (),
    ) -> None:
        self._opened = opened
        self._options = options
        self._table = table
        #: One-line warnings about the choice of this table (a process's root that is no
        #: address space's top table...).
        self.warnings = warnings

    @property
    def root(self) -> int:
        """Physical address of the top-level table (as resolved last, for a live target)."""
        return self._table.root

    @property
    def levels(self) -> int:
        return self._table.levels

    def translate(self, vaddr: Address) -> Translation:
        """``vaddr`` translated as the MMU would, with every step and the effective
        permissions.

        :raises NotMappedError: not mapped (naming the level); other
            :class:`~gdbext.errors.TranslationError`\\ s for reserved bits or a table that is
            outside RAM or not in the dump, :class:`~gdbext.errors.NonCanonicalAddressError`.
        """
        address = _address(vaddr, "translate")
        opened = self._opened
        if not opened.live:  # no scope to enter: the cached table, as fast as the engine
            opened.target  # noqa: B018  (raises UsageError once closed)
            return self._table.translate(address)
        with opened._scope() as target:
            return self._current(target).translate(address)

    def walk(
        self,
        range: AddrRange | tuple[Address, Address] | str | None = None,
        *,
        filter: str | None = None,
        has: Address | None = None,
        max_leaves: int | None = WALK_MAX_LEAVES,
    ) -> Mappings:
        """Every leaf, as ``walk --no-merge --json`` lists them (the lines of QEMU's ``info
        tlb``), with the walk's options: ``range`` (``(start, end)``, ``"START-END"`` or
        ``"START+SIZE"``), ``filter`` (``"wx"``, ``"u,x"``...: effective permissions),
        ``has`` (the merged mapping holding that address) and ``max_leaves`` (default
        :data:`WALK_MAX_LEAVES`; ``None``: no bound; past it,
        :class:`~gdbext.errors.WalkLimitError`). The walk prunes as the command line's does.
        """
        perm = None
        if filter is not None:
            try:
                perm = PermFilter.parse(filter)
            except UsageError as exc:
                raise UsageError(str(exc).replace("--filter", "filter", 1)) from None
        options = commands.WalkOptions(
            root=self._options,
            range=_range(range),
            max_leaves=max_leaves or None,
            perm=perm,
            has=None if has is None else _address(has, "has"),
        )
        found = Mappings()
        append, extend, new = found.append, found.extend, tuple.__new__
        with self._opened._scope() as target:
            result = commands.walk(target, options)
            for record in result.runs():
                if type(record) is LeafRun:
                    if record.count == 1:  # most runs of a kernel (ESPFIX's 65,536 aliases)
                        append(new(Mapping, (record[0], record[1], *record[3:])))
                    else:
                        extend(record.mappings())
                elif type(record) is Anomaly:
                    found.anomalies.append(record)
        return found

    def audit(
        self, rules: str | Sequence[str] | None = None, skip: str | Sequence[str] = ()
    ) -> AuditResult:
        """The audit of this page table (every rule plugin, or ``rules`` without ``skip``):
        an :class:`~gdbext.audit.engine.AuditResult` whose ``findings`` are sorted by
        severity, highest first."""
        from gdbext.audit.engine import run_audit
        from gdbext.audit.options import AuditOptions

        only = (rules,) if isinstance(rules, str) else None if rules is None else tuple(rules)
        skipped = (skip,) if isinstance(skip, str) else tuple(skip)
        options = AuditOptions(self._options, only, skipped)
        with self._opened._scope() as target:
            return run_audit(target, options, audit_rules(self._opened.host))

    def __repr__(self) -> str:
        o = self._options
        if o.kernel:
            chosen = "kernel"
        elif o.cr3 is not None:
            chosen = "root"
        else:
            chosen = f"cpu {commands.cpu_index(self._opened.target, o)}"
        if o.user_pgd:
            chosen += ", user half"
        return f"PageTable(root=0x{self.root:x}, levels={self.levels}, {chosen})"

    def _current(self, target: Target) -> X86PageTable:
        """The table to read: the one resolved at creation, or resolved again on a live
        target (its CR3 may have changed since)."""
        if self._opened.live:
            self._table = commands.open_page_table(target, self._options)
        return self._table
