"""LiME and raw images, and format detection: files built by hand (dump-formats.md 4.3)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from gdbext.addr import AddrRange
from gdbext.cpu import CR4_LA57, CpuState
from gdbext.errors import InputError, PhysMemoryError, UsageError
from gdbext.mapper import is_captured
from gdbext_dump.detect import detect_format
from gdbext_dump.dump import open_dump


def lime(ranges: list[tuple[int, bytes]], version: int = 1) -> bytes:
    """Headers: magic 0x4C694D45, version, s_addr, e_addr (inclusive), 8 reserved bytes."""
    out = b""
    for start, data in ranges:
        out += struct.pack("<IIQQ", 0x4C694D45, version, start, start + len(data) - 1)
        out += bytes(8) + data
    return out


def test_lime_ranges(tmp_path: Path) -> None:
    path = tmp_path / "mem.lime"
    path.write_bytes(lime([(0x1000, b"a" * 0x1000), (0x2000, b"b" * 0x800), (0x10000, b"c")]))
    assert path.read_bytes()[:4] == b"EMiL"
    assert detect_format(str(path)) == "lime"
    target = open_dump(str(path))
    try:
        m = target.mapper
        assert target.read_path == "LiME (mmap)"
        assert target.details["format"] == "LiME"
        assert target.details["segments"] == "3 ranges"
        assert target.ram == [AddrRange(0x1000, 0x2800), AddrRange(0x10000, 0x10001)]
        assert m.read(0x1FFE, 4) == b"aabb"  # adjacent ranges read as one
        assert m.read(0x10000, 1) == b"c"
        with pytest.raises(PhysMemoryError, match="not in the dump"):
            m.read(0x27FF, 2)
        assert not is_captured(m, 0x3000)
        assert list(target.cpus) == [CpuState()]  # no CPU state, no VMCOREINFO
    finally:
        assert target.close is not None
        target.close()


def test_lime_with_vmcoreinfo_in_ram(tmp_path: Path) -> None:
    text = (
        b"OSRELEASE=6.1.0\nPAGESIZE=4096\nSYMBOL(init_top_pgt)=ffffffff82a10000\n"
        b"NUMBER(phys_base)=0\nNUMBER(pgtable_l5_enabled)=1\nKERNELOFFSET=0\n\0"
    )
    page = text + bytes(0x1000 - len(text))
    path = tmp_path / "vmci.lime"
    path.write_bytes(lime([(0, bytes(0x3000)), (0x5000, page)]))
    target = open_dump(str(path))
    assert list(target.cpus) == [CpuState(cr3=0x2A10000, cr4=CR4_LA57)]
    assert target.facts.kernel_root == 0x2A10000
    assert target.details["VMCOREINFO"].startswith("found in RAM at 0x5000")


@pytest.mark.parametrize(
    ("data", "offset", "words"),
    [
        (lime([(0, b"x" * 16)], version=2), 4, "AVML"),
        (lime([(0, b"x" * 16)], version=3), 4, "version 3"),
        (lime([(0x1000, b"x" * 16), (0x1008, b"y")]), 48 + 8, "overlaps"),
        (lime([(0x2000, b"x" * 16), (0x1000, b"y")]), 48 + 8, "ascend"),
        (lime([(0, b"x" * 16)]) + b"EMiL", 48, "too short for a LiME header"),
        (lime([(0, b"x" * 16)]) + b"\0" * 40, 48, "no LiME header magic"),
        (lime([(0, b"x" * 16)])[:40], 0, "needs 0x10 bytes"),
        (struct.pack("<IIQQ8x", 0x4C694D45, 1, 0x2000, 0x1000), 16, "below its start"),
        (struct.pack("<IIQQ8x", 0x4C694D45, 1, 0, (1 << 64) - 1), 0, "needs"),
    ],
)
def test_bad_lime(tmp_path: Path, data: bytes, offset: int, words: str) -> None:
    path = tmp_path / "bad.lime"
    path.write_bytes(data)
    with pytest.raises(InputError) as err:
        open_dump(str(path), format_in="lime")
    assert err.value.offset == offset, str(err.value)
    assert words in str(err.value)
    assert str(err.value).startswith(str(path))


def test_raw_with_base(tmp_path: Path) -> None:
    path = tmp_path / "mem.raw"
    path.write_bytes(bytes(range(256)) * 64)  # 16 KiB
    assert detect_format(str(path)) == "raw"
    target = open_dump(str(path), base=0x100000)
    assert target.ram == [AddrRange(0x100000, 0x104000)]
    assert target.mapper.read(0x100001, 2) == bytes([1, 2])
    with pytest.raises(PhysMemoryError):
        target.mapper.read(0xFFFFF, 2)
    assert target.details["format"] == "raw physical image from 0x100000"
    assert open_dump(str(path), format_in="raw").mapper.read(0, 1) == b"\0"
    with pytest.raises(InputError, match="--format-in raw") as err:
        open_dump(str(path))  # no magic: raw only when the user says so
    assert err.value.offset == 0
    with pytest.raises(InputError, match="64-bit address space"):
        open_dump(str(path), base=(1 << 64) - 0x1000)


def test_detection_and_override(tmp_path: Path) -> None:
    cases = {
        "a": b"\x7fELF\x02\x01\x01" + bytes(9),
        "b": b"KDUMP   \x06\0\0\0",
        "c": b"makedumpfile\0\0\0\0" + bytes(16),
        "d": b"EMiL\x01\0\0\0",
        "e": b"\0" * 32,
        "f": b"x",
    }
    expected = {"a": "elf", "b": "kdump", "c": "kdump", "d": "lime", "e": "raw", "f": "raw"}
    for name, head in cases.items():
        (tmp_path / name).write_bytes(head)
        assert detect_format(str(tmp_path / name)) == expected[name]
    assert detect_format(str(tmp_path / "a"), "RAW") == "raw"
    with pytest.raises(UsageError, match="--format-in must be one of"):
        detect_format(str(tmp_path / "a"), "vmdk")
    # Forced raw on an ELF file: its bytes as memory.
    assert open_dump(str(tmp_path / "a"), format_in="raw").mapper.read(0, 4) == b"\x7fELF"
    with pytest.raises(UsageError, match="--base applies to raw images only"):
        open_dump(str(tmp_path / "d"), base=0x1000)
    with pytest.raises(InputError, match="cannot open"):
        open_dump(str(tmp_path / "missing"))
    with pytest.raises(InputError, match="cannot open"):
        open_dump(str(tmp_path / "missing"), format_in="raw")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        open_dump(str(tmp_path / "empty"))


def test_a_fifo_or_directory_is_refused_not_waited_on(tmp_path: Path) -> None:
    """Opening a FIFO would block until a writer comes: refused up front, one line."""
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, words in ((fifo, "not a regular file"), (tmp_path, "a directory")):
        with pytest.raises(InputError, match=words):
            open_dump(str(path), format_in="raw")
        with pytest.raises(InputError, match=words):
            open_dump(str(path))
