"""ELF cores built by hand (struct.pack at the offsets of dump-formats.md 4.1) through the
ELF reader and ``open_dump``: QEMU-style and /proc/vmcore-style, ELF64 and ELF32."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support.dumps import elf_note as note

from gdbext.addr import AddrRange
from gdbext.cpu import CR4_LA57, CpuState
from gdbext.errors import InputError, PhysMemoryError, ReadOnlyError
from gdbext.frontend import commands
from gdbext.mapper import is_captured
from gdbext_dump.dump import open_dump
from gdbext_dump.elf import read_elf_core

P, W = 0x1, 0x2  # PRESENT, WRITABLE


def qemu_note(cr0: int, cr3: int, cr4: int, size: int = 440) -> bytes:
    desc = bytearray(size)
    struct.pack_into("<II", desc, 0, 1, size)
    struct.pack_into("<Q", desc, 392, cr0)
    struct.pack_into("<Q", desc, 416, cr3)
    struct.pack_into("<Q", desc, 424, cr4)
    return note(b"QEMU", 0, bytes(desc))


def prstatus_note(pid: int, rip: int = 0) -> bytes:
    desc = bytearray(336)
    struct.pack_into("<I", desc, 32, pid)
    struct.pack_into("<Q", desc, 112 + 16 * 8, rip)
    return note(b"CORE", 1, bytes(desc))


@dataclass
class Load:
    paddr: int
    data: bytes
    memsz: int | None = None  # default: len(data)
    vaddr: int | None = None  # default: paddr
    offset: int | None = None  # default: placed after the previous data


@dataclass
class Elf:
    """Builder of a little-endian x86 ELF core; fields may be overridden to corrupt it."""

    elfclass: int = 64
    machine: int = 62
    e_type: int = 4
    notes: bytes = b""
    loads: list[Load] = field(default_factory=list)
    phoff: int | None = None  # default: after the section headers
    sections: bool = True  # QEMU 7.2: NULL + .shstrtab at 64
    xnum: bool = False  # e_phnum = PN_XNUM, count in shdr[0].sh_info
    phnum: int | None = None  # override e_phnum
    phentsize: int | None = None
    shoff: int | None = None
    shentsize: int | None = None

    def build(self) -> bytes:
        is64 = self.elfclass == 64
        ehsize, phsize, shsize = (64, 56, 64) if is64 else (52, 32, 40)
        nsec = 2 if self.sections or self.xnum else 0
        shoff = ehsize if nsec else 0
        phoff = self.phoff if self.phoff is not None else shoff + nsec * shsize or ehsize
        count = 1 + len(self.loads)
        note_off = phoff + count * phsize
        data_off = note_off + len(self.notes)
        phdrs = []
        body = bytearray()
        cursor = data_off
        for load in self.loads:
            off = cursor if load.offset is None else load.offset
            memsz = len(load.data) if load.memsz is None else load.memsz
            vaddr = load.paddr if load.vaddr is None else load.vaddr
            if is64:
                phdrs.append(
                    struct.pack("<IIQQQQQQ", 1, 0, off, vaddr, load.paddr, len(load.data), memsz, 0)
                )
            else:
                phdrs.append(
                    struct.pack("<8I", 1, off, vaddr, load.paddr, len(load.data), memsz, 0, 0)
                )
            if load.offset is None:
                body += load.data
                cursor += len(load.data)
        note_ph = (
            struct.pack("<IIQQQQQQ", 4, 0, note_off, 0, 0, len(self.notes), len(self.notes), 0)
            if is64
            else struct.pack("<8I", 4, note_off, 0, 0, len(self.notes), len(self.notes), 0, 0)
        )
        strtab_off = data_off + len(body)
        e_phnum = 0xFFFF if self.xnum else count
        if self.phnum is not None:
            e_phnum = self.phnum
        ident = b"\x7fELF" + bytes([1 if not is64 else 2, 1, 1]) + bytes(9)
        fields = (
            ident,
            self.e_type,
            self.machine,
            1,
            0,
            phoff,
            shoff if self.shoff is None else self.shoff,
            0,
            8,  # e_ehsize as QEMU 7.2 writes it
            phsize if self.phentsize is None else self.phentsize,
            e_phnum,
            shsize if self.shentsize is None else self.shentsize,
            nsec,
            nsec - 1 if nsec else 0,
        )
        ehdr = struct.pack("<16sHHIQQQIHHHHHH" if is64 else "<16sHHIIIIIHHHHHH", *fields)
        shdrs = b""
        if nsec:
            info = count if self.xnum else 0
            if is64:
                shdrs = struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, info, 0, 0)
                shdrs += struct.pack("<IIQQQQIIQQ", 1, 3, 0, 0, strtab_off, 11, 0, 0, 0, 0)
            else:
                shdrs = struct.pack("<10I", 0, 0, 0, 0, 0, 0, 0, info, 0, 0)
                shdrs += struct.pack("<10I", 1, 3, 0, 0, strtab_off, 11, 0, 0, 0, 0)
        out = bytearray(ehdr + shdrs)
        out += bytes(phoff - len(out))
        out += note_ph + b"".join(phdrs) + self.notes + body
        if nsec:
            out += b"\0.shstrtab\0"
        return bytes(out)

    def write(self, path: Path) -> str:
        path.write_bytes(self.build())
        return str(path)


def tables(mem: bytearray, chain: list[int], leaf_index: list[int], leaf: int) -> None:
    """Link the 4 tables of ``chain`` (PML4 first) at ``leaf_index`` and put ``leaf`` last."""
    for table, nxt, index in zip(chain, chain[1:], leaf_index, strict=False):
        struct.pack_into("<Q", mem, table + 8 * index, nxt | P | W)
    struct.pack_into("<Q", mem, chain[-1] + 8 * leaf_index[-1], leaf | P | W)


def low_memory() -> bytearray:
    """640 KiB: CPU 0 maps 0x400000 -> 0x9000 via 0x1000..0x4000; CPU 1 maps it -> 0xa000 via
    0x5000..0x8000 (VA 0x400000: PML4 0, PDPT 0, PD 2, PT 0)."""
    mem = bytearray(0xA0000)
    tables(mem, [0x1000, 0x2000, 0x3000, 0x4000], [0, 0, 2, 0], 0x9000)
    tables(mem, [0x5000, 0x6000, 0x7000, 0x8000], [0, 0, 2, 0], 0xA000)
    mem[0x9000:0x9004] = b"cpu0"
    mem[0xA000:0xA004] = b"cpu1"
    return mem


VMCOREINFO = (
    b"OSRELEASE=6.1.0-57-amd64\nPAGESIZE=4096\nSYMBOL(swapper_pg_dir)=ffffffff81001000\n"
    b"NUMBER(phys_base)=-16777216\nSYMBOL(init_top_pgt)=ffffffff81005000\n"
    b"NUMBER(pgtable_l5_enabled)=0\nKERNELOFFSET=200000\n"
)
# init_top_pgt - 0xffffffff80000000 + phys_base = 0x1005000 - 0x1000000 = 0x5000.


def qemu_core(tmp_path: Path, **kw: object) -> Elf:
    high = bytes(range(256)) * 16 * 16  # 64 KiB stored of a 1 MiB segment
    return Elf(
        notes=prstatus_note(1, 0xFFFFFFFF81000000)
        + prstatus_note(2)
        + qemu_note(0x80050033, 0x1000, 0x6F0)
        + qemu_note(0x80050033, 0x5000 | 0x3, 0x200006F0)  # PCIDE, PCID 3
        + note(b"VMCOREINFO", 0, VMCOREINFO),
        loads=[
            Load(0, bytes(low_memory()), vaddr=0xFFFF888000000000),
            Load(0x100000, high, memsz=0x100000),
        ],
        phoff=0x200,
        **kw,  # type: ignore[arg-type]
    )


def test_qemu_core_two_cpus_own_cr3_filesz_and_vaddr(tmp_path: Path) -> None:
    path = qemu_core(tmp_path).write(tmp_path / "qemu.core")
    target = open_dump(path)
    try:
        assert target.backend == "core"
        assert target.description == path
        assert target.read_path == "ELF core (mmap)"
        assert list(target.cpus) == [
            CpuState(cr0=0x80050033, cr3=0x1000, cr4=0x6F0),
            CpuState(cr0=0x80050033, cr3=0x5003, cr4=0x200006F0),
        ]
        assert target.ram == [AddrRange(0, 0xA0000), AddrRange(0x100000, 0x200000)]
        m = target.mapper
        # Mapped by p_paddr (p_vaddr is a direct-map address here).
        assert m.read(0x9000, 4) == b"cpu0"
        assert m.read(0x100000 + 0x101, 2) == bytes([1, 2])
        # Past p_filesz inside p_memsz: zeros; a read across the boundary too.
        assert m.read(0x110000, 16) == bytes(16)
        assert m.read(0x10FFFE, 4) == bytes([0xFE, 0xFF, 0, 0])
        with pytest.raises(PhysMemoryError, match=f"not in the dump {path}"):
            m.read(0xA0000, 8)
        with pytest.raises(PhysMemoryError):
            m.read(0x9FFF8, 16)  # runs into the hole
        assert is_captured(m, 0x9F000) and not is_captured(m, 0xA0000)
        assert is_captured(m, 0x1FF000) and not is_captured(m, 0x200000)
        with pytest.raises(ReadOnlyError):
            m.write(0x9000, b"x")
        t0 = commands.open_page_table(target, commands.RootOptions(cpu=0)).translate(0x400123)
        t1 = commands.open_page_table(target, commands.RootOptions(cpu=1)).translate(0x400123)
        assert (t0.paddr, t1.paddr) == (0x9123, 0xA123)
        assert target.facts.kernel_root == 0x5000
        assert target.facts.kernel_levels == 4
        assert target.facts.kernel_offset == 0x200000
        assert target.facts.vmcoreinfo is not None
        vmci = target.facts.vmcoreinfo.entries
        assert vmci["OSRELEASE"] == "6.1.0-57-amd64"
        d = target.details
        assert d["format"] == "ELF64 core (EM_X86_64, QEMU dump-guest-memory)"
        assert d["CPUs"] == "2"
        assert d["OSRELEASE"] == "6.1.0-57-amd64"
        assert d["cpu 0 registers"].startswith("rip 0x0, rsp 0x0")  # the QEMU note wins
        assert "2 NT_PRSTATUS, 2 QEMU" in d["notes"]
    finally:
        assert target.close is not None
        target.close()


def test_old_qemu_layout_without_sections(tmp_path: Path) -> None:
    elf = qemu_core(tmp_path)
    elf.sections = False
    elf.phoff = None
    data = elf.build()
    assert struct.unpack_from("<Q", data, 32)[0] == 64  # e_phoff
    path = tmp_path / "old.core"
    path.write_bytes(data)
    core = read_elf_core(str(path))
    assert core.mapper.read(0xA000, 4) == b"cpu1"
    assert len(core.notes.qemu) == 2
    core.close()


def test_pn_xnum(tmp_path: Path) -> None:
    count = 0x10000 + 5  # more than 0xffff program headers with the PT_NOTE
    first = bytes([7]) * 0x1000
    loads = [Load(0, first)] + [Load(i * 0x1000, b"", memsz=0x1000) for i in range(1, count)]
    elf = Elf(notes=qemu_note(0x80000011, 0, 0), loads=loads, xnum=True)
    data = elf.build()
    assert struct.unpack_from("<H", data, 56)[0] == 0xFFFF
    assert struct.unpack_from("<I", data, 64 + 44)[0] == count + 1
    path = tmp_path / "xnum.core"
    path.write_bytes(data)
    core = read_elf_core(str(path))
    try:
        assert core.phnum == count + 1
        assert core.load_count == count
        assert core.mapper.ram == [AddrRange(0, count * 0x1000)]
        assert core.mapper.read(0xFFC, 8) == bytes([7] * 4 + [0] * 4)
        assert core.mapper.read((count - 1) * 0x1000, 0x1000) == bytes(0x1000)
    finally:
        core.close()
    # PN_XNUM without section headers to hold the count.
    elf.shoff = 0
    with pytest.raises(InputError, match="PN_XNUM") as err:
        open_dump(elf.write(tmp_path / "xnum0.core"))
    assert err.value.offset == 56


def test_elf32_core(tmp_path: Path) -> None:
    desc = bytearray(144)
    struct.pack_into("<I", desc, 24, 1)  # pr_pid
    struct.pack_into("<I", desc, 72 + 48, 0xC0100000)  # eip
    mem = bytearray(0x20000)
    mem[0x1234:0x1238] = b"i386"
    elf = Elf(
        elfclass=32,
        machine=3,
        notes=note(b"CORE", 1, bytes(desc)) + qemu_note(0x11, 0x1000, 0x10, size=432),
        loads=[Load(0, bytes(mem), vaddr=0xC0000000), Load(0xFFFC0000, b"\xea" * 0x100)],
    )
    target = open_dump(elf.write(tmp_path / "i386.core"))
    try:
        assert target.details["format"] == "ELF32 core (EM_386, QEMU dump-guest-memory)"
        assert list(target.cpus) == [CpuState(cr0=0x11, cr3=0x1000, cr4=0x10)]
        assert "eip 0xc0100000, esp 0x0" in target.details["cpu 0 registers"]
        assert target.mapper.read(0x1234, 4) == b"i386"
        assert target.mapper.read(0xFFFC00FE, 2) == b"\xea\xea"
        assert target.ram == [AddrRange(0, 0x20000), AddrRange(0xFFFC0000, 0xFFFC0100)]
    finally:
        assert target.close is not None
        target.close()


def test_vmcore_style_cpu_state_from_vmcoreinfo(tmp_path: Path) -> None:
    mem = low_memory()
    elf = Elf(
        notes=prstatus_note(1) + prstatus_note(2) + note(b"VMCOREINFO", 0, VMCOREINFO),
        loads=[
            Load(0, bytes(mem), vaddr=0xFFFF888000000000),
            # The kernel-text PT_LOAD of /proc/vmcore: same physical bytes, stored again.
            Load(0x5000, bytes(mem[0x5000:0x9000]), vaddr=0xFFFFFFFF81005000),
        ],
        sections=False,
    )
    target = open_dump(elf.write(tmp_path / "vmcore"))
    try:
        state = CpuState(cr3=0x5000, cr4=0)
        assert list(target.cpus) == [state, state]
        assert "from VMCOREINFO" in target.details["CPU state"]
        assert target.details["format"] == "ELF64 core (EM_X86_64, vmcore-style)"
        assert target.details["kernel root"].startswith("0x5000")
        t = commands.open_page_table(target).translate(0x400000)
        assert t.paddr == 0xA000
        assert target.ram == [AddrRange(0, 0xA0000)]
    finally:
        assert target.close is not None
        target.close()


def test_vmcore_style_la57_and_no_vmcoreinfo(tmp_path: Path) -> None:
    text = VMCOREINFO.replace(b"l5_enabled)=0", b"l5_enabled)=1")
    elf = Elf(notes=note(b"VMCOREINFO", 0, text), loads=[Load(0, bytes(0x10000))])
    target = open_dump(elf.write(tmp_path / "la57.vmcore"))
    assert list(target.cpus) == [CpuState(cr3=0x5000, cr4=CR4_LA57)]
    assert target.cpus[0].levels == 5
    assert target.facts.kernel_levels == 5
    elf = Elf(notes=prstatus_note(1), loads=[Load(0, bytes(0x10000))])
    target = open_dump(elf.write(tmp_path / "bare.vmcore"))
    assert list(target.cpus) == [CpuState()]
    assert "give --cr3" in target.details["CPU state"]
    assert target.facts.kernel_root is None
    with pytest.raises(InputError, match=r"CR3 is unknown.*--cr3 ADDR"):
        commands.walk(target)


def test_vmcoreinfo_found_in_ram_lazily(tmp_path: Path) -> None:
    mem = low_memory()
    mem[0x20000 : 0x20000 + 15] = b"OSRELEASE=%s\n\0\0"  # a decoy: the kernel's format string
    mem[0x30010 : 0x30010 + len(VMCOREINFO) + 1] = VMCOREINFO + b"\0"
    elf = Elf(notes=qemu_note(0x80050033, 0x1000, 0x6F0), loads=[Load(0, bytes(mem))])
    target = open_dump(elf.write(tmp_path / "nonote.core"))
    facts = target.facts
    assert facts.kernel_root == 0x5000
    assert target.details["VMCOREINFO"].startswith("found in RAM at 0x30010")
    assert facts.memmap is None


@pytest.mark.parametrize(
    ("change", "offset", "words"),
    [
        ({"e_type": 2}, 16, "an executable, not a core dump"),
        ({"machine": 40}, 18, "not x86"),
        ({"phentsize": 32}, 54, "e_phentsize 32"),
        ({"phnum": 0}, 56, "no program headers"),
        ({"phnum": 0xFFF0}, 32, "program header table"),
        ({"shoff": 1 << 40}, 40, "e_shoff"),
        ({"shentsize": 7}, 58, "e_shentsize 7"),
    ],
)
def test_corrupted_header_fields(
    tmp_path: Path, change: dict[str, int], offset: int, words: str
) -> None:
    elf = qemu_core(tmp_path)
    for key, value in change.items():
        setattr(elf, key, value)
    with pytest.raises(InputError) as err:
        open_dump(elf.write(tmp_path / "bad.core"))
    assert err.value.offset == offset, str(err.value)
    assert words in str(err.value)
    assert str(err.value).startswith(f"{tmp_path / 'bad.core'} at offset 0x{offset:x}: ")


@pytest.mark.parametrize("phoff", [0, 16, 63, 1 << 40, (1 << 64) - 1])
def test_corrupted_e_phoff(tmp_path: Path, phoff: int) -> None:
    data = bytearray(qemu_core(tmp_path).build())
    struct.pack_into("<Q", data, 32, phoff)
    (tmp_path / "phoff.core").write_bytes(bytes(data))
    with pytest.raises(InputError, match="program header table at e_phoff") as err:
        open_dump(str(tmp_path / "phoff.core"))
    assert err.value.offset == 32


def test_big_endian_and_bad_class(tmp_path: Path) -> None:
    data = bytearray(qemu_core(tmp_path).build())
    data[5] = 2
    (tmp_path / "be.core").write_bytes(bytes(data))
    with pytest.raises(InputError, match="little-endian") as err:
        open_dump(str(tmp_path / "be.core"))
    assert err.value.offset == 5
    data[5], data[4] = 1, 9
    (tmp_path / "cls.core").write_bytes(bytes(data))
    with pytest.raises(InputError, match="ELF class 9"):
        open_dump(str(tmp_path / "cls.core"))


def test_segment_problems_name_the_program_header(tmp_path: Path) -> None:
    # Program headers at 0x200: PT_NOTE first (0x200), then the loads (0x238, 0x270, ...).
    elf = Elf(
        notes=qemu_note(0, 0, 0),
        loads=[Load(0, bytes(0x2000)), Load(0x1000, bytes(0x2000))],
        phoff=0x200,
    )
    with pytest.raises(InputError, match="overlaps") as err:
        open_dump(elf.write(tmp_path / "overlap.core"))
    assert err.value.offset == 0x270
    elf.loads = [Load(0, bytes(0x1000)), Load(1 << 63, b"", memsz=1 << 63, offset=0)]
    elf.loads.append(Load(0xFFFFFFFFFFFFF000, b"", memsz=0x2000, offset=0))
    with pytest.raises(InputError, match="64-bit address space") as err:
        open_dump(elf.write(tmp_path / "wrap.core"))
    assert err.value.offset == 0x200 + 3 * 56
    elf.loads = [Load(0, bytes(0x1000)), Load(0x1000, bytes(0x10), offset=1 << 32)]
    with pytest.raises(InputError, match="past the") as err:
        open_dump(elf.write(tmp_path / "past.core"))
    assert err.value.offset == 0x270
    for loads in ([], [Load(0, b"")]):
        elf.loads = loads
        with pytest.raises(InputError, match="no PT_LOAD"):
            open_dump(elf.write(tmp_path / "empty.core"))
    # A PT_LOAD's data inside another one at the same file offsets (QEMU paging dumps): fine.
    elf.loads = [Load(0, bytes(range(256)) * 32), Load(0x800, b"", memsz=0x100, offset=0)]
    elf.loads[1].data = b""
    data = elf.build()
    # Point the second load's p_offset at the first one's data + 0x800, p_filesz 0x100.
    first_off = struct.unpack_from("<Q", data, 0x238 + 8)[0]
    buf = bytearray(data)
    struct.pack_into("<QQ", buf, 0x270 + 32, 0x100, 0x100)
    struct.pack_into("<Q", buf, 0x270 + 8, first_off + 0x800)
    (tmp_path / "alias.core").write_bytes(bytes(buf))
    target = open_dump(str(tmp_path / "alias.core"))
    assert target.mapper.read(0x801, 2) == bytes([1, 2])
    assert target.ram == [AddrRange(0, 0x2000)]


def test_a_segment_inside_another_must_store_the_same_bytes(tmp_path: Path) -> None:
    """/proc/vmcore's kernel-text PT_LOAD lies inside its RAM PT_LOAD with its own copy of the
    bytes: accepted when equal; different bytes for the same addresses are an error naming
    the inner segment's program header."""
    ram = bytes(range(256)) * 32  # 0x2000 bytes at physical 0
    same = Elf(notes=qemu_note(0, 0, 0), loads=[Load(0, ram), Load(0x800, ram[0x800:0x900])])
    target = open_dump(same.write(tmp_path / "same.core"))
    assert target.mapper.read(0x800, 0x100) == ram[0x800:0x900]
    assert target.ram == [AddrRange(0, 0x2000)]
    other = Elf(notes=qemu_note(0, 0, 0), loads=[Load(0, ram), Load(0x800, bytes(0x100))])
    path = other.write(tmp_path / "other.core")
    with pytest.raises(InputError, match="different contents") as err:
        open_dump(path)
    phoff = struct.unpack_from("<Q", Path(path).read_bytes(), 32)[0]
    assert err.value.offset == phoff + 2 * 56  # PT_NOTE, the RAM load, then this one
