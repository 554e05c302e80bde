"""Bad ELF, LiME and raw input: one-line errors naming the file and offset, exit status 2, in
bounded time; byte mutations of generated dumps raise nothing but GdbextError.

(kdump's bad input is tested with the kdump reader.)
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gdbext import cli
from gdbext.cpu import CpuState
from gdbext.errors import GdbextError, InputError
from gdbext.frontend import commands
from gdbext.plugin.host import Host
from gdbext.render import jsonout, text
from gdbext_dump.dump import open_dump
from gdbext_sim.elfcore import write_qemu_elf_core
from gdbext_sim.memory import SparsePhysMemory

VMCOREINFO = (
    "OSRELEASE=6.1.0\nPAGESIZE=4096\nSYMBOL(init_top_pgt)=ffffffff80001000\n"
    "NUMBER(phys_base)=0\nNUMBER(pgtable_l5_enabled)=0\nKERNELOFFSET=0\n"
)


def small_memory() -> SparsePhysMemory:
    """64 KiB: PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> PT 0x4000, which maps 16 pages at
    VA 0x400000 -> PA 0x8000..; PD entry 3 maps a 2 MiB page; PML4 entry 511 shares the PDPT."""
    mem = SparsePhysMemory(0x10000)
    for table, entry in ((0x1000, 0x2003), (0x2000, 0x3003), (0x3000 + 2 * 8, 0x4003)):
        mem.write(table, struct.pack("<Q", entry))
    mem.write(0x1000 + 511 * 8, struct.pack("<Q", 0x2003))
    mem.write(0x3000 + 3 * 8, struct.pack("<Q", 0x200000 | 0x83))
    for i in range(16):
        mem.write(0x4000 + 8 * i, struct.pack("<Q", (0x8000 + 0x1000 * (i % 8)) | 0x7))
    return mem


def elf_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "small.core"
    write_qemu_elf_core(
        path, small_memory(), [CpuState(0x80050033, 0x1000, 0x6F0)], vmcoreinfo=VMCOREINFO
    )
    return path.read_bytes()


def lime_bytes() -> bytes:
    mem = small_memory()
    return b"".join(
        struct.pack("<IIQQ8x", 0x4C694D45, 1, start, start + 0x4000 - 1) + mem.read(start, 0x4000)
        for start in (0, 0x4000, 0xC000)
    )


def exercise(path: str, format_in: str | None = None) -> None:
    """Open, describe, walk (text, and JSON with a leaf bound) and translate, as a user would.

    Files shorter than a magic number are raw images unless ``format_in`` says otherwise."""
    target = open_dump(path, format_in)
    try:
        list(text.render_info(commands.info(target)))
        target.facts.vmcoreinfo  # noqa: B018 (found on first use: must not fail)
        root = commands.RootOptions()
        if target.cpus[0].cr3 is None:
            root = commands.RootOptions(cr3=0x1000)
        list(text.render_walk(commands.walk(target, commands.WalkOptions(root=root))))
        options = commands.WalkOptions(root=root, max_leaves=20000)
        list(jsonout.render_walk(commands.walk(target, options)))
        commands.translate(target, [0x400000, 0x7FFF_FFFF_F000, 0xFFFF_FF80_0040_0000], root)
    finally:
        if target.close is not None:
            target.close()


def test_every_truncation_of_an_elf_core(tmp_path: Path) -> None:
    data = elf_bytes(tmp_path)
    note_end = data.find(b"OSRELEASE") + len(VMCOREINFO) + 8
    cuts = sorted({*range(0, note_end + 8), *range(note_end, len(data), 997), len(data) - 1})
    path = tmp_path / "cut.core"
    start = time.perf_counter()
    for cut in cuts:
        path.write_bytes(data[:cut])
        with pytest.raises(InputError) as err:
            exercise(str(path), "elf")
        message = str(err.value)
        assert "\n" not in message
        assert message.startswith(str(path)), message
        assert err.value.offset is not None or "empty" in message or "cannot" in message, message
    assert time.perf_counter() - start < 30


def test_every_truncation_of_a_lime_image(tmp_path: Path) -> None:
    data = lime_bytes()
    path = tmp_path / "cut.lime"
    for cut in [*range(1, 80), *range(80, len(data), 509), len(data) - 1]:
        path.write_bytes(data[:cut])
        with pytest.raises(InputError) as err:
            exercise(str(path), "lime")
        assert err.value.offset is not None
        assert str(err.value).startswith(f"{path} at offset 0x")


@pytest.mark.parametrize(
    ("field", "fmt", "value", "offset"),
    [
        ("e_phoff", "<Q", 0xFFFF_FFFF_0000, 32),
        ("e_phoff", "<Q", 0, 32),
        ("e_phnum", "<H", 0x7FFF, 32),
        ("e_phnum", "<H", 0xFFFF, 64 + 44),  # PN_XNUM with shdr[0].sh_info 0
        ("e_phentsize", "<H", 57, 54),
        ("e_shoff", "<Q", 0xFFFF_FFFF_FFFF_FF00, 40),
        ("e_shentsize", "<H", 0, 58),
    ],
)
def test_corrupted_elf_header_field(
    tmp_path: Path, field: str, fmt: str, value: int, offset: int
) -> None:
    data = bytearray(elf_bytes(tmp_path))
    where = {"e_phoff": 32, "e_shoff": 40, "e_phentsize": 54, "e_phnum": 56, "e_shentsize": 58}
    struct.pack_into(fmt, data, where[field], value)
    path = tmp_path / "bad.core"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError) as err:
        exercise(str(path))
    assert err.value.offset == offset, str(err.value)
    assert str(err.value).startswith(f"{path} at offset 0x")


def test_pn_xnum_with_zero_count_is_an_error(tmp_path: Path) -> None:
    data = bytearray(elf_bytes(tmp_path))
    struct.pack_into("<H", data, 56, 0xFFFF)  # sh_info of section 0 stays 0
    path = tmp_path / "xnum.core"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="PN_XNUM but section header 0's sh_info") as err:
        open_dump(str(path))
    assert err.value.offset == 64 + 44


def test_bad_note_sizes(tmp_path: Path) -> None:
    data = bytearray(elf_bytes(tmp_path))
    # Program headers at 192: PT_NOTE first; its p_offset @8, p_filesz @32.
    note_off = struct.unpack_from("<Q", data, 192 + 8)[0]
    for field_off, value in ((4, 0x7FFF_FFFF), (0, 0x100000)):  # n_descsz, n_namesz
        bad = bytearray(data)
        struct.pack_into("<I", bad, note_off + field_off, value)
        path = tmp_path / "note.core"
        path.write_bytes(bytes(bad))
        with pytest.raises(InputError, match="runs past the end of the note area") as err:
            open_dump(str(path))
        assert err.value.offset == note_off
    bad = bytearray(data)
    struct.pack_into("<Q", bad, 192 + 32, 1 << 40)  # PT_NOTE p_filesz
    path = tmp_path / "note.core"
    path.write_bytes(bytes(bad))
    with pytest.raises(InputError, match="PT_NOTE data") as err:
        open_dump(str(path))
    assert err.value.offset == 192


def _cli_takes_a_dump() -> bool:
    parser = cli.build_parser(Host.create())
    try:
        parser.parse_args(["info", "x.core"])
    except (SystemExit, GdbextError):
        return False
    return True


@pytest.mark.skipif(not _cli_takes_a_dump(), reason="the CLI's positional DUMP is not there yet")
def test_cli_exit_status_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = bytearray(elf_bytes(tmp_path))
    struct.pack_into("<H", data, 54, 12)
    path = tmp_path / "bad.core"
    path.write_bytes(bytes(data))
    for command in (["walk"], ["info"], ["translate", "--json"]):
        argv = [*command, str(path)]
        if command[0] == "translate":
            argv.append("0x400000")
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert (
            err == f"gdbext: {path} at offset 0x36: e_phentsize 12 is not the ELF64 program "
            "header size 56\n"
        )
    lime = tmp_path / "bad.lime"
    lime.write_bytes(lime_bytes()[:100])
    assert cli.main(["walk", str(lime), "--cr3", "0x1000"]) == 2
    assert capsys.readouterr().err.startswith(f"gdbext: {lime} at offset 0x0: LiME range")


MUTATIONS = st.lists(
    st.tuples(
        st.one_of(st.integers(0, 1400), st.integers(0, 0x12000)),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=8,
)


@settings(
    max_examples=150,
    deadline=5000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutations=MUTATIONS, cut=st.one_of(st.none(), st.integers(0, 0x12000)))
def test_mutated_elf_core_raises_only_gdbext_errors(
    tmp_path: Path, mutations: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(_ELF_CACHE.setdefault("elf", elf_bytes(tmp_path)))
    for index, value in mutations:
        if index < len(data):
            data[index] = value
    path = tmp_path / "mutated.core"
    path.write_bytes(bytes(data[:cut]))
    try:
        exercise(str(path))
    except GdbextError as exc:
        assert "\n" not in str(exc)


@settings(
    max_examples=100,
    deadline=5000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(mutations=MUTATIONS)
def test_mutated_lime_raises_only_gdbext_errors(
    tmp_path: Path, mutations: list[tuple[int, int]]
) -> None:
    data = bytearray(lime_bytes())
    for index, value in mutations:
        data[index % len(data)] = value
    path = tmp_path / "mutated.lime"
    path.write_bytes(bytes(data))
    try:
        exercise(str(path))
    except GdbextError as exc:
        assert "\n" not in str(exc)


_ELF_CACHE: dict[str, bytes] = {}
