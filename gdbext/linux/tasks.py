"""The kernel's own task list, read from memory with offsets from its BTF or a vmlinux's DWARF.

Linux links every thread-group leader into a circular list (``task_struct.tasks``) that starts
at ``init_task``, the idle task of CPU 0, whose ``comm`` is ``swapper/0`` and which lives in
the image's data. Without a symbol for it, :func:`find_init_task` searches the image's
writable pages for ``swapper/0`` at ``comm``'s offset in a candidate whose ``tasks`` list is
consistent (``next`` and ``prev`` are kernel addresses, and ``next->prev`` and ``prev->next``
come back to it). :func:`walk_tasks` then follows ``tasks``, and each leader's threads (its
``signal->thread_head`` list, through ``thread_node``), reading PID, TGID, ``comm``, state and
``mm``; a task with an ``mm`` has its top table at ``mm->pgd``, a direct-map address, whose
physical address is the task's page-table root. Kernel threads have no ``mm``.

Every virtual read goes through the kernel's page tables (:class:`~gdbext.x86.paging.
X86PageTable`). A list that does not come back to ``init_task``, a pointer the tables do not
map or the backend cannot read, or more than :data:`~gdbext.defaults.MAX_TASKS` entries ends
the walk: the result keeps what was read and says why it stopped.

The offsets come from a :class:`TypeOffsets`: anything that says where a member lies in a
named structure. The kernel's BTF (:class:`~gdbext.linux.btf.Btf`) is one, a vmlinux's DWARF
(:class:`~gdbext.linux.dwarf.DwarfTypes`) another; the walk asks both the same questions.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Protocol

from gdbext.addr import AddrRange
from gdbext.defaults import MAX_TASKS
from gdbext.errors import DebugInfoError, GdbextError, NotFoundError, TaskListError
from gdbext.geometry import PAGE_SIZE
from gdbext.linux.btf import MemberField
from gdbext.linux.kernelimage import KERNEL_IMAGE_VA
from gdbext.mapper import PhysMapper, readable_ranges
from gdbext.x86.paging import X86PageTable
from gdbext.x86.records import LeafRun

__all__ = [
    "Task",
    "TaskLayout",
    "TaskList",
    "TypeOffsets",
    "find_init_task",
    "state_letter",
    "task_layout",
    "walk_tasks",
]

#: ``init_task``'s ``comm``.
INIT_COMM: Final = b"swapper/0"
#: Kernel addresses are in the higher half.
_KERNEL_HALF: Final = 1 << 63
_CHUNK: Final = 1 << 20

#: ``/proc/PID/stat``'s state letters by the highest bit set of ``(__state | exit_state) &
#: TASK_REPORT`` (``fs/proc/array.c``), ``TASK_IDLE`` apart: Linux 4.14 and later.
_LETTERS: Final = "RSDTtXZP"
_TASK_REPORT: Final = 0x7F
_TASK_IDLE: Final = 0x402


def state_letter(state: int, exit_state: int = 0) -> str:
    """``ps``'s letter for a task's ``__state`` and ``exit_state``.

    >>> state_letter(0), state_letter(1), state_letter(0x402), state_letter(0, 0x20)
    ('R', 'S', 'I', 'Z')
    """
    if state == _TASK_IDLE and not exit_state:
        return "I"
    return _LETTERS[min(((state | exit_state) & _TASK_REPORT).bit_length(), len(_LETTERS) - 1)]


class TypeOffsets(Protocol):
    """Where members lie in the kernel's structures: BTF's or DWARF's answer."""

    def member(self, struct: str, path: str) -> MemberField:
        """Byte offset and size of member ``path`` (dotted) in structure ``struct``; members
        of anonymous structures and unions are found through them.

        :raises DebugInfoError: no such structure or member.
        """
        ...


@dataclass(frozen=True)
class TaskLayout:
    """The offsets (bytes) the walk reads, from BTF or DWARF: in ``task_struct`` and ``mm_struct``
    (``mm_pgd``) and ``signal_struct`` (``thread_head``); ``None``: the kernel has no such
    member (threads are then not listed; a task without ``exit_state`` reads 0)."""

    tasks: int
    comm: int
    comm_size: int
    pid: int
    tgid: int
    mm: int
    state: int
    state_size: int
    mm_pgd: int
    exit_state: int | None = None
    signal: int | None = None
    thread_node: int | None = None
    thread_head: int | None = None


def task_layout(btf: TypeOffsets) -> TaskLayout:
    """The offsets of :class:`TaskLayout` from ``btf`` (BTF or DWARF); ``__state`` (Linux
    5.14 and later) or ``state``."""
    task = "task_struct"

    def opt(struct: str, path: str) -> int | None:
        try:
            return btf.member(struct, path).offset
        except DebugInfoError:
            return None

    try:
        state = btf.member(task, "__state")
    except DebugInfoError:
        state = btf.member(task, "state")
    comm = btf.member(task, "comm")
    thread_head = opt("signal_struct", "thread_head")
    thread_node = opt(task, "thread_node")
    signal = opt(task, "signal")
    threads = None not in (thread_head, thread_node, signal)
    return TaskLayout(
        tasks=btf.member(task, "tasks").offset,
        comm=comm.offset,
        comm_size=comm.size,
        pid=btf.member(task, "pid").offset,
        tgid=btf.member(task, "tgid").offset,
        mm=btf.member(task, "mm").offset,
        state=state.offset,
        state_size=state.size,
        mm_pgd=btf.member("mm_struct", "pgd").offset,
        exit_state=opt(task, "exit_state"),
        signal=signal if threads else None,
        thread_node=thread_node if threads else None,
        thread_head=thread_head if threads else None,
    )


@dataclass(frozen=True)
class Task:
    """One task: its ``task_struct``'s address, PID, TGID, ``comm``, state (``ps``'s letter
    and the raw ``__state``), ``mm`` (0: a kernel thread), and ``root``, the physical address
    of ``mm->pgd`` (``None`` without ``mm``, or when ``pgd`` could not be translated)."""

    address: int
    pid: int
    tgid: int
    comm: str
    state: str
    state_value: int
    mm: int
    root: int | None

    @property
    def kernel_thread(self) -> bool:
        return self.mm == 0


@dataclass(frozen=True)
class TaskList:
    """The tasks read, in list order (each leader, then its threads), ``init_task``'s address,
    whether threads were listed, and why the walk stopped early (``None``: it came back to
    ``init_task``)."""

    tasks: tuple[Task, ...]
    init_task: int
    threads: bool
    error: TaskListError | None = None


class KernelMemory:
    """Virtual reads through the kernel's tables: each page translated by the engine."""

    def __init__(self, pt: X86PageTable, mapper: PhysMapper | None = None) -> None:
        self.pt = pt
        self.mapper = mapper or pt.mapper

    def read(self, vaddr: int, size: int) -> bytes:
        """``size`` bytes at ``vaddr``; a :class:`~gdbext.errors.GdbextError` (not mapped,
        outside RAM, not captured) if a page cannot be read."""
        out = bytearray()
        while size > 0:
            n = min(size, PAGE_SIZE - vaddr % PAGE_SIZE)
            out += self.mapper.read(self.pt.translate(vaddr).paddr, n)
            vaddr += n
            size -= n
        return bytes(out)

    def u64(self, vaddr: int) -> int:
        return int.from_bytes(self.read(vaddr, 8), "little")


def _image_data(pt: X86PageTable) -> Iterator[tuple[int, int, int]]:
    """The writable leaves of the kernel image's mapping: ``(vaddr, paddr, size)``."""
    for r in pt.iter_runs(KERNEL_IMAGE_VA):
        if type(r) is LeafRun and r.writable:
            yield r.vaddr, r.paddr, r.count * r.page_size


def find_init_task(pt: X86PageTable, layout: TaskLayout, mapper: PhysMapper | None = None) -> int:
    """The virtual address of ``init_task``: in the image's writable pages, the task whose
    ``comm`` is ``swapper/0``, PID 0, and whose ``tasks`` list closes on itself.

    :raises NotFoundError: when no candidate passes.
    """
    mem = KernelMemory(pt, mapper)
    needle = INIT_COMM + b"\0"
    for vaddr, paddr, size in _image_data(pt):
        for part in readable_ranges(mem.mapper, [AddrRange(paddr, paddr + size)]):
            for at in range(part.start, part.end, _CHUNK):
                n = min(_CHUNK + len(needle), part.end - at)
                try:
                    data = mem.mapper.read(at, n)
                except GdbextError:
                    continue
                i = data.find(needle)
                while 0 <= i < _CHUNK:
                    task = vaddr + (at + i - paddr) - layout.comm
                    if _is_init_task(mem, layout, task):
                        return task
                    i = data.find(needle, i + 1)
    raise NotFoundError(
        "no init_task: no 'swapper/0' in the kernel image's data sits in a task_struct whose "
        "tasks list closes (BTF offsets of another kernel, or pages missing from the dump)"
    )


def _is_init_task(mem: KernelMemory, layout: TaskLayout, task: int) -> bool:
    try:
        if int.from_bytes(mem.read(task + layout.pid, 4), "little") != 0:
            return False
        head = task + layout.tasks
        nxt, prev = mem.u64(head), mem.u64(head + 8)
        if nxt < _KERNEL_HALF or prev < _KERNEL_HALF:
            return False
        return mem.u64(nxt + 8) == head and mem.u64(prev) == head
    except GdbextError:
        return False


def _read_task(mem: KernelMemory, layout: TaskLayout, task: int) -> Task:
    lo = min(layout.state, layout.pid, layout.mm, layout.comm)
    hi = max(layout.state + layout.state_size, layout.tgid + 4, layout.mm + 8,
             layout.comm + layout.comm_size)  # fmt: skip
    if layout.exit_state is not None:
        lo, hi = min(lo, layout.exit_state), max(hi, layout.exit_state + 4)
    raw = mem.read(task + lo, hi - lo)

    def field(off: int, size: int) -> int:
        return int.from_bytes(raw[off - lo : off - lo + size], "little")

    comm = raw[layout.comm - lo : layout.comm - lo + layout.comm_size].split(b"\0", 1)[0]
    state = field(layout.state, layout.state_size)
    exit_state = 0 if layout.exit_state is None else field(layout.exit_state, 4)
    mm = field(layout.mm, 8)
    root = None
    if mm:
        pgd = mem.u64(mm + layout.mm_pgd)
        found = mem.pt.try_translate(pgd) if pgd >= _KERNEL_HALF else None
        root = None if found is None else found.paddr
    return Task(
        task,
        field(layout.pid, 4),
        field(layout.tgid, 4),
        comm.decode("utf-8", "replace"),
        state_letter(state, exit_state),
        state,
        mm,
        root,
    )


class _Walk:
    """One walk's bounds: the tasks read and every ``list_head`` seen."""

    def __init__(self, mem: KernelMemory, layout: TaskLayout, limit: int) -> None:
        self.mem, self.layout, self.limit = mem, layout, limit
        self.tasks: list[Task] = []
        self.seen: set[int] = set()

    def add(self, task: int) -> Task:
        if len(self.tasks) >= self.limit:
            raise TaskListError(f"more than {self.limit} tasks: a corrupt list?", self.limit)
        t = _read_task(self.mem, self.layout, task)
        self.tasks.append(t)
        return t

    def follow(self, node: int, head: int, what: str) -> Iterator[int]:
        """The nodes of the circular list at ``head`` after ``node``, up to ``head``."""
        while True:
            nxt = self.mem.u64(node)
            if nxt == head:
                return
            if nxt < _KERNEL_HALF:
                raise TaskListError(
                    f"{what} 0x{node:x} points to 0x{nxt:x}, not a kernel address",
                    len(self.tasks),
                )
            if nxt in self.seen:
                raise TaskListError(
                    f"{what} 0x{nxt:x} comes again: a cycle that misses its head",
                    len(self.tasks),
                )
            self.seen.add(nxt)
            yield nxt
            node = nxt

    def threads(self, leader: int) -> None:
        lay = self.layout
        assert lay.signal is not None and lay.thread_node is not None
        assert lay.thread_head is not None
        signal = self.mem.u64(leader + lay.signal)
        if signal == 0:
            return
        head = signal + lay.thread_head
        for node in self.follow(head, head, "thread list entry"):
            task = node - lay.thread_node
            if task != leader:
                self.add(task)


def walk_tasks(
    pt: X86PageTable,
    btf: TypeOffsets,
    mapper: PhysMapper | None = None,
    init_task: int | None = None,
    limit: int = MAX_TASKS,
) -> TaskList:
    """The task list of the kernel whose tables ``pt`` are, with ``btf``'s offsets (the
    kernel's BTF or a vmlinux's DWARF), from
    ``init_task`` (default: :func:`find_init_task`)."""
    layout = task_layout(btf)
    mem = KernelMemory(pt, mapper)
    if init_task is None:
        init_task = find_init_task(pt, layout, mem.mapper)
    walk = _Walk(mem, layout, limit)
    listed = layout.thread_head is not None
    error: TaskListError | None = None
    head = init_task + layout.tasks
    try:
        walk.add(init_task)
        for node in walk.follow(head, head, "tasks entry"):
            leader = node - layout.tasks
            walk.add(leader)
            if listed:
                walk.threads(leader)
    except TaskListError as exc:
        error = exc
    except GdbextError as exc:
        error = TaskListError(str(exc), len(walk.tasks))
    return TaskList(tuple(walk.tasks), init_task, listed, error)
