"""A Linux-like ``task_struct``, ``mm_struct`` and ``signal_struct`` in C, compiled with
``gcc -g`` twice: as a "vmlinux" (no libc, never run) whose DWARF the offsets provider reads
and whose ``init_task`` symbol sits in the kernel image's data, and as a program that prints
the compiler's ``offsetof()`` of every member the task walk reads (the independent truth).

The shapes are the kernel's: a ``thread_info`` first, bitfields, padding, an anonymous union
(``rcu_users``), ``thread_node`` inside an anonymous struct, ``mm_struct``'s members inside
its anonymous struct (``pgd`` not at 0), a flexible array at its end.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from gdbext.linux.tasks import TaskLayout

SOURCE = r"""
#include <stddef.h>
struct list_head { struct list_head *next, *prev; };
struct thread_info { unsigned long flags; unsigned long syscall_work; unsigned int status; };
struct mm_struct {
    struct {
        void *mmap;
        unsigned long mmap_base, task_size;
        unsigned long *pgd;
        int map_count;
    };
    unsigned long cpu_bitmap[];
};
struct signal_struct { int sigcnt; int live; int nr_threads; struct list_head thread_head; };
typedef int pid_t;
struct task_struct {
    struct thread_info thread_info;
    unsigned int __state;
    void *stack;
    unsigned int ptrace_bits : 3, in_iowait : 1;
    int on_cpu;
    char sched_pad[200];
    struct list_head tasks;
    union { void *rcu_ptr; long rcu_users; };
    struct mm_struct *mm, *active_mm;
    int exit_state;
    int exit_code;
    pid_t pid;
    pid_t tgid;
    struct { struct list_head thread_node; char link_pad[24]; };
    struct signal_struct *signal;
    char pad2[5];
    char comm[16];
    char tail[300];
};
#ifdef VMLINUX
__attribute__((section(".init_task_data"))) struct task_struct init_task;
void _start(void) {}
#else
#include <stdio.h>
#define T(m) printf(#m " %zu %zu\n", offsetof(struct task_struct, m), \
                    sizeof(((struct task_struct *)0)->m))
int main(void) {
    T(tasks); T(comm); T(pid); T(tgid); T(mm); T(__state); T(exit_state); T(signal);
    T(thread_node);
    printf("mm_pgd %zu 8\n", offsetof(struct mm_struct, pgd));
    printf("thread_head %zu 16\n", offsetof(struct signal_struct, thread_head));
    printf("task_struct_size %zu 0\n", sizeof(struct task_struct));
    return 0;
}
#endif
"""


@dataclass(frozen=True)
class Compiled:
    """The "vmlinux" and the truth: each member's (offset, size) as the compiler printed."""

    vmlinux: Path
    truth: dict[str, tuple[int, int]]

    def layout(self) -> TaskLayout:
        """The walk's layout, from the printed truth."""
        t = self.truth
        return TaskLayout(
            tasks=t["tasks"][0],
            comm=t["comm"][0],
            comm_size=t["comm"][1],
            pid=t["pid"][0],
            tgid=t["tgid"][0],
            mm=t["mm"][0],
            state=t["__state"][0],
            state_size=t["__state"][1],
            mm_pgd=t["mm_pgd"][0],
            exit_state=t["exit_state"][0],
            signal=t["signal"][0],
            thread_node=t["thread_node"][0],
            thread_head=t["thread_head"][0],
        )


def compile_layout(
    out: Path, init_task: int, text: int, debug: tuple[str, ...] = ("-g",)
) -> Compiled:
    """Both builds in ``out``: the vmlinux's ``init_task`` at ``init_task``, its ``_text`` at
    ``text``, its debug info as ``debug`` asks gcc (a DWARF version). Skips the test when gcc
    is not installed or cannot build."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed: no C file to read DWARF from")
    src = out / "layout.c"
    src.write_text(SOURCE)
    vmlinux, prog = out / "vmlinux", out / "offsets"
    builds = (
        [gcc, *debug, "-O0", "-DVMLINUX", "-nostdlib", "-static", "-no-pie", "-o", str(vmlinux),
         f"-Wl,--section-start=.init_task_data=0x{init_task:x}", f"-Wl,--defsym=_text=0x{text:x}",
         str(src)],
        [gcc, "-O0", "-o", str(prog), str(src)],
    )  # fmt: skip
    for argv in builds:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode:
            pytest.skip(f"gcc could not build the layout: {done.stderr.strip()[:200]}")
    printed = subprocess.run([str(prog)], capture_output=True, text=True, check=True).stdout
    truth = {}
    for line in printed.splitlines():
        name, offset, size = line.split()
        truth[name] = (int(offset), int(size))
    return Compiled(vmlinux, truth)
