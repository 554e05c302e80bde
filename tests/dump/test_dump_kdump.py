"""The kdump-compressed reader: hand-built files at the reference offsets, writer round trips,
and a simulated machine dumped as kdump and walked like the simulator itself."""

from __future__ import annotations

import contextlib
import os
import struct
import sys
import zlib
from pathlib import Path

import pytest
from support.paths import DEMO, SCENARIOS

from gdbext.addr import AddrRange
from gdbext.cpu import CpuState
from gdbext.errors import (
    GdbextError,
    InputError,
    NotCapturedError,
    PhysMemoryError,
    ReadOnlyError,
    TableNotCapturedError,
)
from gdbext.frontend import commands
from gdbext.plugin.target import Target
from gdbext.render import qemu_tlb
from gdbext_dump.kdump import PAGE_CACHE_SIZE, bitmap_runs, open_kdump
from gdbext_sim.kdump import write_kdump, write_kdump_from_memory
from gdbext_sim.scenario import SimMachine, load_scenario

LA57 = SCENARIOS / "la57.json"
BS = 4096
COMPRESSIONS = ["none", "zlib", "lzo", "snappy", "zstd"]
VMCOREINFO = b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\nSYMBOL(init_top_pgt)=ffffffff82a10000\n"


def page(seed: int) -> bytes:
    """A compressible but distinct page."""
    return (bytes([seed & 0xFF, seed >> 8 & 0xFF]) + bytes(range(62))) * 64


def need_codec(compression: str) -> None:
    if compression == "lzo":
        pytest.importorskip("lzo", reason="python-lzo is not installed (needs liblzo2-dev)")


# --- A kdump built by hand at the reference offsets ------------------------------------------


def hand_built() -> tuple[bytes, dict[int, bytes]]:
    """A seekable kdump of 16 pfns built with literal offsets (dump-formats.md 4.2).

    pfn 1: zlib; pfn 2: raw; pfn 3: excluded (1st bit only); pfns 5 and 6: the shared raw zero
    page; pfn 7 lzo (its codec is not needed unless read); everything else: not in the dump.
    """
    block = BS
    sub_hdr_size = 1
    bitmap_blocks = 2
    buf = bytearray(16 * block)
    buf[0:8] = b"KDUMP   "
    struct.pack_into("<i", buf, 8, 6)  # header_version
    buf[12 + 4 * 65 : 12 + 4 * 65 + 6] = b"x86_64"  # utsname.machine
    buf[12 + 2 * 65 : 12 + 2 * 65 + 7] = b"6.1.0-x"  # utsname.release
    struct.pack_into("<I", buf, 424, 0x1)  # status: zlib
    struct.pack_into("<i", buf, 428, block)
    struct.pack_into("<i", buf, 432, sub_hdr_size)
    struct.pack_into("<I", buf, 436, bitmap_blocks)
    struct.pack_into("<I", buf, 440, 16)  # max_mapnr
    struct.pack_into("<i", buf, 460, 2)  # nr_cpus
    notes = b"NOTE" * 10
    sub = block
    struct.pack_into("<Q", buf, sub + 0, 0x1234_5000)  # phys_base
    struct.pack_into("<i", buf, sub + 8, 31)  # dump_level
    struct.pack_into("<QQ", buf, sub + 32, sub + 104 + 8, 12)  # vmcoreinfo: inside the notes
    struct.pack_into("<QQ", buf, sub + 48, sub + 104, len(notes))  # offset_note, size_note
    struct.pack_into("<Q", buf, sub + 96, 16)  # max_mapnr_64
    buf[sub + 104 : sub + 104 + len(notes)] = notes
    bitmap1 = (1 + sub_hdr_size) * block
    bitmap2 = bitmap1 + bitmap_blocks // 2 * block
    buf[bitmap1] = 0b1110_1110  # pfns 1, 2, 3, 5, 6, 7
    buf[bitmap2] = 0b1110_0110  # pfns 1, 2, 5, 6, 7
    desc = (1 + sub_hdr_size + bitmap_blocks) * block
    data = desc + 5 * 24
    pages = {1: page(1), 2: page(2), 5: bytes(block), 6: bytes(block)}
    zero_at = data
    p1 = zlib.compress(pages[1])
    p1_at = zero_at + block
    p2_at = p1_at + len(p1)
    p7_at = p2_at + block
    descs = [(p1_at, len(p1), 0x1), (p2_at, block, 0), (zero_at, block, 0), (zero_at, block, 0)]
    descs.append((p7_at, 100, 0x2))
    for i, (offset, size, flags) in enumerate(descs):
        struct.pack_into("<QIIQ", buf, desc + 24 * i, offset, size, flags, 0)
    buf[p1_at : p1_at + len(p1)] = p1
    buf[p2_at : p2_at + block] = pages[2]
    buf[p7_at : p7_at + 100] = bytes(range(100))
    return bytes(buf[: p7_at + 100]), pages


def flatten(data: bytes, pieces: list[tuple[int, int]]) -> bytes:
    """makedumpfile's flattened form, built by hand: the records ``(offset, size)`` given."""
    out = bytearray(b"makedumpfile\0\0\0\0" + struct.pack(">qq", 1, 1))
    out += bytes(4096 - len(out))
    for offset, size in pieces:
        out += struct.pack(">qq", offset, size) + data[offset : offset + size]
    return bytes(out + struct.pack(">qq", -1, -1))


@pytest.fixture(params=["seekable", "flattened"])
def hand_file(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, dict[int, bytes]]:
    data, pages = hand_built()
    path = tmp_path / "hand.kdump"
    if request.param == "seekable":
        path.write_bytes(data)
    else:
        # Records in reverse order; the 1st bitmap's block in two pieces; the header area with
        # holes (bytes 464..4096 are never written).
        cuts = [(0, 464), (4096, 4096), (8192, 7), (8199, 4089), (12288, 4096)]
        cuts += [(off, min(5000, len(data) - off)) for off in range(16384, len(data), 5000)]
        path.write_bytes(flatten(data, cuts[::-1]))
    os.chmod(path, 0o400)  # QEMU creates its dumps read-only
    return path, pages


def test_hand_built_header_fields(hand_file: tuple[Path, dict[int, bytes]]) -> None:
    path, _ = hand_file
    with open_kdump(str(path)) as k:
        assert k.phys_base == 0x1234_5000
        assert k.notes == b"NOTE" * 10
        assert k.vmcoreinfo == b"NOTE" * 3
        assert k.ram == [AddrRange(0x1000, 0x4000), AddrRange(0x5000, 0x8000)]
        d = k.details
        assert d["header version"] == "6"
        assert d["compression"] == "zlib"
        assert d["page codecs"] == "raw, zlib, lzo"
        assert d["dump level"] == "31"
        assert d["nr_cpus"] == "2"
        assert d["max_mapnr"] == "0x10"
        assert d["machine"] == "x86_64"
        assert d["release"] == "6.1.0-x"
        assert d["format"] in ("kdump", "kdump (flattened)")
        if d["format"] == "kdump":
            assert k.notes_offset == 4096 + 104
        # For a flattened file, the offset is where the notes are in that file.
        assert path.read_bytes()[k.notes_offset : k.notes_offset + 40] == b"NOTE" * 10


def test_hand_built_pages(hand_file: tuple[Path, dict[int, bytes]]) -> None:
    path, pages = hand_file
    with open_kdump(str(path)) as k:
        m = k.mapper
        assert m.read(0x1000, BS) == pages[1]
        assert m.read(0x2000, BS) == pages[2]
        assert m.read(0x1FF8, 16) == pages[1][-8:] + pages[2][:8]
        assert m.read(0x5000, BS) == bytes(BS) and m.read(0x6000, BS) == bytes(BS)
        with pytest.raises(NotCapturedError) as nc:
            m.read(0x3008, 8)
        assert (nc.value.paddr, nc.value.size) == (0x3008, 8)
        assert not m.is_captured(0x3000)
        assert m.is_captured(0x2000) and m.is_captured(0x4000)
        for paddr in (0x0, 0x4000, 0x8000, 0xF000, 0x10000, 1 << 40):
            with pytest.raises(PhysMemoryError) as exc:
                m.read(paddr, 8)
            assert not isinstance(exc.value, NotCapturedError)
            assert str(path) in str(exc.value)
        with pytest.raises(NotCapturedError):  # a read across an excluded page
            m.read(0x2FF0, 0x20)
        with pytest.raises(ReadOnlyError):
            m.write(0x1000, b"x")
        assert m.read_only is True


def test_missing_codec_names_the_package(
    hand_file: tuple[Path, dict[int, bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = hand_file
    monkeypatch.setitem(sys.modules, "lzo", None)  # import lzo -> ImportError
    with open_kdump(str(path)) as k, pytest.raises(InputError) as exc:
        k.mapper.read(0x7000, 8)
    message = str(exc.value)
    assert "lzo" in message and "pip install python-lzo" in message
    assert "liblzo2-dev" in message and str(path) in message and "\n" not in message


def test_hand_built_file_is_not_written(hand_file: tuple[Path, dict[int, bytes]]) -> None:
    path, _ = hand_file
    before = path.read_bytes()
    with open_kdump(str(path)) as k:
        for r in k.ram:
            for paddr in r.pages():
                with contextlib.suppress(GdbextError, ImportError):
                    k.mapper.read(paddr, BS)
    assert path.read_bytes() == before


# --- The writer, checked at the reference offsets ---------------------------------------------


def test_writer_layout_at_reference_offsets(tmp_path: Path) -> None:
    path = tmp_path / "w.kdump"
    pages = {3: page(3), 4: bytes(BS), 9: page(9)}
    notes = b"N" * 5000  # makes the sub-header area 2 blocks
    write_kdump(
        path,
        pages,
        max_mapnr=40000,  # 5000 bitmap bytes: 2 blocks per bitmap
        flattened=False,
        compression="zlib",
        excluded={7},
        notes=notes,
        vmcoreinfo=b"VMCI",
        nr_cpus=3,
        phys_base=0x200000,
        release="6.1.0-w",
    )
    f = path.read_bytes()

    def u32(off: int) -> int:
        return int(struct.unpack_from("<I", f, off)[0])

    def u64(off: int) -> int:
        return int(struct.unpack_from("<Q", f, off)[0])

    assert f[0:8] == b"KDUMP   " and u32(8) == 6
    assert f[12 + 4 * 65 : 12 + 4 * 65 + 7] == b"x86_64\0"
    assert f[12 + 2 * 65 : 12 + 2 * 65 + 8] == b"6.1.0-w\0"
    assert u32(424) == 0x1 and u32(428) == BS
    assert u32(432) == 2  # sub_hdr_size: 104 + 5000 + 4 bytes
    assert u32(436) == 4 and u32(440) == 40000 and u32(460) == 3
    sub = BS
    assert u64(sub) == 0x200000 and u32(sub + 8) == 1  # QEMU's dump level
    assert u64(sub + 48) == BS + 104 and u64(sub + 56) == 5000
    assert f[BS + 104 : BS + 104 + 5000] == notes
    assert u64(sub + 32) == BS + 104 + 5000 and u64(sub + 40) == 4
    assert u64(sub + 96) == 40000
    bitmap1, bitmap2 = 3 * BS, 5 * BS
    assert f[bitmap1] == 0b1001_1000 and f[bitmap1 + 1] == 0b0000_0010  # 3, 4, 7, 9
    assert f[bitmap2] == 0b0001_1000 and f[bitmap2 + 1] == 0b0000_0010  # 3, 4, 9
    desc = 7 * BS
    data = desc + 3 * 24
    d3, d4, d9 = (struct.unpack_from("<QIIQ", f, desc + 24 * i) for i in range(3))
    assert d4 == (data, BS, 0, 0)  # the shared zero page comes first
    assert f[data : data + BS] == bytes(BS)
    assert d3[0] == data + BS and d3[2] == 0x1
    assert zlib.decompress(f[d3[0] : d3[0] + d3[1]]) == pages[3]
    assert d9[0] == d3[0] + d3[1] and zlib.decompress(f[d9[0] : d9[0] + d9[1]]) == pages[9]
    assert len(f) == d9[0] + d9[1]


def test_writer_flattened_framing(tmp_path: Path) -> None:
    path = tmp_path / "w.flat"
    write_kdump(path, {1: page(1)}, max_mapnr=8, flattened=True, compression="none")
    f = path.read_bytes()
    assert f[:16] == b"makedumpfile\0\0\0\0" and struct.unpack_from(">qq", f, 16) == (1, 1)
    assert f[32:4096] == bytes(4064)
    assert struct.unpack_from(">qq", f, 4096) == (0, 464)  # the disk_dump_header record
    assert f[4112:4120] == b"KDUMP   "
    assert struct.unpack_from(">qq", f, len(f) - 16) == (-1, -1)


# --- Round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("form", ["seekable", "flattened", "shuffled"])
def test_round_trip(tmp_path: Path, compression: str, form: str) -> None:
    need_codec(compression)
    pages = {pfn: page(pfn) for pfn in range(16, 80)}
    pages[20] = bytes(BS)
    pages[21] = os.urandom(BS)  # does not compress: stored raw
    path = tmp_path / "rt.kdump"
    write_kdump(
        path,
        pages,
        max_mapnr=200,
        flattened=form != "seekable",
        shuffle_records=form == "shuffled",
        seed=7,
        compression=compression,
        excluded={120, 121, 150},
        ram=[AddrRange(0x60000, 0x70000)],  # pfns 0x60-0x6f: zero pages
        notes=b"notes!!!",
        vmcoreinfo=VMCOREINFO,
    )
    with open_kdump(str(path)) as k:
        m = k.mapper
        for pfn, data in pages.items():
            assert m.read(pfn << 12, BS) == data
        for pfn in range(0x60, 0x70):
            assert m.read(pfn << 12, BS) == bytes(BS)
        assert (
            m.read((30 << 12) + 100, 3 * BS)
            == (pages[30] + pages[31] + pages[32] + pages[33])[100 : 100 + 3 * BS]
        )
        for pfn in (120, 121, 150):
            assert not m.is_captured(pfn << 12)
            with pytest.raises(NotCapturedError):
                m.read(pfn << 12, 1)
        for pfn in (0, 15, 80, 95, 112, 119, 122, 149, 151, 199, 200, 10**6):
            with pytest.raises(PhysMemoryError) as exc:
                m.read(pfn << 12, 1)
            assert type(exc.value) is PhysMemoryError
        assert k.notes == b"notes!!!" and k.vmcoreinfo == VMCOREINFO
        assert k.ram == [
            AddrRange(16 << 12, 80 << 12),
            AddrRange(0x60 << 12, 0x70 << 12),
            AddrRange(120 << 12, 122 << 12),
            AddrRange(150 << 12, 151 << 12),
        ]
        codecs = k.details["page codecs"].split(", ")
        assert "raw" in codecs
        if compression != "none":
            assert compression in codecs and k.details["compression"] == compression


def test_header_version_gates_fields(tmp_path: Path) -> None:
    """Fields a header version does not define are not read, whatever the bytes hold."""
    path = tmp_path / "v.kdump"
    for version, has_vmcoreinfo, has_notes in (
        (2, False, False),
        (3, True, False),
        (5, True, True),
    ):
        write_kdump(
            path,
            {1: page(1)},
            max_mapnr=64,
            flattened=False,
            header_version=version,
            notes=b"NOTES",
            vmcoreinfo=b"VMCOREINFO",
        )
        f = bytearray(path.read_bytes())
        struct.pack_into("<Q", f, BS + 96, 1 << 40)  # max_mapnr_64: only read from v6
        if version < 4:
            struct.pack_into("<QQ", f, BS + 48, 1 << 50, 1 << 50)  # offset_note, size_note
        if version < 3:
            struct.pack_into("<QQ", f, BS + 32, 1 << 50, 1 << 50)
        path.write_bytes(f)
        with open_kdump(str(path)) as k:
            assert k.mapper.read(0x1000, BS) == page(1)
            assert (k.vmcoreinfo == b"VMCOREINFO") is has_vmcoreinfo
            assert k.notes == (b"NOTES" if has_notes else b"")
            assert k.details["max_mapnr"] == "0x40"
            assert k.details["header version"] == str(version)


def test_cache_and_shared_zero_page(tmp_path: Path) -> None:
    pages = {pfn: page(pfn) for pfn in range(PAGE_CACHE_SIZE + 50)}
    path = tmp_path / "big.kdump"
    write_kdump(path, pages, max_mapnr=4096, flattened=True, ram=[AddrRange(0, 4096 << 12)])
    with open_kdump(str(path)) as k:
        for _ in range(2):  # the second pass reads pages the LRU has evicted
            for pfn in range(0, len(pages), 7):
                assert k.mapper.read(pfn << 12, BS) == pages[pfn]
        zero_a = k.mapper.read(3000 << 12, BS)
        zero_b = k.mapper.read(3001 << 12, BS)
        assert zero_a == bytes(BS) and zero_a is zero_b  # one object for every zero page


def test_incomplete_dump_reads_missing_pages_as_not_captured(tmp_path: Path) -> None:
    path = tmp_path / "inc.kdump"
    write_kdump(
        path,
        {pfn: page(pfn) for pfn in range(8)},
        max_mapnr=8,
        flattened=False,
        compression="none",
        status=0x8,
    )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 2 * BS])  # the last two pages were never written
    with open_kdump(str(path)) as k:
        assert k.details["incomplete"].startswith("yes")
        assert k.mapper.read(5 << 12, BS) == page(5)
        with pytest.raises(NotCapturedError):
            k.mapper.read(7 << 12, 8)


def test_bitmap_runs() -> None:
    assert bitmap_runs(b"") == []
    assert bitmap_runs(b"\xff" * 1024) == [(0, 8192)]
    bits = bytearray(2048)
    for i in (0, 1, 2, 4095, 4096, 4097, 9000, 16383):
        bits[i >> 3] |= 1 << (i & 7)
    assert bitmap_runs(bytes(bits)) == [(0, 3), (4095, 4098), (9000, 9001), (16383, 16384)]
    bits[512:1024] = b"\xff" * 512  # a whole block of ones joins its neighbours' runs
    assert bitmap_runs(bytes(bits)) == [(0, 3), (4095, 8192), (9000, 9001), (16383, 16384)]


# --- A simulated machine, dumped as kdump and walked -------------------------------------------


def kdump_target(path: Path, machine: SimMachine) -> Target:
    """A target over the kdump's memory with the simulator's CPUs (independent of the notes)."""
    k = open_kdump(str(path))
    return Target(
        backend="kdump",
        description=str(path),
        mapper=k.mapper,
        cpus=machine.cpus,
        ram=k.ram,
        close=k.close,
    )


def walk_lines(target: Target) -> list[str]:
    return list(qemu_tlb.render_walk(commands.walk(target)))


@pytest.mark.parametrize("scenario", [DEMO, LA57], ids=["demo", "la57"])
@pytest.mark.parametrize("flattened", [True, False], ids=["flattened", "seekable"])
def test_simulated_machine_walks_identically(
    tmp_path: Path, scenario: Path, flattened: bool
) -> None:
    machine = load_scenario(scenario)
    path = tmp_path / "sim.kdump"
    write_kdump_from_memory(
        path, machine.memory, machine.cpus, flattened=flattened, vmcoreinfo="OSRELEASE=sim\n"
    )
    target = kdump_target(path, machine)
    try:
        expected = walk_lines(machine.to_target())
        assert len(expected) > 50
        assert walk_lines(target) == expected
        assert list(commands.walk(target).page_table.iter_mappings()) == list(
            machine.page_table.iter_mappings()
        )
        assert target.ram == list(machine.memory.ram_ranges)
        # Every stored frame reads back; so does a frame never written (zeros).
        for paddr, data in machine.memory.iter_frames():
            assert target.mapper.read(paddr, BS) == data
    finally:
        assert target.close is not None
        target.close()


def test_simulated_notes_carry_the_cpu_state(tmp_path: Path) -> None:
    """The notes are the ELF core's: the QEMU note's CR3 at desc offset 416 (found by hand)."""
    machine = load_scenario(DEMO)
    path = tmp_path / "sim.kdump"
    write_kdump_from_memory(path, machine.memory, machine.cpus, vmcoreinfo="OSRELEASE=sim\n")
    with open_kdump(str(path)) as k:
        assert k.vmcoreinfo == b"OSRELEASE=sim\n"
        at = k.notes.index(b"QEMU\0")
        namesz, descsz, _ = struct.unpack_from("<III", k.notes, at - 12)
        desc = at + (namesz + 3) // 4 * 4
        (cr3,) = struct.unpack_from("<Q", k.notes, desc + 416)
        assert cr3 == machine.cpus[0].cr3 and descsz == 440
        assert k.details["nr_cpus"] == str(len(machine.cpus))


def test_excluded_table_is_not_captured(tmp_path: Path) -> None:
    """A page-table page excluded from the dump: its frame reads as not captured, and a
    translation through it is "not captured", never "not mapped"."""
    machine = load_scenario(DEMO)
    vaddr = 0xFFFF_FFFF_8100_0000
    translation = machine.page_table.translate(vaddr)
    leaf_table = translation.steps[-1].table
    path = tmp_path / "excl.kdump"
    write_kdump_from_memory(
        path, machine.memory, machine.cpus, flattened=True, excluded={leaf_table >> 12}
    )
    target = kdump_target(path, machine)
    try:
        assert not target.mapper.is_captured(leaf_table)  # type: ignore[attr-defined]
        with pytest.raises(NotCapturedError):
            target.mapper.read(leaf_table, 8)
        pt = commands.walk(target).page_table
        with pytest.raises(TableNotCapturedError):
            pt.translate(vaddr)
    finally:
        assert target.close is not None
        target.close()


def test_open_dump_uses_this_reader(tmp_path: Path) -> None:
    """Through the dump backend (CPU state from the QEMU notes), when it is there."""
    dump = pytest.importorskip("gdbext_dump.dump")
    machine = load_scenario(DEMO)
    path = tmp_path / "sim.kdump"
    write_kdump_from_memory(path, machine.memory, machine.cpus)
    target = dump.open_dump(str(path))
    try:
        assert target.cpus[0].cr3 == machine.cpus[0].cr3
        assert walk_lines(target) == walk_lines(machine.to_target())
    finally:
        if target.close is not None:
            target.close()


def test_cpu_state_sanity() -> None:
    """The scenario's CPUs have a CR3 to walk from (the tests above rely on it)."""
    machine = load_scenario(DEMO)
    assert isinstance(machine.cpus[0], CpuState) and machine.cpus[0].cr3


def test_qemu_tlb_warns_of_a_table_not_captured(tmp_path: Path) -> None:
    """QEMU's info-tlb format has no line for "not captured": the command line says on stderr
    what the walk left out, so that it never passes for "not mapped"; text shows it in line."""
    import contextlib
    import io

    from gdbext.cli import main

    machine = load_scenario(DEMO)
    leaf_table = machine.page_table.translate(0xFFFF_FFFF_8100_0000).steps[-1].table
    path = tmp_path / "excl.kdump"
    write_kdump_from_memory(
        path, machine.memory, machine.cpus, flattened=True, excluded={leaf_table >> 12}
    )
    results = {}
    for fmt in ("qemu-tlb", "text"):
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(["walk", str(path), "--format", fmt])
        results[fmt] = (code, stdout.getvalue(), stderr.getvalue())
    status, out, err = results["qemu-tlb"]
    assert status == 0 and out
    assert err == (
        "gdbext: warning: 1 entries were not followed (1 table-not-captured); "
        "qemu-tlb cannot show them: see the text or JSON output\n"
    )
    status, out, err = results["text"]
    assert status == 0 and err == "" and "table-not-captured" in out
