"""Is a page table one half of a Linux PTI pair? Evidence from the two top-level tables.

Under page-table isolation (``CONFIG_PAGE_TABLE_ISOLATION``, ``pti=on``) every PGD is an
8 KiB-aligned pair of 4 KiB tables: the kernel's at ``root & ~0x1000`` and the one user mode
runs on at ``root | 0x1000`` (``kernel_to_user_pgdp``). A 4 KiB twin page alone proves
nothing: a kernel built with PTI but booted without it (Debian's, ``pti=auto`` on a CPU that
is not vulnerable, or ``nopti``) still allocates PGDs as 8 KiB pairs and leaves the twin page
zero, and a kernel built without PTI puts unrelated memory there. So :func:`examine_pti`
requires what Linux's PTI code makes true (``arch/x86/mm/pti.c``, 6.1) and nothing else does:

1. **The user halves agree.** ``__pti_set_user_pgtbl`` writes every top-level entry of the
   user half (indices 0..255, 4- and 5-level alike) to both tables, adding only NX to the
   kernel's copy: each user-half entry is present in both or in neither, and when present
   both link the same lower table. (A kernel's own ``init_top_pgt`` has an empty user half,
   which agrees trivially.)
2. **The user table maps a few kernel entries, all of which the kernel table has.** PTI clones
   only what the entry code needs: ``cpu_entry_area`` and ESPFIX (``pti_clone_p4d``), the
   entry text (``pti_clone_entry_text``), each CPU's ``cpu_tss_rw`` page (in the direct map)
   and, per process, the LDT remap. So the user table's kernel half has at least one present
   entry, every such index is present in the kernel table too, and the kernel table has
   strictly more of them (the direct map, vmalloc, vmemmap... are never cloned).
3. **A lower table is shared.** ``pti_clone_p4d`` makes the user table's P4D entry for
   ``cpu_entry_area`` (and ESPFIX) a copy of the kernel's, so both link the same PUD table:
   at the top level with 4-level paging (the P4D is folded into the PGD), one level down with
   5-level paging (the user PGD's entry 511 is PTI's own P4D table, whose entries are the
   kernel's). At least one kernel-half entry, at the top or the next level, must link the
   same table in both.

The committed real dumps hold all three (``kaslr-pti``: CPU 0's process PGD 0x61c4000 and the
kernel's ``init_top_pgt`` 0x2a10000, each with a twin mapping user entries 0 and 255 (the
process only) and kernel entries 282 (a ``cpu_tss_rw`` page), 508 (``cpu_entry_area``, same
PUD table), 510 (ESPFIX, same PUD table) and 511 (the entry text, PTI's own PUD table)); the
``4level`` and ``la57`` dumps (PTI compiled in, off) fail the first two: the twins are zero.

>>> from gdbext_sim.memory import SparsePhysMemory
>>> from gdbext.x86.paging import X86PageTable
>>> mem = SparsePhysMemory(16 << 20)
>>> examine_pti(X86PageTable(mem, 0x100000)).reason
'the twin table 0x101000 maps nothing in the kernel half (PTI clones at least cpu_entry_area)'
"""

from __future__ import annotations

from dataclasses import dataclass

from gdbext.errors import PhysMemoryError
from gdbext.flags import PRESENT
from gdbext.linux.layout import PTI_USER_PGD_BIT
from gdbext.x86.entries import is_link, link_address
from gdbext.x86.paging import X86PageTable

__all__ = ["PTI_USER_PGD_BIT", "PtiVerdict", "detect_pti", "examine_pti", "pti_pair_roots"]

#: Top-level indices below this map the user half (4- and 5-level paging alike).
USER_HALF_ENTRIES = 256


@dataclass(frozen=True)
class PtiVerdict:
    """What :func:`examine_pti` concluded about a root and its twin.

    ``pair`` is ``(kernel_root, user_root)`` when the tables are a PTI pair, else ``None``;
    ``reason`` says why in one line either way; ``facts`` list the evidence (one line each).
    """

    kernel_root: int
    user_root: int
    pair: tuple[int, int] | None
    reason: str
    facts: tuple[str, ...] = ()


def pti_pair_roots(root: int) -> tuple[int, int]:
    """``(kernel_root, user_root)`` that a PTI pair holding ``root`` would have.

    >>> [hex(r) for r in pti_pair_roots(0x61c5000)]
    ['0x61c4000', '0x61c5000']
    """
    kernel = root & ~PTI_USER_PGD_BIT
    return kernel, kernel | PTI_USER_PGD_BIT


def detect_pti(pt: X86PageTable) -> tuple[int, int] | None:
    """``(kernel_pgd_root, user_pgd_root)`` if ``pt``'s root is either half of a Linux PTI
    pair, else ``None`` (see the module docstring for the evidence required)."""
    return examine_pti(pt).pair


def _table_link(entry: int, level: int, pt: X86PageTable) -> int | None:
    """The table a present non-leaf entry at ``level`` links, else ``None``."""
    rules = pt.rules.level(level)
    return link_address(entry, rules) if is_link(entry, rules) else None


def examine_pti(pt: X86PageTable) -> PtiVerdict:
    """Decide whether ``pt``'s root and its twin (``root ^ 0x1000``) are a PTI pair."""
    kernel_root, user_root = pti_pair_roots(pt.root)
    top = pt.levels
    top_rules = pt.rules.level(top)

    def no(reason: str, *facts: str) -> PtiVerdict:
        return PtiVerdict(kernel_root, user_root, None, reason, facts)

    try:
        kernel = pt.read_table(kernel_root)
        user = pt.read_table(user_root)
    except PhysMemoryError as exc:
        return no(f"the pair 0x{kernel_root:x}/0x{user_root:x} cannot be read: {exc}")

    # 1. The user halves agree (same presence, same lower tables).
    shared_user = 0
    for i in range(USER_HALF_ENTRIES):
        k, u = kernel[i], user[i]
        if (k & PRESENT) != (u & PRESENT):
            which = "kernel" if k & PRESENT else "user"
            return no(
                f"the user halves differ: entry {i} is present only in the {which} table "
                f"(0x{k:x} vs 0x{u:x})"
            )
        if k & PRESENT:
            k_link, u_link = link_address(k, top_rules), link_address(u, top_rules)
            if k_link != u_link:
                return no(
                    f"the user halves differ: entry {i} links 0x{k_link:x} in the kernel "
                    f"table and 0x{u_link:x} in the user table"
                )
            shared_user += 1

    # 2. The user table maps a few kernel-half entries, all present in the kernel table.
    k_idx = [i for i in range(USER_HALF_ENTRIES, 512) if kernel[i] & PRESENT]
    u_idx = [i for i in range(USER_HALF_ENTRIES, 512) if user[i] & PRESENT]
    if not u_idx:
        return no(
            f"the twin table 0x{user_root:x} maps nothing in the kernel half "
            "(PTI clones at least cpu_entry_area)"
        )
    extra = sorted(set(u_idx) - set(k_idx))
    if extra:
        return no(
            f"the twin table 0x{user_root:x} maps kernel-half entries the kernel table "
            f"0x{kernel_root:x} does not: {', '.join(map(str, extra[:8]))}"
        )
    if len(u_idx) >= len(k_idx):
        return no(
            f"the twin table 0x{user_root:x} maps as many kernel-half entries as the kernel "
            f"table ({len(u_idx)}): not PTI's few clones"
        )

    # 3. A kernel-half lower table is shared (pti_clone_p4d), at the top or one level down.
    shared: list[str] = []
    for i in u_idx:
        kt, ut = _table_link(kernel[i], top, pt), _table_link(user[i], top, pt)
        if kt is not None and kt == ut:
            shared.append(f"entry {i} links table 0x{kt:x} in both")
    if not shared and top > 4:
        for i in u_idx:
            kt, ut = _table_link(kernel[i], top, pt), _table_link(user[i], top, pt)
            if kt is None or ut is None:
                continue
            try:
                k_low, u_low = pt.read_table(kt), pt.read_table(ut)
            except PhysMemoryError:
                continue
            for j in range(512):
                klt = _table_link(k_low[j], top - 1, pt)
                if klt is not None and klt == _table_link(u_low[j], top - 1, pt):
                    shared.append(f"entry {i}/{j} links table 0x{klt:x} in both")
                    break
    if not shared:
        return no(
            f"the twin table 0x{user_root:x} shares no kernel-half table with 0x{kernel_root:x} "
            "(PTI shares cpu_entry_area's)"
        )
    facts = (
        f"user half: {shared_user} entries link the same tables in both",
        f"kernel half: {len(u_idx)} of the kernel table's {len(k_idx)} entries in the user "
        f"table ({', '.join(map(str, u_idx))})",
        *shared,
    )
    return PtiVerdict(
        kernel_root,
        user_root,
        (kernel_root, user_root),
        f"PTI pair: kernel PGD 0x{kernel_root:x}, user PGD 0x{user_root:x}",
        facts,
    )
