"""An address space chosen by who owns it: ``--root``, ``--pid``, ``--comm``, ``--exe``.

:func:`select_root` turns a :class:`RootSelector` into the physical address of a top-level
table, and :func:`resolve` into the :class:`~gdbext.frontend.commands.RootOptions` whose
``cr3`` it is (what every command then opens, as it opens ``--cr3``'s). The front ends resolve
the options before they run a command; it is the one place that does, and it reads only what
the option given needs:

- ``--root ID|PADDR``: a ``roots`` id (the hex physical address of the table with the kernel's
  half) or any physical address of a top table; nothing is scanned. A table whose kernel half
  is not the kernel's is walked all the same, with a warning (as ``--user-pgd`` warns).
- ``--pid N``: the task list (:func:`~gdbext.frontend.tasks.tasks`, from the kernel's BTF); the
  task's root is its ``mm->pgd``, with PTI the kernel's table of the pair (``--user-pgd`` then
  takes the user one).
- ``--comm NAME``: the tasks whose ``comm`` is ``NAME``.
- ``--exe NAME``: the address spaces ``roots`` finds whose exec file name (from the stack) has
  the base name of ``NAME``; their tasks are named when the task list can be read.

A name must choose one address space (the threads of a process share theirs): else
:class:`SelectionError` lists the candidates. The resolution is kept for the stop in
:attr:`~gdbext.plugin.target.Target.stop_cache`, so a command asking twice reads once.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gdbext.errors import GdbextError, UsageError
from gdbext.frontend.commands import RootOptions, open_page_table
from gdbext.geometry import PAGE_SIZE
from gdbext.plugin.target import Target

if TYPE_CHECKING:
    from gdbext.linux.tasks import Task


@dataclass(frozen=True)
class SelectionCandidate:
    """An address space a name could choose: its root (physical address of the top table;
    ``None``: a kernel thread's, or one whose ``mm->pgd`` did not translate), and the owning
    task's PID and ``comm``, and the exec file name, when known."""

    root: int | None
    pid: int | None = None
    comm: str | None = None
    exe: str | None = None

    def __str__(self) -> str:
        parts = [] if self.pid is None else [f"pid {self.pid}"]
        if self.comm is not None:
            parts.append(self.comm)
        if self.exe is not None:
            parts.append(f"({self.exe})")
        parts.append("no root" if self.root is None else f"root 0x{self.root:x}")
        return " ".join(parts)


class SelectionError(UsageError):
    """``--root``, ``--pid``, ``--comm`` or ``--exe`` that chose no address space, or more than
    one (exit status 2): ``option`` is what was given (``--comm sleep``), ``candidates`` what
    matched (none: nothing did), ``reason`` why a single match is not usable."""

    def __init__(
        self, option: str, candidates: Sequence[SelectionCandidate] = (), reason: str = ""
    ) -> None:
        self.option = option
        self.candidates = tuple(candidates)
        self.reason = reason
        if len(self.candidates) > 1:
            listed = "; ".join(map(str, self.candidates))
            message = (
                f"{option} matches {len(self.candidates)} address spaces: {listed} "
                "(choose one with --pid N or --root ID)"
            )
        elif self.candidates:
            message = f"{option}: {self.candidates[0]}: {reason or 'not usable'}"
        else:
            message = f"{option} matches no address space" + (f" ({reason})" if reason else "")
        super().__init__(message)


__all__ = ["RootSelector", "Selection", "resolve", "select_root"]


@dataclass(frozen=True)
class RootSelector:
    """An address space by owner: a ``roots`` id or top table's physical address (``root``),
    a PID, a ``comm``, or an exec file name (``exe``); at most one. ``cpu`` and ``levels`` are
    the paging mode's, as in :class:`~gdbext.frontend.commands.RootOptions`."""

    root: int | None = None
    pid: int | None = None
    comm: str | None = None
    exe: str | None = None
    #: A vmlinux with debug info (``--vmlinux``): the task list's offsets from its DWARF, not
    #: the kernel's BTF; and its ``init_task``, moved by the slide (``None``: searched for).
    vmlinux: str | None = None
    init_task: int | None = None

    def __bool__(self) -> bool:
        return (self.root, self.pid, self.comm, self.exe) != (None, None, None, None)


@dataclass(frozen=True)
class Selection:
    """The chosen table's physical address, what chose it (``--pid 120``) and one-line
    warnings about it."""

    root: int
    how: str
    warnings: tuple[str, ...] = ()


def _base(options: RootOptions) -> RootOptions:
    """The options that read the kernel's tables: CPU and paging mode only."""
    return RootOptions(cpu=options.cpu, levels=options.levels)


def resolve(
    target: Target, selector: RootSelector, options: RootOptions
) -> tuple[RootOptions, tuple[str, ...]]:
    """``options`` with ``cr3`` the root ``selector`` chooses (unchanged without one), and
    the warnings about it (see :func:`select_root`)."""
    if not selector:
        return options, ()
    if options.kernel or options.cr3 is not None:
        other = "--kernel" if options.kernel else "--cr3"
        raise UsageError(f"{other} and {_given(selector)} both choose the root; give one of them")
    chosen = select_root(target, selector, options)
    return dataclasses.replace(options, cr3=chosen.root), chosen.warnings


def _given(selector: RootSelector) -> str:
    names = [n for n in ("root", "pid", "comm", "exe") if getattr(selector, n) is not None]
    return " and ".join(f"--{n}" for n in names)


def select_root(
    target: Target, selector: RootSelector, options: RootOptions | None = None
) -> Selection:
    """The root ``selector`` chooses; ``options``' CPU and levels read the kernel's tables.

    :raises UsageError: more than one way is given.
    :raises SelectionError: no address space, or more than one, matches (candidates listed).
    """
    given = _given(selector)
    if " and " in given:
        raise UsageError(f"{given} all choose the root; give one of them")
    base = _base(options or RootOptions())
    key = ("root-selection", selector, base.cpu, base.levels)
    cache = target.stop_cache
    if cache is None:
        return _resolve(target, selector, base)
    return cache.get(key, lambda: _resolve(target, selector, base))


def _resolve(target: Target, selector: RootSelector, options: RootOptions) -> Selection:
    if selector.root is not None:
        return _by_address(target, selector.root, options)
    if selector.exe is not None:
        return _by_exe(target, options, selector)
    tasks = _tasks(target, options, selector)
    if selector.pid is not None:
        return _by_pid(selector.pid, tasks)
    assert selector.comm is not None
    name = selector.comm
    matches = [t for t in tasks.tasks if t.comm == name]
    return _one(f"--comm {name}", matches, tasks.error)


@dataclass(frozen=True)
class _Tasks:
    tasks: Sequence[Task]
    #: Why the list is incomplete (a walk that stopped early), else ``None``.
    error: GdbextError | None


def _tasks(target: Target, options: RootOptions, selector: RootSelector) -> _Tasks:
    from gdbext.frontend.tasks import TasksOptions, tasks

    given = TasksOptions(_base(options), vmlinux=selector.vmlinux, init_task=selector.init_task)
    found = tasks(target, given).tasks
    return _Tasks(found.tasks, found.error)


def _candidate(task: Task) -> SelectionCandidate:
    return SelectionCandidate(task.root, task.pid, task.comm)


def _by_pid(pid: int, tasks: _Tasks) -> Selection:
    task = next((t for t in tasks.tasks if t.pid == pid), None)
    if task is None:
        why = f"no task has PID {pid}"
        raise SelectionError(
            f"--pid {pid}", [], "; ".join(filter(None, (why, _incomplete(tasks.error))))
        )
    if task.kernel_thread:
        raise SelectionError(
            f"--pid {pid}", [_candidate(task)], "a kernel thread: no address space of its own "
            "(the kernel's: --kernel)",
        )  # fmt: skip
    if task.root is None:
        raise SelectionError(f"--pid {pid}", [_candidate(task)], "its mm->pgd does not translate")
    return Selection(task.root, f"--pid {pid} ({task.comm})")


def _incomplete(error: GdbextError | None) -> str:
    return "" if error is None else f"the task list is incomplete: {error}"


def _one(what: str, matches: Sequence[Task], error: GdbextError | None) -> Selection:
    """The one address space of the tasks ``matches`` (threads share theirs)."""
    spaces = {t.root for t in matches if t.root is not None}
    if len(spaces) == 1:
        return Selection(spaces.pop(), what)
    if not spaces:
        why = "only kernel threads, with no address space of their own" if matches else ""
        raise SelectionError(what, [_candidate(t) for t in matches], why or _incomplete(error))
    leaders: dict[int, Task] = {}
    for t in matches:
        if t.root is not None:
            leaders.setdefault(t.root, t)
    raise SelectionError(what, [_candidate(t) for t in leaders.values()])


def _by_exe(target: Target, options: RootOptions, selector: RootSelector) -> Selection:
    from gdbext.frontend.roots import RootsOptions, roots

    name = selector.exe
    assert name is not None
    want = posixpath.basename(name.rstrip("/")) or name
    found = roots(target, RootsOptions(root=_base(options)))
    spaces = [
        s
        for s in found.spaces
        if s.identity is not None and posixpath.basename(s.identity.filename) == want
    ]
    if len(spaces) == 1:
        return Selection(spaces[0].root, f"--exe {name}")
    owners: dict[int, Task] = {}
    if spaces:
        try:
            for t in _tasks(target, options, selector).tasks:
                if t.root is not None and t.tgid == t.pid:
                    owners.setdefault(t.root, t)
        except GdbextError:
            pass  # the candidates are named by their roots alone
    candidates = []
    for s in spaces:
        owner = owners.get(s.root)
        assert s.identity is not None
        candidates.append(
            SelectionCandidate(
                s.root,
                None if owner is None else owner.pid,
                None if owner is None else owner.comm,
                s.identity.filename,
            )
        )
    raise SelectionError(f"--exe {name}", candidates)


def _by_address(target: Target, paddr: int, options: RootOptions) -> Selection:
    """``--root``'s table; a warning when its kernel half is not the kernel's (nor is it the
    PTI user table of one whose is) or its user half is no table."""
    from gdbext.linux.detect import kernel_tables
    from gdbext.linux.roots import HALF, kernel_half_differences, user_half_problem

    if not 0 <= paddr < 1 << 52 or paddr % PAGE_SIZE:
        raise UsageError(f"--root 0x{paddr:x} is not a page-aligned physical address")
    how = f"--root 0x{paddr:x}"
    try:
        pt = open_page_table(target, RootOptions(cpu=options.cpu, levels=options.levels,
                                                 cr3=paddr))  # fmt: skip
        kpt = kernel_tables(open_page_table(target, _base(options)), target.facts)
        if paddr == kpt.root:
            return Selection(paddr, how)
        differ = kernel_half_differences(kpt, paddr)
        if differ and paddr & PAGE_SIZE and not kernel_half_differences(kpt, paddr - PAGE_SIZE):
            return Selection(paddr, how)  # the user table of a PTI pair
        problems = []
        if differ:
            problems.append(
                f"{len(differ)} of its {HALF // 8} kernel-half entries differ from the "
                f"kernel's top table 0x{kpt.root:x}'s"
            )
        entries = target.mapper.read(paddr, HALF)
        problem = user_half_problem(
            [int.from_bytes(entries[i : i + 8], "little") for i in range(0, HALF, 8)],
            pt.levels,
            pt.rules,
            target.ram or [],
        ) if target.ram else None  # fmt: skip
        if problem is not None:
            problems.append(problem)
    except GdbextError as exc:
        problems = [f"it could not be checked ({exc})"]
    if not problems:
        return Selection(paddr, how)
    return Selection(
        paddr,
        how,
        (f"--root 0x{paddr:x} is not an address space's top table ({'; '.join(problems)}); "
         "this table is walked all the same",),
    )  # fmt: skip
