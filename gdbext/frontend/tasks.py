"""``tasks``' core: the kernel's task list on a target, with offsets from its own BTF (or a
vmlinux's DWARF, when the user has one).

:func:`tasks` finds the kernel's tables (:func:`~gdbext.linux.detect.kernel_tables`: the
VMCOREINFO root, else the selected root), the BTF in its image
(:func:`~gdbext.linux.kernelbtf.find_kernel_btf`, kept for the stop) and walks the list from
``init_task`` (:func:`~gdbext.linux.tasks.walk_tasks`). A walk that stopped early is a result
too: the tasks read, and the error. With a vmlinux (:attr:`TasksOptions.vmlinux`), the
offsets come from its DWARF (:func:`~gdbext.linux.dwarf.load_dwarf_types`) and the BTF is not
looked for; ``init_task``'s address, when the caller has it from symbols, saves the search.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from gdbext.defaults import MAX_TASKS
from gdbext.errors import GdbextError
from gdbext.frontend.commands import RootOptions, open_page_table, root_warnings
from gdbext.linux.btf import Btf
from gdbext.linux.detect import kernel_tables
from gdbext.linux.dwarf import DwarfTypes, load_dwarf_types
from gdbext.linux.kernelbtf import find_kernel_btf
from gdbext.linux.roots import kernel_half_differences
from gdbext.linux.tasks import TaskList, TypeOffsets, walk_tasks
from gdbext.plugin.target import Target
from gdbext.x86.paging import X86PageTable


@dataclass(frozen=True)
class TasksOptions:
    root: RootOptions = field(default_factory=RootOptions)
    #: The most tasks read before the list is called corrupt.
    limit: int = MAX_TASKS
    #: A vmlinux with debug info: structure offsets from its DWARF instead of the BTF.
    vmlinux: str | None = None
    #: ``init_task``'s address (from symbols, moved by the slide); ``None``: searched for.
    init_task: int | None = None


@dataclass(frozen=True)
class TasksResult:
    """The task list, the kernel root it was read through, and where its offsets came from:
    the BTF's physical address and number of types, or the vmlinux whose DWARF gave them."""

    tasks: TaskList
    kernel_root: int
    btf_at: int | None
    btf_types: int | None
    warnings: tuple[str, ...] = ()
    #: Each task root's ``roots`` id (the root in hex) when the table there has the kernel's
    #: half, as every address space's does; ``None`` when it does not (nor can it be read).
    address_spaces: dict[int, str | None] = field(default_factory=dict)

    def address_space(self, root: int | None) -> str | None:
        """The ``roots`` id of the address space at ``root``, or ``None``."""
        return None if root is None else self.address_spaces.get(root)

    #: The vmlinux whose DWARF gave the offsets (``None``: the kernel's BTF did).
    dwarf: str | None = None


#: DWARF read, by (path, size, mtime): a debugger session reads a vmlinux's once.
_DWARF: dict[tuple[str, int, int], DwarfTypes] = {}


def dwarf_types(path: str) -> DwarfTypes:
    """The task walk's structures from ``path``'s DWARF, kept while the file is unchanged.

    :raises DwarfError: the file cannot be read, or has no debug info.
    """
    path = os.path.expanduser(path)
    try:
        st = os.stat(path)
        key: tuple[str, int, int] | None = (path, st.st_size, st.st_mtime_ns)
    except OSError:
        key = None
    if key is not None and key in _DWARF:
        return _DWARF[key]
    types = load_dwarf_types(path)
    if key is not None:
        _DWARF.clear()
        _DWARF[key] = types
    return types


def tasks(target: Target, options: TasksOptions = TasksOptions()) -> TasksResult:
    """The kernel's task list on ``target``."""
    pt = open_page_table(target, options.root)
    kpt = kernel_tables(pt, target.facts)

    def make() -> Btf:
        return find_kernel_btf(kpt, target.mapper)

    types: TypeOffsets
    btf_at = btf_types = None
    if options.vmlinux is not None:
        types = dwarf_types(options.vmlinux)
    else:
        cache = target.stop_cache
        btf = make() if cache is None else cache.get(("kernel-btf", kpt.root, kpt.levels), make)
        types, btf_at, btf_types = btf, btf.origin, btf.count
    found = walk_tasks(kpt, types, target.mapper, options.init_task, options.limit)
    spaces: dict[int, str | None] = {}
    for t in found.tasks:
        if t.root is not None and t.root not in spaces:
            spaces[t.root] = _space_id(kpt, t.root)
    return TasksResult(
        found,
        kpt.root,
        btf_at,
        btf_types,
        tuple(root_warnings(pt, options.root)),
        spaces,
        None if options.vmlinux is None else types.path if isinstance(types, DwarfTypes) else None,
    )


def _space_id(kpt: X86PageTable, root: int) -> str | None:
    """``root`` in hex (its ``roots`` id) when its kernel half is the kernel's."""
    try:
        differ = kernel_half_differences(kpt, root)
    except GdbextError:
        return None
    return None if differ else f"0x{root:x}"
