"""ELF core structures: file, program and section headers of both classes, notes, and the x86
``NT_PRSTATUS`` descs (little-endian; from ``elf.h`` and the kernel's ``elf_prstatus``)."""

from __future__ import annotations

from typing import Final

from gdbext.formats.layout import Field, Layout

ELFMAG: Final = b"\x7fELF"


def _ehdr(addr: str) -> list[Field]:
    return [
        ("e_ident", "16s"),
        ("e_type", "H"),
        ("e_machine", "H"),
        ("e_version", "I"),
        ("e_entry", addr),
        ("e_phoff", addr),
        ("e_shoff", addr),
        ("e_flags", "I"),
        ("e_ehsize", "H"),
        ("e_phentsize", "H"),
        ("e_phnum", "H"),
        ("e_shentsize", "H"),
        ("e_shnum", "H"),
        ("e_shstrndx", "H"),
    ]


def _shdr(addr: str) -> list[Field]:
    return [
        ("sh_name", "I"),
        ("sh_type", "I"),
        ("sh_flags", addr),
        ("sh_addr", addr),
        ("sh_offset", addr),
        ("sh_size", addr),
        ("sh_link", "I"),
        ("sh_info", "I"),
        ("sh_addralign", addr),
        ("sh_entsize", addr),
    ]


#: ``Elf64_Ehdr``, 64 bytes.
ELF64_EHDR: Final = Layout("Elf64_Ehdr", _ehdr("Q"))
#: ``Elf32_Ehdr``, 52 bytes.
ELF32_EHDR: Final = Layout("Elf32_Ehdr", _ehdr("I"))
#: ``Elf64_Phdr``, 56 bytes (``p_flags`` second, unlike ELF32).
ELF64_PHDR: Final = Layout(
    "Elf64_Phdr",
    [
        ("p_type", "I"),
        ("p_flags", "I"),
        ("p_offset", "Q"),
        ("p_vaddr", "Q"),
        ("p_paddr", "Q"),
        ("p_filesz", "Q"),
        ("p_memsz", "Q"),
        ("p_align", "Q"),
    ],
)
#: ``Elf32_Phdr``, 32 bytes.
ELF32_PHDR: Final = Layout(
    "Elf32_Phdr",
    [
        ("p_type", "I"),
        ("p_offset", "I"),
        ("p_vaddr", "I"),
        ("p_paddr", "I"),
        ("p_filesz", "I"),
        ("p_memsz", "I"),
        ("p_flags", "I"),
        ("p_align", "I"),
    ],
)
#: ``Elf64_Shdr``, 64 bytes.
ELF64_SHDR: Final = Layout("Elf64_Shdr", _shdr("Q"))
#: ``Elf32_Shdr``, 40 bytes.
ELF32_SHDR: Final = Layout("Elf32_Shdr", _shdr("I"))

#: ``Elf32_Nhdr`` / ``Elf64_Nhdr`` (the same 12 bytes): the name (with its NUL) and the desc
#: follow, each padded to :data:`NOTE_ALIGN` bytes.
NHDR: Final = Layout("Elf64_Nhdr", [("n_namesz", "I"), ("n_descsz", "I"), ("n_type", "I")])
NOTE_ALIGN: Final = 4
NT_PRSTATUS: Final = 1

#: The x86-64 ``pr_reg`` registers (``struct user_regs_struct``), in order.
PRSTATUS64_REGS: Final = (
    "r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx", "rdx",
    "rsi", "rdi", "orig_rax", "rip", "cs", "eflags", "rsp", "ss", "fs_base", "gs_base", "ds",
    "es", "fs", "gs",
)  # fmt: skip
#: x86-64 ``elf_prstatus``, 336 bytes: only ``pr_pid`` and ``pr_reg`` are named.
PRSTATUS64: Final = Layout(
    "elf_prstatus (x86-64)",
    [("", "32x"), ("pr_pid", "I"), ("", "76x"), *((r, "Q") for r in PRSTATUS64_REGS), ("", "8x")],
)
#: The i386 ``pr_reg`` registers, in order (segment registers are u16 with u16 padding).
PRSTATUS32_REGS: Final = (
    "ebx", "ecx", "edx", "esi", "edi", "ebp", "eax", "ds", "es", "fs", "gs", "orig_eax", "eip",
    "cs", "eflags", "esp", "ss",
)  # fmt: skip
_SEGMENT_REGS32: Final = frozenset({"ds", "es", "fs", "gs", "cs", "ss"})
#: i386 ``elf_prstatus`` as QEMU writes it, 144 bytes: ``pr_pid`` and ``pr_reg`` named.
PRSTATUS32: Final = Layout(
    "elf_prstatus (i386)",
    [
        ("", "24x"),
        ("pr_pid", "I"),
        ("", "44x"),
        *(
            field
            for r in PRSTATUS32_REGS
            for field in (((r, "H"), ("", "2x")) if r in _SEGMENT_REGS32 else ((r, "I"),))
        ),
        ("", "4x"),
    ],
)
