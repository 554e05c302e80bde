"""Write a simulated machine as the ELF core QEMU 7.2 ``dump-guest-memory`` writes (x86-64).

The layout is :mod:`gdbext.formats.elfcore`'s (the one writer, ``gdbext snapshot``'s too);
this module gives it a :class:`~gdbext_sim.memory.SparsePhysMemory`. The file is written
sparsely: frames that are all zeros are skipped with a seek, so a 256 MiB guest with a few page
tables costs a few KiB of disk (on a file system with holes).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from gdbext.cpu import CpuState
from gdbext.formats import elfcore
from gdbext.formats.elfcore import (
    PN_XNUM,
    QEMU_E_EHSIZE,
    elf_note,
    prstatus_desc,
    qemu_cpu_state_desc,
    qemu_notes,
)
from gdbext_sim.memory import SparsePhysMemory

__all__ = [
    "PN_XNUM",
    "QEMU_E_EHSIZE",
    "elf_note",
    "prstatus_desc",
    "qemu_cpu_state_desc",
    "qemu_notes",
    "write_qemu_elf_core",
]


def write_qemu_elf_core(
    path: str | os.PathLike[str],
    memory: SparsePhysMemory,
    cpus: Sequence[CpuState],
    *,
    vmcoreinfo: str | None = None,
) -> None:
    """Write ``memory`` and ``cpus`` to ``path`` as QEMU 7.2 ``dump-guest-memory`` would.

    :param path: the core file to create (replaced if it exists).
    :param memory: the RAM; one PT_LOAD per range of :attr:`SparsePhysMemory.ram_ranges`.
    :param cpus: the CPUs, in CPU-index order (CPU ``i`` gets ``pr_pid = i + 1``).
    :param vmcoreinfo: the text of a VMCOREINFO note, written after the QEMU notes.
    :raises ValueError: without CPUs.
    """
    elfcore.write_qemu_elf_core(
        path, memory.ram_ranges, memory.iter_frames(), cpus, vmcoreinfo=vmcoreinfo
    )
