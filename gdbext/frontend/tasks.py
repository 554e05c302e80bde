"""``tasks``' core: the kernel's task list on a target, with offsets from its own BTF.

:func:`tasks` finds the kernel's tables (:func:`~gdbext.linux.detect.kernel_tables`: the
VMCOREINFO root, else the selected root), the BTF in its image
(:func:`~gdbext.linux.kernelbtf.find_kernel_btf`, kept for the stop) and walks the list from
``init_task`` (:func:`~gdbext.linux.tasks.walk_tasks`). A walk that stopped early is a result
too: the tasks read, and the error.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gdbext.errors import GdbextError
from gdbext.frontend.commands import RootOptions, open_page_table, root_warnings
from gdbext.linux.btf import Btf
from gdbext.linux.detect import kernel_tables
from gdbext.linux.kernelbtf import find_kernel_btf
from gdbext.linux.roots import kernel_half_differences
from gdbext.linux.tasks import MAX_TASKS, TaskList, walk_tasks
from gdbext.plugin.target import Target
from gdbext.x86.paging import X86PageTable


@dataclass(frozen=True)
class TasksOptions:
    root: RootOptions = field(default_factory=RootOptions)
    #: The most tasks read before the list is called corrupt.
    limit: int = MAX_TASKS


@dataclass(frozen=True)
class TasksResult:
    """The task list, the kernel root it was read through, and where its BTF lies (physical
    address, number of types)."""

    tasks: TaskList
    kernel_root: int
    btf_at: int
    btf_types: int
    warnings: tuple[str, ...] = ()
    #: Each task root's ``roots`` id (the root in hex) when the table there has the kernel's
    #: half, as every address space's does; ``None`` when it does not (nor can it be read).
    address_spaces: dict[int, str | None] = field(default_factory=dict)

    def address_space(self, root: int | None) -> str | None:
        """The ``roots`` id of the address space at ``root``, or ``None``."""
        return None if root is None else self.address_spaces.get(root)


def tasks(target: Target, options: TasksOptions = TasksOptions()) -> TasksResult:
    """The kernel's task list on ``target``."""
    pt = open_page_table(target, options.root)
    kpt = kernel_tables(pt, target.facts)

    def make() -> Btf:
        return find_kernel_btf(kpt, target.mapper)

    cache = target.stop_cache
    btf = make() if cache is None else cache.get(("kernel-btf", kpt.root, kpt.levels), make)
    found = walk_tasks(kpt, btf, target.mapper, limit=options.limit)
    spaces: dict[int, str | None] = {}
    for t in found.tasks:
        if t.root is not None and t.root not in spaces:
            spaces[t.root] = _space_id(kpt, t.root)
    return TasksResult(
        found, kpt.root, btf.origin, btf.count, tuple(root_warnings(pt, options.root)), spaces
    )


def _space_id(kpt: X86PageTable, root: int) -> str | None:
    """``root`` in hex (its ``roots`` id) when its kernel half is the kernel's."""
    try:
        differ = kernel_half_differences(kpt, root)
    except GdbextError:
        return None
    return None if differ else f"0x{root:x}"
