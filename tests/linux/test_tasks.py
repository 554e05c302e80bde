"""The task walk on a hand-built kernel: page tables written entry by entry
(:class:`tests.support.pagetables.Env`), a BTF blob (:func:`tests.support.btfblob.kernel_like`)
in a read-only page of the image mapping, ``init_task`` in its data, the other tasks, their
``mm`` and ``signal`` in the direct map. Every expected value is the one written here."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from support.btfblob import kernel_like
from support.pagetables import NX, PS, Env, G, P, W

from gdbext.errors import NotFoundError
from gdbext.linux.kernelbtf import find_kernel_btf
from gdbext.linux.tasks import TaskList, find_init_task, state_letter, task_layout, walk_tasks

IMAGE = 0xFFFF_FFFF_8100_0000
DIRECT = 0xFFFF_8880_0000_0000
BTF_PA = 0x60000
DATA_PA = 0x61000
# task_struct's offsets as kernel_like lays them out.
STATE, TASKS, PID, TGID, MM, COMM = 0, 16, 32, 36, 40, 48
SIGNAL, THREAD_NODE, EXIT_STATE = 64, 72, 88
PGD, THREAD_HEAD = 8, 8


def dm(pa: int) -> int:
    return DIRECT + pa


class Kernel:
    """The hand-built kernel: :attr:`tasks` maps each task's VA to (pid, tgid, comm, state)."""

    def __init__(self, btf_page: bytes | None = None) -> None:
        self.env = env = Env(4)
        blob = kernel_like()[0].build()
        page = btf_page if btf_page is not None else b"\x9f\xeb\x01\x00junk" + bytes(56) + blob
        env.ram.buf[BTF_PA : BTF_PA + len(page)] = page
        env.link(IMAGE, 1, BTF_PA | P | G | NX)
        env.link(IMAGE + 0x1000, 1, DATA_PA | P | W | G | NX)
        env.link(DIRECT, 2, 0 | P | W | PS | G | NX)
        self.init = IMAGE + 0x1000 + 0x200
        # A decoy first: swapper/0 and PID 0, but a tasks list that goes nowhere.
        decoy = DATA_PA + 0x40
        self.comm(decoy, b"swapper/0")
        self.u64(decoy + TASKS, dm(0x7000))
        self.u64(decoy + TASKS + 8, dm(0x7000))
        self.order: list[int] = []
        self.task_at(DATA_PA + 0x200, 0, 0, b"swapper/0", 0, mm=0)
        a = self.task_at(0x40000, 1, 1, b"init", 1, mm=0x48000, pgd_pa=0x49000)
        k = self.task_at(0x41000, 2, 2, b"kthreadd", 0x402, mm=0)
        c = self.task_at(0x42000, 10, 10, b"app", 0, mm=0x4A000, pgd_pa=0x4B000)
        t = self.task_at(0x43000, 11, 10, b"app", 0, mm=0x4A000, exit_state=0x20)
        self.leaders = [self.init, a, k, c]
        self.link([x + TASKS for x in self.leaders])
        # Threads: each leader's signal->thread_head ring through thread_node.
        for leader, sig, members in ((a, 0x44000, [a]), (c, 0x45000, [c, t])):
            self.u64(leader - DIRECT + SIGNAL if leader >= DIRECT else 0, dm(sig))
            if leader == c:
                self.u64(t - DIRECT + SIGNAL, dm(sig))
            self.link([dm(sig) + THREAD_HEAD] + [m + THREAD_NODE for m in members])

    def u64(self, pa: int, value: int) -> None:
        struct.pack_into("<Q", self.env.ram.buf, pa, value)

    def u32(self, pa: int, value: int) -> None:
        struct.pack_into("<I", self.env.ram.buf, pa, value)

    def comm(self, task_pa: int, name: bytes) -> None:
        self.env.ram.buf[task_pa + COMM : task_pa + COMM + 16] = name.ljust(16, b"\0")

    def pa(self, va: int) -> int:
        return va - IMAGE - 0x1000 + DATA_PA if va >= IMAGE else va - DIRECT

    def task_at(
        self, pa: int, pid: int, tgid: int, comm: bytes, state: int, *, mm: int,
        pgd_pa: int = 0, exit_state: int = 0,
    ) -> int:  # fmt: skip
        self.u32(pa + STATE, state)
        self.u32(pa + PID, pid)
        self.u32(pa + TGID, tgid)
        self.u32(pa + EXIT_STATE, exit_state)
        self.comm(pa, comm)
        if mm:
            self.u64(pa + MM, dm(mm))
            if pgd_pa:
                self.u64(mm + PGD, dm(pgd_pa))
        return IMAGE + 0x1000 + (pa - DATA_PA) if pa >= DATA_PA else dm(pa)

    def link(self, nodes: list[int]) -> None:
        """A circular list through ``nodes`` (virtual addresses of list_heads)."""
        for i, node in enumerate(nodes):
            self.u64(self.pa(node), nodes[(i + 1) % len(nodes)])
            self.u64(self.pa(node) + 8, nodes[i - 1])


def _walk(kernel: Kernel, limit: int = 1000) -> TaskList:
    btf = find_kernel_btf(kernel.env.pt)
    return walk_tasks(kernel.env.pt, btf, limit=limit)


def test_btf_found_past_a_decoy_magic() -> None:
    kernel = Kernel()
    btf = find_kernel_btf(kernel.env.pt)
    assert btf.origin == BTF_PA + 64
    assert task_layout(btf).comm == COMM


def test_no_btf_in_the_image() -> None:
    kernel = Kernel(btf_page=b"\x9f\xeb\x01\x00" + bytes(60))
    with pytest.raises(NotFoundError, match="no BTF with a task_struct"):
        find_kernel_btf(kernel.env.pt)


def test_the_walk_lists_leaders_threads_states_and_roots() -> None:
    kernel = Kernel()
    result = _walk(kernel)
    assert result.error is None and result.threads
    assert result.init_task == kernel.init
    got = [(t.pid, t.tgid, t.comm, t.state, t.root, t.kernel_thread) for t in result.tasks]
    assert got == [
        (0, 0, "swapper/0", "R", None, True),
        (1, 1, "init", "S", 0x49000, False),
        (2, 2, "kthreadd", "I", None, True),
        (10, 10, "app", "R", 0x4B000, False),
        (11, 10, "app", "Z", 0x4B000, False),  # a thread: its leader's mm
    ]


def test_init_task_skips_the_decoy() -> None:
    kernel = Kernel()
    layout = task_layout(find_kernel_btf(kernel.env.pt))
    assert find_init_task(kernel.env.pt, layout) == kernel.init


def test_no_init_task() -> None:
    kernel = Kernel()
    kernel.comm(DATA_PA + 0x200, b"swapper/1")
    layout = task_layout(find_kernel_btf(kernel.env.pt))
    with pytest.raises(NotFoundError, match="no init_task"):
        find_init_task(kernel.env.pt, layout)


def test_a_cycle_that_misses_init_task_keeps_what_was_read() -> None:
    kernel = Kernel()
    a, k = kernel.leaders[1], kernel.leaders[2]
    kernel.u64(kernel.pa(k + TASKS), a + TASKS)  # kthreadd points back to init (PID 1)
    result = _walk(kernel)
    assert "comes again: a cycle" in str(result.error)
    assert [t.pid for t in result.tasks] == [0, 1, 2]


@pytest.mark.parametrize(
    ("pointer", "message"),
    [(DIRECT + (1 << 30), "not mapped"), (0x1000, "not a kernel address")],
)
def test_a_pointer_outside_ram_ends_the_walk(pointer: int, message: str) -> None:
    kernel = Kernel()
    kernel.u64(kernel.pa(kernel.leaders[2] + TASKS), pointer)
    result = _walk(kernel)
    assert message in str(result.error)
    assert "stopped after 3 tasks" in str(result.error)
    assert [t.pid for t in result.tasks] == [0, 1, 2]


def test_a_list_longer_than_the_limit() -> None:
    result = _walk(Kernel(), limit=3)
    assert "more than 3 tasks" in str(result.error)
    assert len(result.tasks) == 3


def test_state_letters() -> None:
    assert [state_letter(s) for s in (0, 1, 2, 4, 8, 0x40, 0x402, 0x2001)] == list("RSDTtPIS")
    assert state_letter(0, 0x10) == "X"


def test_the_committed_dumps_hold_no_btf(
    kernel_dump: Callable[[str], Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The committed dumps are minimised: the image's read-only data is not in them, so
    ``tasks`` says so in one line and exits 1 (the tasks are tested on dumps made live)."""
    from gdbext import cli

    status = cli.main(["tasks", str(kernel_dump("4level"))])
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith("gdbext: no BTF with a task_struct in the kernel image's read-only")
    assert err.count("\n") == 1
