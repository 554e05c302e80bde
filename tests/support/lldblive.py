"""What the LLDB tests against QEMU share: PhyMemMode as LLDB's raw packet command reports it,
and the guest's memory and page tables read through QEMU's monitor (``x``, ``xp``), without
gdbext.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qemu_guest import QemuGuest


QUERY = "process plugin packet send qqemu.PhyMemMode"


def mode_of(output: str) -> str:
    m = re.search(r"^response: (\d)$", output, re.M)
    assert m, output
    return m.group(1)


def words_at(guest: QemuGuest, command: str, addr: int) -> list[str]:
    """The first four quadwords at ``addr`` by the monitor's ``x`` (virtual) or ``xp``."""
    return re.findall(r"0x[0-9a-f]{16}", guest.hmp(f"{command} /4gx 0x{addr:x}"))


ENTRY_ADDR = 0x000F_FFFF_FFFF_F000


def page_table_of(guest: QemuGuest, vaddr: int) -> tuple[int, int]:
    """The page table (last level) that maps the 4 KiB page at ``vaddr`` in the current CR3
    (4-level paging), and the page's physical address: a walk with the monitor's ``xp``."""
    table = guest.cr3() & ENTRY_ADDR
    for shift in (39, 30, 21):
        index = (vaddr >> shift) & 0x1FF
        entry = int(guest.hmp(f"xp /1gx 0x{table + 8 * index:x}").split()[-1], 16)
        assert entry & 1 and not entry & 0x80, hex(entry)  # present, not a large page
        table = entry & ENTRY_ADDR
    pte = int(guest.hmp(f"xp /1gx 0x{table + 8 * ((vaddr >> 12) & 0x1FF):x}").split()[-1], 16)
    return table, pte & ENTRY_ADDR
