"""The page-table options, declared once: every command's (``--cr3``...) and each side's of a
command that compares two tables (``--a-cr3``, ``--b-user-pgd``...)."""

from __future__ import annotations

import argparse
from typing import Any

from gdbext.frontend import argtypes


def add_page_table_options(p: argparse.ArgumentParser, side: str = "") -> None:
    """Which page table: ``--cpu``, ``--cr3`` or ``--kernel`` or an address space by owner
    (``--root``, ``--pid``, ``--comm``, ``--exe``), ``--user-pgd``, ``--levels``.

    With ``side`` (``"a"``), the same options for one side of a command that compares two
    tables: ``--a-cpu``, ``--a-cr3``... into ``a_cpu``, ``a_cr3``..., each ``None`` when not
    given (:func:`gdbext.frontend.command.root_options` reads either)."""
    opt = f"--{side}-" if side else "--"
    dest = f"{side}_" if side else ""
    flag: dict[str, Any] = {"action": "store_true"}
    if side:
        flag["default"] = None
    title = (
        f"page table of {side.upper()} (default: the options above)"
        if side
        else "page table (default: the selected CPU's CR3)"
    )
    r = p.add_argument_group(title)
    r.add_argument(
        f"{opt}cpu",
        dest=f"{dest}cpu",
        type=argtypes.integer,
        help="CPU whose CR3 and paging mode to use (default: the selected one, else 0)",
    )
    which = r.add_mutually_exclusive_group()
    which.add_argument(
        f"{opt}cr3",
        dest=f"{dest}cr3",
        type=argtypes.integer,
        metavar="ADDR",
        help="this root instead (PCID bits masked)",
    )
    which.add_argument(
        f"{opt}kernel",
        dest=f"{dest}kernel",
        help="the kernel's own root (VMCOREINFO init_top_pgt + phys_base) and levels",
        **flag,
    )
    which.add_argument(
        f"{opt}root",
        dest=f"{dest}root",
        type=argtypes.integer,
        metavar="ID|PADDR",
        help="the address space of this id (from roots), or the top table at this physical "
        "address (a warning when it is not an address space's)",
    )
    which.add_argument(
        f"{opt}pid",
        dest=f"{dest}pid",
        type=argtypes.integer,
        metavar="N",
        help="the address space of the task with PID N (from tasks: mm->pgd; with PTI the "
        "kernel's table of the pair, --user-pgd the user one)",
    )
    which.add_argument(
        f"{opt}comm",
        dest=f"{dest}comm",
        metavar="NAME",
        help="the address space of the tasks whose comm is NAME (one; else they are listed)",
    )
    which.add_argument(
        f"{opt}exe",
        dest=f"{dest}exe",
        metavar="NAME",
        help="the address space whose exec file name (from its stack, as roots reads it) has "
        "NAME's base name (one; else they are listed)",
    )
    r.add_argument(
        f"{opt}user-pgd",
        dest=f"{dest}user_pgd",
        help="the PTI user half of the selected root (root | 0x1000)",
        **flag,
    )
    r.add_argument(
        f"{opt}levels", dest=f"{dest}levels", type=int, choices=(4, 5), help="override CR4.LA57"
    )
