"""A simulated Linux machine with several address spaces, for ``roots``: the kernel's top
table, processes whose tables copy its kernel half (one a PTI pair), stacks laid out as
``execve`` leaves them, and pages that look like top tables but are not."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from gdbext.cpu import CR0_PG, CR0_WP, CR4_LA57, CR4_PAE, EFER_LMA, EFER_LME, EFER_NXE, CpuState
from gdbext.flags import GLOBAL, NO_EXECUTE, PRESENT, USER_ACCESSIBLE, WRITABLE, PageTableFlags
from gdbext.linux.layout import CPU_ENTRY_AREA_BASE
from gdbext.mapper import read_u64, write_u64
from gdbext.plugin.target import Target
from gdbext.x86.paging import SIZE_2M, SIZE_4K, X86PageTable
from gdbext_sim.memory import SparsePhysMemory, TopDownFrameAllocator
from gdbext_sim.scenario import DEFAULT_CR0, DEFAULT_CR4, DEFAULT_EFER

RAM = 64 << 20
KERNEL_ROOT = 0x200000
DIRECT = {4: 0xFFFF_8880_0000_0000, 5: 0xFF11_0000_0000_0000}
TEXT = 0xFFFF_FFFF_8100_0000
USER_TEXT = 0x40_0000
#: Where the simulated stacks end (below them, the page with the strings and the one below).
STACK_END = 0x7FFD_0000_0000
#: A vDSO-like mapping above the stack (its last page is no stack's top).
VDSO = STACK_END + 0x20_0000


@dataclass
class Process:
    root: int
    argv: tuple[str, ...]
    envp: tuple[str, ...]
    filename: str
    #: Bytes of user mappings and of W+X ones, as built.
    bytes: int = 0
    wx_bytes: int = 0
    pti: bool = False


@dataclass
class RootsMachine:
    memory: SparsePhysMemory
    allocator: TopDownFrameAllocator
    levels: int
    kernel: X86PageTable
    processes: list[Process] = field(default_factory=list)
    #: Look-alike pages that must not be listed, and tables with an empty user half.
    hostile: list[int] = field(default_factory=list)
    empty: list[int] = field(default_factory=list)

    def cpu(self, cr3: int) -> CpuState:
        cr4 = DEFAULT_CR4 | CR4_PAE | (CR4_LA57 if self.levels == 5 else 0)
        efer = DEFAULT_EFER | EFER_LME | EFER_LMA | EFER_NXE
        return CpuState(cr0=DEFAULT_CR0 | CR0_PG | CR0_WP, cr3=cr3, cr4=cr4, efer=efer)

    def target(self, cr3: int) -> Target:
        return Target(
            backend="sim",
            description="roots-sim",
            mapper=self.memory,
            cpus=[self.cpu(cr3)],
            ram=self.memory.ram_ranges,
            read_path="in-memory simulator",
        )

    def half(self) -> bytes:
        return self.memory.read(KERNEL_ROOT + 2048, 2048)

    def frame(self) -> int:
        f = self.allocator.allocate_frame()
        assert f is not None
        return f

    def map(self, pt: X86PageTable, va: int, count: int, flags: int) -> int:
        """Map ``count`` fresh 4 KiB frames (each its own: not contiguous) at ``va``; bytes."""
        for i in range(count):
            pt.map_range(va + i * SIZE_4K, self.frame(), SIZE_4K, SIZE_4K, PageTableFlags(flags),
                         self.allocator)  # fmt: skip
        return count * SIZE_4K

    def add_process(
        self,
        root: int,
        argv: tuple[str, ...],
        envp: tuple[str, ...],
        filename: str,
        *,
        pti: bool = False,
        wx_pages: int = 0,
        ldt: bool = False,
        untouched: bool = False,
    ) -> Process:
        """A process's table at ``root`` (its kernel half the kernel's): text, W+X pages,
        a two-page stack ending at :data:`STACK_END` as ``execve`` leaves it, a vDSO above;
        with ``pti`` its user table at ``root + 0x1000`` as Linux's PTI makes it, with ``ldt``
        the LDT remap's top-level entry in both (``map_ldt_struct``). With ``untouched`` the
        stack is three pages, ``arch_align_stack``'s gap below the strings a page that nothing
        touched, so not mapped (the strings above it, the argument array below)."""
        self.memory.write(root, bytes(4096))
        self.memory.write(root + 2048, self.half())
        pt = X86PageTable(self.memory, root, self.levels, allow_writes=True)
        p = Process(root, argv, envp, filename, pti=pti)
        u = USER_ACCESSIBLE
        p.bytes += self.map(pt, USER_TEXT, 3, u)
        p.bytes += self.map(pt, 0x60_0000, 2, u | WRITABLE | NO_EXECUTE)
        if wx_pages:
            p.wx_bytes = self.map(pt, 0x80_0000, wx_pages, u | WRITABLE)
            p.bytes += p.wx_bytes
        pages = 3 if untouched else 2
        below = STACK_END - 2 * SIZE_4K - 64 if untouched else None
        stack = exec_stack(STACK_END, argv, envp, filename, below)
        for i in range(pages):
            va = STACK_END - (pages - i) * SIZE_4K
            if untouched and i == 1:
                assert not any(stack[i * SIZE_4K : (i + 1) * SIZE_4K])
                continue
            p.bytes += self.map(pt, va, 1, u | WRITABLE | NO_EXECUTE)
            self.memory.write(pt.translate(va).paddr, stack[i * SIZE_4K : (i + 1) * SIZE_4K])
        p.bytes += self.map(pt, VDSO, 2, u)
        vdso = pt.translate(VDSO + SIZE_4K).paddr  # ends in a zero word, then code bytes
        self.memory.write(vdso + 4000, b"\x0f\x05\xc3\x00" * 20 + bytes(16))
        if pti:
            self.pti_twin(root)
        if ldt:
            ldt_index = 0xFFFF_8800_0000_0000 if self.levels == 4 else 0xFF10_0000_0000_0000
            index = (ldt_index >> (12 + 9 * (self.levels - 1))) & 0x1FF
            table = self.frame() | PRESENT | WRITABLE | 0x60
            for pgd in (root, root + 0x1000) if pti else (root,):
                write_u64(self.memory, pgd + 8 * index, table)
        self.processes.append(p)
        return p

    def pti_twin(self, root: int) -> None:
        """``root + 0x1000`` made PTI's user table: the user half copied (NX added to the
        kernel's copy), ``cpu_entry_area``'s top entry cloned (the same lower table)."""
        user = root + 0x1000
        self.memory.write(user, bytes(4096))
        for i in range(256):
            e = read_u64(self.memory, root + 8 * i)
            write_u64(self.memory, user + 8 * i, e)
            if e & PRESENT:
                write_u64(self.memory, root + 8 * i, e | NO_EXECUTE)
        top = (CPU_ENTRY_AREA_BASE >> (12 + 9 * (self.levels - 1))) & 0x1FF
        write_u64(self.memory, user + 8 * top, read_u64(self.memory, KERNEL_ROOT + 8 * top))

    def add_lookalike(self, at: int, index: int, entry: int) -> None:
        """A data page with the kernel's half whose user entry ``index`` is ``entry``."""
        self.memory.write(at, bytes(4096))
        self.memory.write(at + 2048, self.half())
        write_u64(self.memory, at + 8 * index, entry)
        self.hostile.append(at)

    def add_empty(self, at: int) -> None:
        """A table left by a process that exited: the kernel's half, nothing below."""
        self.memory.write(at, bytes(4096))
        self.memory.write(at + 2048, self.half())
        self.empty.append(at)


def exec_stack(
    end: int,
    argv: tuple[str, ...],
    envp: tuple[str, ...],
    filename: str,
    below: int | None = None,
) -> bytes:
    """The pages below ``end`` as Linux's ``execve`` leaves them (``copy_strings``,
    ``create_elf_tables``): a zero word at the top, the file name, the environment strings,
    the argument strings, then from ``below`` if given (``arch_align_stack``'s random shift
    down, up to 8 KiB) the platform string, 16 random bytes, the auxiliary vector, then
    ``argc, argv[], 0, envp[], 0`` (16-byte aligned). Two pages, three with ``below``."""
    size = (2 if below is None else 3) * SIZE_4K
    buf = bytearray(size)
    base = end - size
    p = end - 8

    def put(data: bytes) -> int:
        nonlocal p
        p -= len(data)
        buf[p - base : p - base + len(data)] = data
        return p

    put(filename.encode() + b"\0")
    strs = [s.encode() + b"\0" for s in (*argv, *envp)]
    addrs = []
    for s in reversed(strs):
        addrs.append(put(s))
    addrs.reverse()
    if below is not None:
        p = below
    put(b"x86_64\0")
    random_at = put(bytes(range(0x90, 0xA0)))  # AT_RANDOM's bytes
    p -= p % 16
    auxv = [6, 4096, 25, random_at, 0, 0]  # AT_PAGESZ, AT_RANDOM, AT_NULL
    words = [len(argv), *addrs[: len(argv)], 0, *addrs[len(argv) :], 0, *auxv]
    if len(words) % 2:
        words.append(0)  # the stack pointer (argc's address) stays 16-byte aligned
    put(struct.pack(f"<{len(words)}Q", *words))
    return bytes(buf)


def build_roots_machine(levels: int = 4) -> RootsMachine:
    """The kernel's table at :data:`KERNEL_ROOT` (direct map, text, cpu_entry_area), three
    processes (one with W+X pages, one a PTI pair), two look-alikes (a user entry outside
    RAM; one with a reserved bit) and one table with an empty user half."""
    memory = SparsePhysMemory(RAM)
    allocator = TopDownFrameAllocator(memory)
    kernel = X86PageTable(memory, KERNEL_ROOT, levels, allow_writes=True)
    m = RootsMachine(memory, allocator, levels, kernel)
    nx = NO_EXECUTE
    kernel.map_range(DIRECT[levels], 0, 32 << 20, SIZE_2M, WRITABLE | nx | GLOBAL, allocator)
    kernel.map_range(TEXT, 0x100_0000, 4 << 20, SIZE_2M, PageTableFlags(GLOBAL), allocator)
    kernel.map_range(CPU_ENTRY_AREA_BASE, 0x30_0000, SIZE_4K, SIZE_4K, GLOBAL | nx, allocator)
    m.add_process(0x24_0000, ("sleep", "100007"), ("HOME=/", "TERM=linux"), "/bin/sleep")
    m.add_process(
        0x25_0000,
        ("sh", "-c", "sleep 100008", "GDBEXT-ROOTS-X"),
        ("PATH=/bin",),
        "/bin/sh",
        pti=True,
        ldt=True,
    )
    m.add_process(0x27_0000, ("./jit",), (), "./jit", wx_pages=3)
    m.add_lookalike(0x26_0000, 5, 0x7_0000_0000 | 0x67)  # links a table beyond 64 MiB of RAM
    m.add_lookalike(0x26_1000, 1, 0x24_0000 | 0x80 | 0x67)  # PS: reserved at the top level
    m.add_empty(0x28_0000)
    return m
