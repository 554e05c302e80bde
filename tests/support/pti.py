"""A simulated Linux kernel with or without PTI: a kernel PGD and its twin, the user PGD.

The pair is built the way Linux's ``arch/x86/mm/pti.c`` builds it (the user half copied to the
twin with NX added to the kernel's copy, cpu_entry_area and ESPFIX cloned at the P4D level so
that the PUD tables are shared, the entry text and a ``cpu_tss_rw`` page mapped in the user
table only); without PTI the twin is what a kernel leaves beside its PGD: a zero page.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from gdbext.cpu import CR0_PG, CR0_WP, CR4_LA57, CR4_PAE, EFER_LMA, EFER_LME, EFER_NXE, CpuState
from gdbext.flags import GLOBAL, NO_EXECUTE, PRESENT, USER_ACCESSIBLE, WRITABLE
from gdbext.linux.layout import CPU_ENTRY_AREA_BASE, ESPFIX_BASE_ADDR
from gdbext.mapper import read_u64, write_u64
from gdbext.plugin.target import Target
from gdbext.x86.paging import SIZE_2M, SIZE_4K, X86PageTable
from gdbext_sim.memory import SparsePhysMemory, TopDownFrameAllocator
from gdbext_sim.scenario import DEFAULT_CR0, DEFAULT_CR4, DEFAULT_EFER

#: Where the simulated pair lives (8 KiB aligned), well below the frames the allocator hands out.
KERNEL_PGD = 0x200000
USER_PGD = KERNEL_PGD | 0x1000
#: The simulated kernel's direct map base, by levels (Linux's defaults, no KASLR).
DIRECT = {4: 0xFFFF_8880_0000_0000, 5: 0xFF11_0000_0000_0000}
#: vmalloc (a kernel stack lives there with ``CONFIG_VMAP_STACK``).
VMALLOC = {4: 0xFFFF_C900_0000_0000, 5: 0xFFA0_0000_0000_0000}
VMALLOC_STACK = 0x330000
TEXT = 0xFFFF_FFFF_8100_0000
#: The entry text: the last 2 MiB of the simulated 8 MiB text (``ALIGN_ENTRY_TEXT_BEGIN``).
ENTRY_TEXT = TEXT + 0x60_0000
ENTRY_TEXT_FRAME = 0x1600000
RODATA, DATA = TEXT + 0x80_0000, TEXT + 0xA0_0000
#: Physical frames of the cpu_entry_area pages: IDT, GDT, entry stack, TSS (5 pages).
CEA_IDT, CEA_GDT, CEA_STACK, CEA_TSS = 0x300000, 0x301000, 0x302000, 0x303000
ESPFIX_FRAME = 0x310000
USER_TEXT, USER_DATA, USER_STACK = 0x400000, 0x600000, 0x7FFF_FFFF_F000


@dataclass
class PtiMachine:
    """A simulated kernel: RAM, the kernel PGD's table and its twin's (PTI's user PGD)."""

    memory: SparsePhysMemory
    allocator: TopDownFrameAllocator
    kernel: X86PageTable
    user: X86PageTable
    levels: int
    nxe: bool = True

    def direct(self, paddr: int) -> int:
        """The direct map's address of ``paddr``."""
        return DIRECT[self.levels] + paddr

    def cpu(self, cr3: int) -> CpuState:
        cr4 = DEFAULT_CR4 | CR4_PAE | (CR4_LA57 if self.levels == 5 else 0)
        efer = DEFAULT_EFER | EFER_LME | EFER_LMA | (EFER_NXE if self.nxe else 0)
        return CpuState(cr0=DEFAULT_CR0 | CR0_PG | CR0_WP, cr3=cr3, cr4=cr4, efer=efer)

    def target(self, cr3: int = KERNEL_PGD, cr4_set: int = 0) -> Target:
        """The machine as a target whose CPU 0 runs on ``cr3`` (default: the kernel PGD), with
        ``cr4_set`` bits added to CR4 (CR4.SMEP, say)."""
        cpu = self.cpu(cr3)
        assert cpu.cr4 is not None
        return Target(
            backend="sim",
            description="pti-sim",
            mapper=self.memory,
            cpus=[dataclasses.replace(cpu, cr4=cpu.cr4 | cr4_set)],
            ram=self.memory.ram_ranges,
            read_path="in-memory simulator",
        )

    def map_kernel(self, vaddr: int, paddr: int, size: int, page: int, flags: int) -> None:
        self.kernel.map_range(vaddr, paddr, size, page, flags, self.allocator)

    def map_user_pgd(self, vaddr: int, paddr: int, size: int, page: int, flags: int) -> None:
        """Map in the user PGD only (what PTI clones into it, or what a test plants there)."""
        self.user.map_range(vaddr, paddr, size, page, flags, self.allocator)

    def level4_entry(self, pt: X86PageTable, vaddr: int) -> int:
        """The level-4 (P4D) entry that maps ``vaddr`` in ``pt``."""
        table = pt.root
        for level in range(pt.levels, 3, -1):
            index = (vaddr >> (12 + 9 * (level - 1))) & 0x1FF
            entry = read_u64(self.memory, table + 8 * index)
            if level == 4:
                return entry
            table = entry & pt.addr_mask
        raise AssertionError("unreachable")

    def clone_p4d(self, vaddr: int) -> None:
        """``pti_clone_p4d``: the user PGD's P4D entry for ``vaddr`` becomes the kernel's."""
        entry = self.level4_entry(self.kernel, vaddr)
        assert entry & PRESENT
        self.user.link_table(vaddr, 4, entry & self.kernel.addr_mask, entry & 0x7, self.allocator)

    def sync_user_half(self, kernel_nx: bool = True) -> None:
        """``__pti_set_user_pgtbl`` for every user-half top-level entry: copy it to the user
        PGD, and (``kernel_nx``) add NX to the kernel's copy of user entries (NX supported)."""
        for i in range(256):
            entry = read_u64(self.memory, KERNEL_PGD + 8 * i)
            write_u64(self.memory, USER_PGD + 8 * i, entry)
            if (
                kernel_nx
                and self.nxe
                and entry & (PRESENT | USER_ACCESSIBLE) == (PRESENT | USER_ACCESSIBLE)
            ):
                write_u64(self.memory, KERNEL_PGD + 8 * i, entry | NO_EXECUTE)


def build_pti_machine(
    levels: int = 4,
    *,
    pti: bool = True,
    user_pages: bool = True,
    nxe: bool = True,
    global_kernel: bool = False,
    sync_user: bool = True,
    kernel_nx: bool = True,
    entry_text_frame: int = ENTRY_TEXT_FRAME,
) -> PtiMachine:
    """A small Linux-like kernel with (``pti=True``) or without a PTI user PGD.

    Kernel PGD: a 32 MiB direct map (2 MiB pages, RW NX), a vmalloc'd stack (4 pages RW NX),
    the kernel text (8 MiB RX) whose last
    2 MiB are the entry text, rodata (2 MiB R NX), data (2 MiB RW NX), cpu_entry_area (IDT and
    GDT R, entry stack RW, TSS R: all NX), one ESPFIX page (R NX); with ``user_pages`` a process:
    text (4 pages R X user), data (2 pages RW NX user), stack (1 page RW NX user).
    GLOBAL is set where Linux under PTI sets it (cpu_entry_area, ESPFIX, the entry text);
    ``global_kernel`` sets it on the direct map, vmalloc and the rest of the text too (what a
    kernel without PTI does).

    User PGD (``pti``): the user half synced (``sync_user``; NX added to the kernel's copy
    unless ``kernel_nx`` is false), cpu_entry_area and ESPFIX cloned
    at the P4D level, the entry text (2 MiB R X global; at ``entry_text_frame``, the kernel's
    frames unless a test says otherwise) and the ``cpu_tss_rw`` page (the TSS's
    first frame through the direct map, RW NX).
    """
    memory = SparsePhysMemory(64 << 20)
    allocator = TopDownFrameAllocator(memory)
    kernel = X86PageTable(memory, KERNEL_PGD, levels, nxe=nxe, allow_writes=True)
    user = X86PageTable(memory, USER_PGD, levels, nxe=nxe, allow_writes=True)
    m = PtiMachine(memory, allocator, kernel, user, levels, nxe)
    nx = NO_EXECUTE if nxe else 0
    g = GLOBAL if global_kernel else 0
    m.map_kernel(DIRECT[levels], 0, 32 << 20, SIZE_2M, WRITABLE | nx | g)
    m.map_kernel(VMALLOC[levels], VMALLOC_STACK, 4 * SIZE_4K, SIZE_4K, WRITABLE | nx | g)
    m.map_kernel(TEXT, 0x1000000, 6 << 20, SIZE_2M, g)
    m.map_kernel(ENTRY_TEXT, ENTRY_TEXT_FRAME, 2 << 20, SIZE_2M, GLOBAL)
    m.map_kernel(RODATA, 0x1800000, 2 << 20, SIZE_2M, nx)
    m.map_kernel(DATA, 0x1A00000, 2 << 20, SIZE_2M, WRITABLE | nx)
    m.map_kernel(CPU_ENTRY_AREA_BASE, CEA_IDT, SIZE_4K, SIZE_4K, GLOBAL | nx)
    m.map_kernel(CPU_ENTRY_AREA_BASE + 0x1000, CEA_GDT, SIZE_4K, SIZE_4K, GLOBAL | nx)
    m.map_kernel(CPU_ENTRY_AREA_BASE + 0x2000, CEA_STACK, SIZE_4K, SIZE_4K, GLOBAL | WRITABLE | nx)
    m.map_kernel(CPU_ENTRY_AREA_BASE + 0x3000, CEA_TSS, 5 * SIZE_4K, SIZE_4K, GLOBAL | nx)
    m.map_kernel(ESPFIX_BASE_ADDR + 0xF000, ESPFIX_FRAME, SIZE_4K, SIZE_4K, GLOBAL | nx)
    if user_pages:
        m.map_kernel(USER_TEXT, 0x500000, 4 * SIZE_4K, SIZE_4K, USER_ACCESSIBLE)
        m.map_kernel(USER_DATA, 0x510000, 2 * SIZE_4K, SIZE_4K, USER_ACCESSIBLE | WRITABLE | nx)
        m.map_kernel(USER_STACK, 0x520000, SIZE_4K, SIZE_4K, USER_ACCESSIBLE | WRITABLE | nx)
    if pti:
        if sync_user:
            m.sync_user_half(kernel_nx)
        m.clone_p4d(CPU_ENTRY_AREA_BASE)
        m.clone_p4d(ESPFIX_BASE_ADDR)
        m.map_user_pgd(ENTRY_TEXT, entry_text_frame, SIZE_2M, SIZE_2M, GLOBAL)
        m.map_user_pgd(m.direct(CEA_TSS), CEA_TSS, SIZE_4K, SIZE_4K, WRITABLE | nx)
    return m


def pt_at(m: PtiMachine, root: int) -> X86PageTable:
    return X86PageTable(m.memory, root, m.levels, nxe=m.nxe)
