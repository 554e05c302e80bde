"""ELF note areas and VMCOREINFO: bytes packed by hand at the offsets of dump-formats.md."""

from __future__ import annotations

import struct

import pytest
from support.dumps import elf_note as note

from gdbext.addr import AddrRange
from gdbext.cpu import CpuState
from gdbext.errors import InputError, NotCapturedError
from gdbext.linux.vmcoreinfo import find_vmcoreinfo, kernel_root, parse_vmcoreinfo
from gdbext_dump.notes import parse_notes

PATH = "vm.core"
BASE = 0x1000  # file offset of the note area in these tests


def qemu_desc(
    cr0: int, cr3: int, cr4: int, *, size: int = 440, rip: int = 0, rsp: int = 0, tail: int = 0
) -> bytes:
    desc = bytearray(size)
    struct.pack_into("<II", desc, 0, 1, size)
    struct.pack_into("<Q", desc, 8 + 6 * 8, rsp)  # rax rbx rcx rdx rsi rdi rsp
    struct.pack_into("<Q", desc, 136, rip)
    struct.pack_into("<QQQQQ", desc, 392, cr0, 0, 0x1234, cr3, cr4)
    if size >= 440:
        struct.pack_into("<Q", desc, 432, 0xFFFF888007A00000)
    if size >= 448:
        struct.pack_into("<Q", desc, 440, tail)
    return bytes(desc)


def prstatus64(pid: int, rip: int, rsp: int) -> bytes:
    desc = bytearray(336)
    struct.pack_into("<I", desc, 32, pid)
    struct.pack_into("<Q", desc, 112 + 16 * 8, rip)  # r15 ... orig_rax, then rip (17th)
    struct.pack_into("<Q", desc, 112 + 19 * 8, rsp)  # ... rip cs eflags rsp
    return bytes(desc)


def prstatus32(pid: int, eip: int, esp: int) -> bytes:
    desc = bytearray(144)
    struct.pack_into("<I", desc, 24, pid)
    struct.pack_into("<I", desc, 72 + 48, eip)
    struct.pack_into("<I", desc, 72 + 60, esp)
    return bytes(desc)


VMCOREINFO = (
    b"OSRELEASE=6.1.0-57-amd64\nPAGESIZE=4096\nSYMBOL(init_top_pgt)=ffffffff82a10000\n"
    b"NUMBER(phys_base)=0\nNUMBER(pgtable_l5_enabled)=0\nKERNELOFFSET=0\n"
)


def test_qemu_notes_two_cpus_with_prstatus_and_vmcoreinfo() -> None:
    area = (
        note(b"CORE", 1, prstatus64(1, 0xFFFFFFFF81000010, 0xFFFFC90000003F00))
        + note(b"CORE", 1, prstatus64(2, 0xFFFFFFFF81000020, 0xFFFFC90000007F00))
        + note(b"QEMU", 0, qemu_desc(0x80050033, 0x2A10000, 0x6F0))
        + note(b"QEMU", 0, qemu_desc(0x80050033, 0x7B4C000 | 5, 0x6F0, rip=0x401000))
        + note(b"VMCOREINFO", 0, VMCOREINFO)
    )
    notes = parse_notes(area, path=PATH, file_offset=BASE)
    assert notes.cpus == (
        CpuState(cr0=0x80050033, cr3=0x2A10000, cr4=0x6F0),
        CpuState(cr0=0x80050033, cr3=0x7B4C005, cr4=0x6F0),
    )
    assert [p.pid for p in notes.prstatus] == [1, 2]
    assert notes.prstatus[1].registers["rip"] == 0xFFFFFFFF81000020
    assert notes.prstatus[1].registers["rsp"] == 0xFFFFC90000007F00
    # The QEMU note's registers win over NT_PRSTATUS's where both have them.
    assert notes.registers(1)["rip"] == 0x401000
    assert notes.registers(0)["rsp"] == 0
    assert notes.qemu[0].cr2 == 0x1234
    assert notes.qemu[0].kernel_gs_base == 0xFFFF888007A00000
    assert notes.qemu[0].efer is None
    assert notes.vmcoreinfo == VMCOREINFO
    # Offsets: each CORE note is 12 + 8 + 336 bytes, each QEMU note 12 + 8 + 440.
    assert [n.offset for n in notes.notes] == [
        BASE,
        BASE + 356,
        BASE + 712,
        BASE + 712 + 460,
        BASE + 712 + 920,
    ]
    assert notes.vmcoreinfo_offset == BASE + 712 + 920 + 12 + 12  # "VMCOREINFO\0" padded: 12
    assert notes.cpu_count == 2


def test_qemu_note_sizes_gate_optional_fields() -> None:
    old = parse_notes(note(b"QEMU", 0, qemu_desc(1, 0x1000, 0x20, size=432)), path=PATH,
                      file_offset=0)  # fmt: skip
    assert old.qemu[0].kernel_gs_base is None
    assert old.qemu[0].cr3 == 0x1000
    patched = parse_notes(
        note(b"QEMU", 0, qemu_desc(1, 0x1000, 0x20, size=456, tail=0xD01)),
        path=PATH,
        file_offset=0,
    )
    assert patched.cpus[0].efer == 0xD01
    assert patched.cpus[0].nxe
    junk = parse_notes(
        note(b"QEMU", 0, qemu_desc(1, 0x1000, 0x20, size=456, tail=0xDEAD0000)),
        path=PATH,
        file_offset=0,
    )
    assert junk.cpus[0].efer is None
    assert "not an EFER" in junk.warnings[0]


def test_qemu_note_unknown_version_is_skipped_with_a_warning() -> None:
    desc = bytearray(qemu_desc(1, 0x1000, 0))
    struct.pack_into("<I", desc, 0, 2)
    notes = parse_notes(note(b"QEMU", 0, bytes(desc)), path=PATH, file_offset=0)
    assert notes.qemu == ()
    assert "version 2" in notes.warnings[0]


def test_i386_prstatus_and_elf32_class() -> None:
    area = note(b"CORE", 1, prstatus32(1, 0xC1000000, 0xC7FFFF00)) + note(
        b"QEMU", 0, qemu_desc(0x60000011, 0, 0, size=432)
    )
    notes = parse_notes(area, path=PATH, file_offset=0, elfclass=32)
    assert notes.prstatus[0].pid == 1
    assert notes.prstatus[0].registers["eip"] == 0xC1000000
    assert notes.prstatus[0].registers["esp"] == 0xC7FFFF00
    assert notes.cpus[0].cr0 == 0x60000011


def test_zero_header_ends_the_area_and_unknown_notes_are_kept() -> None:
    area = note(b"LINUX", 0x202, b"\x01" * 7) + bytes(12) + b"garbage after the terminator"
    notes = parse_notes(area, path=PATH, file_offset=0)
    assert [(n.name, n.type, n.desc) for n in notes.notes] == [("LINUX", 0x202, b"\x01" * 7)]


@pytest.mark.parametrize(
    ("area", "offset", "words"),
    [
        (struct.pack("<III", 5, 400, 0) + b"QEMU\0\0\0\0" + bytes(100), BASE, "runs past"),
        (struct.pack("<III", 0xFFFFFFFF, 0, 0), BASE, "runs past"),
        (note(b"CORE", 1, b"") + b"\x01\x02", BASE + 20, "too short for a note"),
        (note(b"QEMU", 0, b"\x01\0\0\0"), BASE, "too short"),
        (note(b"QEMU", 0, struct.pack("<II", 1, 440) + bytes(400)), BASE, "says"),
        (note(b"QEMU", 0, struct.pack("<II", 1, 100) + bytes(432)), BASE, "shorter"),
        (note(b"CORE", 1, bytes(20)), BASE, "too short for pr_pid"),
        (note(b"CORE", 1, prstatus64(1, 0, 0)) + note(b"CORE", 1, bytes(8)), BASE + 356, "pr_pid"),
    ],
)
def test_malformed_notes_name_file_and_offset(area: bytes, offset: int, words: str) -> None:
    with pytest.raises(InputError) as err:
        parse_notes(area, path=PATH, file_offset=BASE)
    assert err.value.path == PATH
    assert err.value.offset == offset
    assert words in str(err.value)
    assert "\n" not in str(err.value)


# --- VMCOREINFO ------------------------------------------------------------------------------


def test_vmcoreinfo_values() -> None:
    info = parse_vmcoreinfo(
        b"OSRELEASE=6.1.0\nPAGESIZE=4096\nSYMBOL(init_top_pgt)=ffffffffb6e10000\n"
        b"NUMBER(phys_base)=-637534208\nNUMBER(pgtable_l5_enabled)=1\nKERNELOFFSET=34400000\n"
        b"SIZE(page)=64\nCONFIG_X86_5LEVEL=y\nLENGTH(node_data)=1024\nBUILD-ID=4c3b2a\n"
        b"OFFSET(uts_namespace.name)=4\n\0trailing"
    )
    # 0xffffffffb6e10000 - 0xffffffff80000000 = 0x36e10000; phys_base = -0x26000000.
    assert kernel_root(info) == 0x36E10000 - 0x26000000
    assert info.number("phys_base") == (1 << 64) - 0x26000000
    assert info.levels == 5
    assert info.kernel_offset == 0x34400000
    assert info.decimal("SIZE(page)") == 64
    assert info.decimal("OFFSET(uts_namespace.name)") == 4  # keys as a 6.1 kernel writes them
    assert info.raw("BUILD-ID") == "4c3b2a"
    assert info.config("X86_5LEVEL")
    assert info.osrelease == "6.1.0"
    assert "trailing" not in "".join(info.entries.values())
    assert info.problems == ()


def test_vmcoreinfo_malformed_values_are_problems_not_errors() -> None:
    info = parse_vmcoreinfo("SYMBOL(init_top_pgt)=xyz\nNUMBER(phys_base)=0\nnope\n=1\n")
    assert kernel_root(info) is None
    assert len(info.problems) == 3
    # A root that is not page-aligned is rejected.
    info = parse_vmcoreinfo("SYMBOL(init_top_pgt)=ffffffff82a10008\nNUMBER(phys_base)=0")
    assert kernel_root(info) is None
    # swapper_pg_dir is the same table when init_top_pgt is absent.
    info = parse_vmcoreinfo("SYMBOL(swapper_pg_dir)=ffffffff82a10000\nNUMBER(phys_base)=4096")
    assert kernel_root(info) == 0x2A11000
    assert parse_vmcoreinfo("NUMBER(pgtable_l5_enabled)=2").levels is None


class Memory:
    """Physical memory as a dict of 4 KiB pages; missing pages raise NotCapturedError."""

    def __init__(self, pages: dict[int, bytes]) -> None:
        self.pages = pages
        self.reads = 0

    def read(self, paddr: int, size: int) -> bytes:
        self.reads += 1
        out = b""
        pos = paddr
        while pos < paddr + size:
            page = self.pages.get(pos & ~0xFFF)
            if page is None:
                raise NotCapturedError(pos, size)
            take = min(paddr + size, (pos & ~0xFFF) + 0x1000) - pos
            out += page[pos & 0xFFF : (pos & 0xFFF) + take]
            pos += take
        return out


def test_find_vmcoreinfo_skips_decoys_and_uncaptured_pages() -> None:
    text = VMCOREINFO + b"CRASHTIME=1\n"
    decoy = b"OSRELEASE=%s\n\0"  # the format string in the kernel image
    pages = {a: bytes(0x1000) for a in range(0, 0x40000, 0x1000)}
    pages[0x2000] = decoy + bytes(0x1000 - len(decoy))
    del pages[0x5000]  # excluded page inside the first chunk
    # The text straddles a page boundary: starts 4 bytes before 0x31000.
    at = 0x31000 - 4
    blob = bytearray(pages[0x30000] + pages[0x31000])
    blob[0xFFC : 0xFFC + len(text) + 1] = text + b"\0"
    pages[0x30000], pages[0x31000] = bytes(blob[:0x1000]), bytes(blob[0x1000:])
    mem = Memory(pages)
    found = find_vmcoreinfo(mem.read, [AddrRange(0, 0x40000)])
    assert found == (at, text)
    # With a limit below the text's address, nothing is found.
    assert find_vmcoreinfo(mem.read, [AddrRange(0, 0x40000)], limit=0x30000) is None


def test_find_vmcoreinfo_with_a_find_function() -> None:
    data = bytearray(0x10000)
    data[0x100 : 0x100 + 14] = b"OSRELEASE=%s\n\0"
    data[0x8000 : 0x8000 + len(VMCOREINFO) + 1] = VMCOREINFO + b"\0"

    def read(paddr: int, size: int) -> bytes:
        return bytes(data[paddr - 0x100000 : paddr - 0x100000 + size])

    def find(needle: bytes, start: int, end: int) -> int:
        at = data.find(needle, start - 0x100000, end - 0x100000)
        return -1 if at < 0 else at + 0x100000

    assert find_vmcoreinfo(read, [AddrRange(0x100000, 0x110000)], find=find) == (
        0x108000,
        VMCOREINFO,
    )
