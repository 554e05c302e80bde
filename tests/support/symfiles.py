"""Symbol files for the tests: a hand-written ``System.map`` and a tiny ``vmlinux`` ELF.

The ELF is written here with :mod:`struct` (ELF64, little-endian, no program headers): allocated
sections at the addresses given and a ``.symtab`` naming symbols in them, which is all
:func:`gdbext.linux.symbols.load_vmlinux` reads. :func:`write_vmlinux_from_map` writes a
``System.map``'s symbols as such an ELF, for a debugger's ``symbol-file`` (``target create`` in
LLDB): the debuggers' tests compare its symbols there with the map's on the command line.
"""

from __future__ import annotations

import struct
from pathlib import Path

#: A System.map of an unslid kernel image (addresses as the kernel was linked), nm's format,
#: not sorted (nm sorts; the loader must not rely on it), with a per-CPU symbol and an
#: absolute one.
SYSTEM_MAP = """\
0000000000000000 D fixed_percpu_data
0000000000001000 A some_absolute
ffffffff81000000 T _text
ffffffff81000000 T startup_64
ffffffff81001000 T do_one_initcall
ffffffff81001040 t local_helper
ffffffff81e00000 T _etext
ffffffff82000000 R __start_rodata
ffffffff82000100 R linux_banner
ffffffff82400000 R __end_rodata
ffffffff82600000 D _sdata
ffffffff82610000 D init_task
ffffffff82620000 D jiffies
ffffffff82800000 D _edata
ffffffff82a00000 T __init_begin
ffffffff82a00000 T _sinittext
ffffffff82c00000 T __init_end
ffffffff82e00000 B __bss_start
ffffffff82e00100 b some_bss
ffffffff83000000 B __bss_stop
ffffffff83200000 B _end
"""

_SHF_WRITE, _SHF_ALLOC, _SHF_EXECINSTR = 1, 2, 4
_SHT_PROGBITS, _SHT_SYMTAB, _SHT_STRTAB, _SHT_NOBITS = 1, 2, 3, 8
_STT_OBJECT, _STT_FUNC = 1, 2
_STB_LOCAL, _STB_GLOBAL = 0, 1

#: The tiny vmlinux's sections: (name, type, flags, address, size).
ELF_SECTIONS = (
    (".text", _SHT_PROGBITS, _SHF_ALLOC | _SHF_EXECINSTR, 0xFFFFFFFF81000000, 0x200),
    (".rodata", _SHT_PROGBITS, _SHF_ALLOC, 0xFFFFFFFF82000000, 0x100),
    (".data", _SHT_PROGBITS, _SHF_ALLOC | _SHF_WRITE, 0xFFFFFFFF82600000, 0x100),
    (".bss", _SHT_NOBITS, _SHF_ALLOC | _SHF_WRITE, 0xFFFFFFFF82E00000, 0x10000),
)
#: Its symbols: (name, section index (1-based, as ELF_SECTIONS), value, type, bind).
ELF_SYMBOLS = (
    ("startup_64", 1, 0xFFFFFFFF81000000, _STT_FUNC, _STB_GLOBAL),
    ("do_one_initcall", 1, 0xFFFFFFFF81000100, _STT_FUNC, _STB_GLOBAL),
    ("linux_banner", 2, 0xFFFFFFFF82000000, _STT_OBJECT, _STB_GLOBAL),
    ("init_task", 3, 0xFFFFFFFF82600040, _STT_OBJECT, _STB_GLOBAL),
    ("jiffies_local", 4, 0xFFFFFFFF82E00000, _STT_OBJECT, _STB_LOCAL),
)


def write_system_map(path: Path, text: str = SYSTEM_MAP) -> Path:
    path.write_text(text)
    return path


#: A section as :data:`ELF_SECTIONS` has them; a symbol as :data:`ELF_SYMBOLS`.
ElfSection = tuple[str, int, int, int, int]
ElfSymbol = tuple[str, int, int, int, int]


def write_vmlinux(
    path: Path,
    sections: tuple[ElfSection, ...] = ELF_SECTIONS,
    symbols: tuple[ElfSymbol, ...] = ELF_SYMBOLS,
) -> Path:
    """A minimal ELF64 ``vmlinux`` with ``sections`` and ``symbols`` (default
    :data:`ELF_SECTIONS` and :data:`ELF_SYMBOLS`)."""
    ELF_SECTIONS, ELF_SYMBOLS = sections, symbols
    strtab = b"\0"
    sym_names = []
    for name, *_ in ELF_SYMBOLS:
        sym_names.append(len(strtab))
        strtab += name.encode() + b"\0"
    symtab = bytes(24)  # the null symbol
    # Locals first (sh_info: the first global's index), as ELF requires.
    ordered = sorted(range(len(ELF_SYMBOLS)), key=lambda i: ELF_SYMBOLS[i][4])
    first_global = 1 + sum(1 for s in ELF_SYMBOLS if s[4] == _STB_LOCAL)
    for i in ordered:
        _, shndx, value, kind, bind = ELF_SYMBOLS[i]
        symtab += struct.pack("<IBBHQQ", sym_names[i], (bind << 4) | kind, 0, shndx, value, 0)
    names = [s[0] for s in ELF_SECTIONS] + [".symtab", ".strtab", ".shstrtab"]
    shstrtab = b"\0"
    name_offsets = []
    for name in names:
        name_offsets.append(len(shstrtab))
        shstrtab += name.encode() + b"\0"
    body = b""
    offset = 64
    headers = [bytes(64)]
    for (_name, kind, flags, addr, size), noff in zip(ELF_SECTIONS, name_offsets, strict=False):
        data = b"" if kind == _SHT_NOBITS else bytes(size)
        headers.append(
            struct.pack("<IIQQQQIIQQ", noff, kind, flags, addr, offset, size, 0, 0, 16, 0)
        )
        body += data
        offset += len(data)
    n = len(ELF_SECTIONS)
    strtab_index = n + 2
    for noff, kind, data, link, info, entsize in (
        (name_offsets[n], _SHT_SYMTAB, symtab, strtab_index, first_global, 24),
        (name_offsets[n + 1], _SHT_STRTAB, strtab, 0, 0, 0),
        (name_offsets[n + 2], _SHT_STRTAB, shstrtab, 0, 0, 0),
    ):
        headers.append(
            struct.pack("<IIQQQQIIQQ", noff, kind, 0, 0, offset, len(data), link, info, 8, entsize)
        )
        body += data
        offset += len(data)
    shoff = offset
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    ehdr = struct.pack(
        "<16sHHIQQQIHHHHHH",
        ident,
        2,
        62,
        1,
        0xFFFFFFFF81000000,
        0,
        shoff,
        0,
        64,
        0,
        0,
        64,
        len(headers),
        len(headers) - 1,
    )
    path.write_bytes(ehdr + body + b"".join(headers))
    return path


#: ``SHN_ABS``: a symbol in no section.
_SHN_ABS = 0xFFF1


def write_vmlinux_from_map(path: Path, text: str = SYSTEM_MAP) -> Path:
    """An ELF symbol file (for a debugger's ``symbol-file``) holding the symbols of the
    ``System.map`` ``text``: a ``NOBITS`` section for each range its markers bound
    (:data:`gdbext.linux.symbols.MARKER_SECTIONS`), its code and data symbols in them (text
    symbols as functions, the others as objects; lower-case types local), the rest absolute."""
    from gdbext.linux.symbols import MARKER_SECTIONS

    entries = [line.split() for line in text.splitlines() if line.strip()]
    first: dict[str, int] = {}
    for word, _, name in entries:
        first.setdefault(name, int(word, 16))
    secs: list[ElfSection] = []
    for name, start, end in MARKER_SECTIONS:
        if start in first and end in first:
            flags = _SHF_ALLOC | (_SHF_EXECINSTR if name == ".text" else _SHF_WRITE)
            elf_name = name if name.startswith(".") else ".init.text"
            secs.append((elf_name, _SHT_NOBITS, flags, first[start], first[end] - first[start]))
    secs.sort(key=lambda s: s[3])
    syms: list[ElfSymbol] = []
    for addr_text, kind, name in entries:
        addr = int(addr_text, 16)
        index = next((i for i, s in enumerate(secs, 1) if s[3] <= addr < s[3] + s[4]), _SHN_ABS)
        if kind in "Aa":
            index = _SHN_ABS
        stype = _STT_FUNC if kind in "Tt" else _STT_OBJECT
        bind = _STB_LOCAL if kind.islower() else _STB_GLOBAL
        syms.append((name, index, addr, stype, bind))
    return write_vmlinux(path, tuple(secs), tuple(syms))


#: ``init_task`` and ``jiffies`` in :data:`support.symfiles.SYSTEM_MAP`.
INIT_TASK, JIFFIES = 0xFFFFFFFF82610000, 0xFFFFFFFF82620000

#: Debugger commands that take symbol names and their arguments (an address named, an address in
#: ``.bss`` named by the nearest symbol, JSON's ``symbol`` key, a read and a walk's ``--has``,
#: ranges bounded by names, a value and a pointer range named: names LLDB keeps, not the
#: section ends, which the ELF holds as absolute symbols).
SYMBOL_CASES = (
    ("translate", ["--kernel", "init_task+0x10", "jiffies", "0xffffffff82e00180"]),
    ("translate", ["--kernel", "--json", "init_task"]),
    ("read", ["--kernel", "jiffies", "16"]),
    ("read", ["--kernel", "--format", "u64", "init_task-0x8", "16"]),
    ("walk", ["--kernel", "--has", "init_task", "--format", "json"]),
    ("walk", ["--kernel", "--range", "_text+0x10-__start_rodata", "--format", "json"]),
    ("search", ["--kernel", "--range", "_sdata+2M", "--u64", "init_task"]),
    ("search", ["--kernel", "--has", "jiffies", "--pointer-into", "_text-__bss_start"]),
    ("kaslr", ["--kernel", "--leaks", "--all-pages", "--range", "init_task-jiffies"]),
)


def kernel_offset(path: Path) -> int:
    """VMCOREINFO's ``KERNELOFFSET`` of the dump, read with pyelftools (0 without one)."""
    from support.dumps import elf_vmcoreinfo

    return int(elf_vmcoreinfo(path).get("KERNELOFFSET", "0"), 16)
