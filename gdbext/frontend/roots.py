"""``roots``' core: every address space of a Linux target, with what each maps and who it is.

:func:`roots` opens the kernel's own top table (VMCOREINFO's ``init_top_pgt`` on a dump, else
the selected CPU's CR3 traded for its kernel twin: :func:`~gdbext.linux.detect.kernel_tables`),
scans RAM for the tables that share its kernel half (:func:`~gdbext.linux.roots.scan_roots`),
pairs each with its PTI user table when it has one (:func:`~gdbext.audit.pti.detect_pti`),
counts the user mappings of the table user mode runs on (the PTI user table: the kernel's copy
of the user half carries NX) and reads the process's identity from its stack's top page.

An address space's id is its kernel-side root, the physical address of the table with the
kernel's half (what CR3 holds in kernel mode, PCID bits cleared), in hex: ``0x61c4000``. It
is what ``--cr3`` takes, and the same in every run on the same dump.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from gdbext.audit.pti import detect_pti
from gdbext.defaults import DEFAULT_MAX_ROOTS
from gdbext.errors import GdbextError, UsageError
from gdbext.frontend.commands import RootOptions, open_page_table
from gdbext.geometry import PAGE_SIZE
from gdbext.linux.detect import kernel_tables
from gdbext.linux.roots import (
    ExecIdentity,
    Rejected,
    Usage,
    exec_identity,
    scan_roots,
    space_usage,
    stack_tops,
)
from gdbext.linux.tasks import Task
from gdbext.plugin.target import Target
from gdbext.x86.paging import X86PageTable

__all__ = ["AddressSpace", "HookedSpace", "RootsOptions", "RootsResult", "identify", "roots"]

#: Top-of-stack candidates tried per address space (the highest segment ends).
_TRIES = 6
#: Pages read at the top of a stack: the strings, the gap of up to 8 KiB that
#: ``arch_align_stack`` leaves below them, the auxiliary vector and the argument array.
_STACK_PAGES = 4


@dataclass(frozen=True)
class RootsOptions:
    #: The CPU (and paging mode) the kernel's root is taken from when there is no VMCOREINFO.
    root: RootOptions = field(default_factory=RootOptions)
    max_roots: int = DEFAULT_MAX_ROOTS
    #: Read each process's identity from its stack (``--no-identity``: skip).
    identity: bool = True
    #: Name the tasks that own each address space, from the kernel's task list when its BTF
    #: is there (``--no-tasks``: skip).
    tasks: bool = True
    #: Also the tables whose kernel half differs from the kernel's in 1 to ``near`` entries
    #: (:attr:`RootsResult.hooked`; 0: none looked for).
    near: int = 0


@dataclass(frozen=True)
class AddressSpace:
    """One address space: its id (:attr:`root` in hex), its table(s), its user mappings and
    the process identity when its stack's top page was captured."""

    root: int
    #: The PTI user table (``root | 0x1000``), or ``None`` without PTI.
    user_root: int | None
    #: True for the kernel's own table (``init_mm``: kernel threads): the table the scan
    #: compared with, when its user half maps nothing.
    kernel: bool
    usage: Usage
    identity: ExecIdentity | None
    #: The CPUs whose CR3 is one of this space's tables.
    cpus: tuple[int, ...] = ()
    #: The processes (thread-group leaders: PID, ``comm``) whose ``mm->pgd`` is this space's
    #: table, when the task list was read (:attr:`RootsResult.tasks_read`).
    owners: tuple[tuple[int, str], ...] = ()

    @property
    def kind(self) -> str:
        """``kernel`` (the kernel's own table), ``process`` (maps user-accessible pages),
        ``supervisor`` (maps only supervisor pages in the user half: the real-mode
        trampoline's table), ``no-pages`` (links lower tables, maps no page: ``text_poke``'s
        ``poking_mm``, a process being set up) or ``unreadable`` (the walk stopped)."""
        usage = self.usage
        if self.kernel:
            return "kernel"
        if usage.user_bytes:
            return "process"
        if usage.problem:
            return "unreadable"
        return "supervisor" if usage.bytes else "no-pages"

    @property
    def id(self) -> str:
        return f"0x{self.root:x}"

    @property
    def roots(self) -> tuple[int, ...]:
        return (self.root,) if self.user_root is None else (self.root, self.user_root)


@dataclass(frozen=True)
class HookedSpace:
    """An address space whose top table's kernel half differs from the kernel's in a few
    entries (indexes 256..511, the LDT's apart): what a hook or rootkit leaves in one process's
    table (Linux never changes a process's kernel half after ``pgd_alloc``)."""

    space: AddressSpace
    entries: tuple[int, ...]


@dataclass(frozen=True)
class RootsResult:
    kernel_root: int
    #: Where the kernel's root came from (``VMCOREINFO``, ``CPU 0's CR3``).
    kernel_source: str
    levels: int
    spaces: tuple[AddressSpace, ...]
    rejected: tuple[Rejected, ...]
    rejected_count: int
    empty: tuple[int, ...]
    bytes_scanned: int
    truncated: bool = False
    warnings: tuple[str, ...] = ()
    #: Whether the kernel's task list was read (then a process's table no task owns is in
    #: :attr:`unowned`, not :attr:`spaces`), and why not.
    tasks_read: bool = False
    tasks_problem: str | None = None
    #: Tasks whose root is none of :attr:`spaces` (PID, ``comm``, root).
    unlisted: tuple[tuple[int, str, int], ...] = ()
    #: With the task list read: the tables that map user pages as a process's does but that
    #: no task owns and no CPU is on (freed tables of exited processes), not in :attr:`spaces`.
    unowned: tuple[AddressSpace, ...] = ()
    #: With :attr:`RootsOptions.near`: the tables whose kernel half differs in a few entries.
    hooked: tuple[HookedSpace, ...] = ()


def _kernel_table(target: Target, options: RootsOptions) -> tuple[X86PageTable, str]:
    facts = target.facts
    root = options.root
    if facts.kernel_root is not None and root.cr3 is None and not root.user_pgd:
        pt = open_page_table(target, RootOptions(cpu=root.cpu, levels=root.levels, kernel=True))
        return pt, "VMCOREINFO"
    pt = open_page_table(target, root)
    if root.cr3 is not None:
        return pt, "--cr3"
    kpt = kernel_tables(pt, facts)
    if facts.kernel_root is not None and kpt.root == facts.kernel_root:
        return kpt, "VMCOREINFO"
    cpu = root.cpu if root.cpu is not None else facts.selected_cpu or 0
    how = f"CPU {cpu}'s CR3"
    if kpt.root != pt.root:
        how += f" 0x{pt.root:x}, its PTI kernel twin"
    return kpt, how


def roots(
    target: Target,
    options: RootsOptions = RootsOptions(),
    progress: Callable[[int], None] | None = None,
) -> RootsResult:
    """Every address space on ``target`` (see the module docstring)."""
    if not target.ram:
        raise UsageError(f"roots scans RAM, and {target.description} does not say where its RAM is")
    kpt, source = _kernel_table(target, options)
    scan = scan_roots(
        kpt, target.ram, max_roots=options.max_roots, progress=progress, near=options.near
    )
    cr3s: dict[int, list[int]] = {}
    for i, cpu in enumerate(target.cpus):
        if cpu.root is not None:
            cr3s.setdefault(cpu.root, []).append(i)
    owners, tasks_problem = _owners(target, options) if options.tasks else ({}, None)
    spaces = []
    for table in (*scan.roots, *(t for t, _ in scan.near)):
        pt = kpt.with_root(table, cache=False)
        pair = detect_pti(pt) if not table & PAGE_SIZE else None
        user_root = pair[1] if pair is not None and pair[0] == table else None
        user_pt = pt if user_root is None else pt.with_root(user_root)
        usage = space_usage(user_pt)
        identity = identify(user_pt, usage) if options.identity else None
        cpus = sorted(c for r in (table, user_root) if r is not None for c in cr3s.get(r, ()))
        # The kernel's own table (init_top_pgt) maps nothing in the user half; a process's
        # always maps something (its stack).
        kernel = table == kpt.root and not usage.runs and not usage.problem
        mine = tuple((t.pid, t.comm) for t in owners.get(table, ()))
        spaces.append(AddressSpace(table, user_root, kernel, usage, identity, tuple(cpus), mine))
    hooked = tuple(
        HookedSpace(space, differ)
        for space, (_, differ) in zip(spaces[len(scan.roots) :], scan.near, strict=True)
    )
    spaces = spaces[: len(scan.roots)]
    tasks_read = options.tasks and tasks_problem is None
    unowned = tuple(s for s in spaces if tasks_read and _freed(s))
    spaces = [s for s in spaces if s not in unowned]
    listed = {s.root for s in spaces} | {h.space.root for h in hooked}
    unlisted = tuple(
        (t.pid, t.comm, root) for root, ts in owners.items() if root not in listed for t in ts
    )
    warnings = []
    if scan.truncated:
        warnings.append(f"roots: stopped after {options.max_roots} address spaces")
    return RootsResult(
        kpt.root,
        source,
        kpt.levels,
        tuple(spaces),
        scan.rejected,
        scan.rejected_count,
        scan.empty,
        scan.bytes_scanned,
        scan.truncated,
        tuple(warnings),
        tasks_read,
        tasks_problem,
        unlisted,
        unowned,
        hooked,
    )


def _freed(space: AddressSpace) -> bool:
    """A process's table (user pages mapped) that no task owns and no CPU is on: a freed
    table of an exited process, its page not reused yet."""
    return space.kind == "process" and not space.owners and not space.cpus


def _owners(target: Target, options: RootsOptions) -> tuple[dict[int, list[Task]], str | None]:
    """The thread-group leaders by root, from the kernel's task list; ``{}`` and why when it
    cannot be read (no BTF: the stack identity is all there is). A list that stopped early
    gives its tasks and the reason."""
    from gdbext.frontend.tasks import TasksOptions, tasks

    try:
        found = tasks(target, TasksOptions(root=options.root)).tasks
    except GdbextError as exc:
        return {}, str(exc)
    owners: dict[int, list[Task]] = {}
    for t in found.tasks:
        if t.root is not None and t.pid == t.tgid:
            owners.setdefault(t.root, []).append(t)
    return owners, None if found.error is None else str(found.error)


def identify(pt: X86PageTable, usage: Usage) -> ExecIdentity | None:
    """The identity ``execve`` left on the stack of ``pt``'s process: the highest segment end
    whose top pages (:data:`_STACK_PAGES`) read as a stack's top, one whose argument array was
    found first. A page below the top one that is not mapped reads as zeros: a stack page
    nothing wrote to was never faulted in (``arch_align_stack``'s gap between exec's strings
    and its argument array can hold one)."""
    fallback = None
    for n, end in enumerate(stack_tops(usage)):
        if n >= _TRIES:
            break
        top = _page(pt, end - PAGE_SIZE)
        if top is None:
            continue
        pages = [top]
        for k in range(2, _STACK_PAGES + 1):
            pages.append(_page(pt, end - k * PAGE_SIZE) or bytes(PAGE_SIZE))
        data = b"".join(reversed(pages))
        found = exec_identity(data, end - len(data))
        if found is not None and found.argv is not None:
            return found
        fallback = fallback or found
    return fallback


def _page(pt: X86PageTable, vaddr: int) -> bytes | None:
    """The 4 KiB page at user VA ``vaddr``, or ``None`` (unmapped, not captured)."""
    if vaddr < 0:
        return None
    t = pt.try_translate(vaddr)
    if t is None:
        return None
    try:
        return pt.mapper.read(t.paddr, PAGE_SIZE)
    except GdbextError:
        return None
