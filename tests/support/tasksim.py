"""A task list written into a simulated roots machine (:mod:`tests.support.roots`): the BTF of
:func:`tests.support.btfblob.kernel_like` in the kernel image's text, ``init_task`` in a
writable image page, the other tasks, their ``mm`` and ``signal`` in the direct map, so that
``tasks`` (and what selects an address space by PID or comm) reads them as from a kernel. The
structures are written at :data:`BTF_LAYOUT`'s offsets (the BTF's), or at another layout's (a
compiled C file's, read from its DWARF) when one is given."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from gdbext.flags import GLOBAL, NO_EXECUTE, WRITABLE, PageTableFlags
from gdbext.linux.tasks import TaskLayout
from gdbext.x86.paging import SIZE_2M
from support.btfblob import kernel_like
from support.roots import DIRECT, TEXT, RootsMachine

# task_struct's offsets as kernel_like lays them out.
STATE, TASKS, PID, TGID, MM, COMM = 0, 16, 32, 36, 40, 48
SIGNAL, THREAD_NODE = 64, 72
PGD, THREAD_HEAD = 8, 8
#: The same, as the walk's layout.
BTF_LAYOUT = TaskLayout(
    tasks=TASKS, comm=COMM, comm_size=16, pid=PID, tgid=TGID, mm=MM, state=STATE,
    state_size=4, mm_pgd=PGD, signal=SIGNAL, thread_node=THREAD_NODE, thread_head=THREAD_HEAD,
)  # fmt: skip
#: Where the BTF blob lies (in the text mapping) and the image's data (init_task).
BTF_PA = 0x101_0000
DATA_VA = TEXT + (4 << 20)
DATA_PA = 0x140_0000
#: ``init_task``'s address.
INIT_TASK = DATA_VA + 0x200
#: Where the tasks, mm and signal structures are written (each its 4 KiB page).
TASKS_PA = 0x180_0000


@dataclass(frozen=True)
class TaskSpec:
    pid: int
    tgid: int
    comm: str
    #: The top table ``mm->pgd`` points at; ``None``: a kernel thread (no mm).
    root: int | None


def add_tasks(m: RootsMachine, specs: list[TaskSpec], layout: TaskLayout = BTF_LAYOUT) -> None:
    """``init_task`` (``swapper/0``, at :data:`INIT_TASK`) then ``specs`` linked into the task
    list, each thread (``tgid != pid``) in its leader's ``signal->thread_head`` ring, every
    member at ``layout``'s offset (each structure within its 4 KiB page)."""
    lay = layout
    assert lay.signal is not None and lay.thread_node is not None
    assert lay.thread_head is not None
    TASKS, PID, TGID, MM, COMM = lay.tasks, lay.pid, lay.tgid, lay.mm, lay.comm
    SIGNAL, THREAD_NODE = lay.signal, lay.thread_node
    PGD, THREAD_HEAD = lay.mm_pgd, lay.thread_head
    mem = m.memory
    direct = DIRECT[m.levels]
    old = m.half()
    m.kernel.map_range(DATA_VA, DATA_PA, SIZE_2M, SIZE_2M,
                       PageTableFlags(WRITABLE | NO_EXECUTE | GLOBAL), m.allocator)  # fmt: skip
    # The image's top entry gained W: every table that copied it copies it again.
    new = m.half()
    changed = [i for i in range(0, 2048, 8) if old[i : i + 8] != new[i : i + 8]]
    for table in (*(p.root for p in m.processes), *m.hostile, *m.empty):
        for i in changed:
            if mem.read(table + 2048 + i, 8) == old[i : i + 8]:
                mem.write(table + 2048 + i, new[i : i + 8])
    mem.write(BTF_PA, kernel_like()[0].build())

    def u64(pa: int, value: int) -> None:
        mem.write(pa, struct.pack("<Q", value))

    def u32(pa: int, value: int) -> None:
        mem.write(pa, struct.pack("<I", value))

    def task(pa: int, pid: int, tgid: int, comm: str) -> None:
        u32(pa + PID, pid)
        u32(pa + TGID, tgid)
        mem.write(pa + COMM, comm.encode().ljust(16, b"\0"))

    def link(nodes: list[tuple[int, int]]) -> None:
        """A circular list through ``(va, pa)`` list_heads."""
        for i, (_va, pa) in enumerate(nodes):
            u64(pa, nodes[(i + 1) % len(nodes)][0])
            u64(pa + 8, nodes[i - 1][0])

    init_pa = INIT_TASK - DATA_VA + DATA_PA
    task(init_pa, 0, 0, "swapper/0")
    leaders = [(INIT_TASK + TASKS, init_pa + TASKS)]
    rings: dict[int, list[tuple[int, int]]] = {}
    pa = TASKS_PA
    for spec in specs:
        tpa, mm, sig = pa, pa + 0x1000, pa + 0x2000
        pa += 0x3000
        task(tpa, spec.pid, spec.tgid, spec.comm)
        if spec.root is not None:
            u64(tpa + MM, direct + mm)
            u64(mm + PGD, direct + spec.root)
        node = (direct + tpa + THREAD_NODE, tpa + THREAD_NODE)
        if spec.pid == spec.tgid:
            leaders.append((direct + tpa + TASKS, tpa + TASKS))
            rings[spec.pid] = [(direct + sig + THREAD_HEAD, sig + THREAD_HEAD), node]
            u64(tpa + SIGNAL, direct + sig)
        else:
            ring = rings[spec.tgid]
            u64(tpa + SIGNAL, ring[0][0] - THREAD_HEAD)
            ring.append(node)
    link(leaders)
    for ring in rings.values():
        link(ring)
