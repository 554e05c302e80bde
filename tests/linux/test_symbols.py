"""The symbol table: a System.map and a vmlinux read, looked up both ways, slid by KASLR."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.symfiles import write_system_map, write_vmlinux

from gdbext.errors import InputError, SymbolFileError, UnknownSymbolError
from gdbext.linux.layout import START_KERNEL_MAP, linux_layout
from gdbext.linux.symbols import (
    Section,
    load_symbols,
    load_system_map,
    load_vmlinux,
    parse_symbol,
    slide_for,
    with_sections,
)

SLIDE = 0x1E00_0000


@pytest.fixture
def system_map(tmp_path: Path) -> Path:
    return write_system_map(tmp_path / "System.map")


def test_names_to_addresses(system_map: Path) -> None:
    table = load_system_map(system_map)
    assert table.address("init_task") == 0xFFFFFFFF82610000
    assert table.address("fixed_percpu_data") == 0
    assert table.address("nope") is None
    assert table.resolve("jiffies") == 0xFFFFFFFF82620000
    assert table.resolve("init_task+0x10") == 0xFFFFFFFF82610010
    assert table.resolve("init_task + 16") == 0xFFFFFFFF82610010
    assert table.resolve("jiffies-0x20") == 0xFFFFFFFF82620000 - 0x20


def test_addresses_to_names(system_map: Path) -> None:
    table = load_system_map(system_map)
    assert table.describe(0xFFFFFFFF82610000) == "init_task"
    assert table.describe(0xFFFFFFFF82610010) == "init_task+0x10"
    # Local symbols count; the nearest preceding one wins.
    assert table.describe(0xFFFFFFFF81001044) == "local_helper+0x4"
    # Two symbols at one address: either name is right; the lookup is stable.
    assert table.describe(0xFFFFFFFF81000000) in ("_text", "startup_64")
    # Outside the image: below its first symbol, at or past _end, and the direct map.
    assert table.describe(0xFFFFFFFF80FFFFFF) is None
    assert table.describe(0xFFFFFFFF83200000) is None
    assert table.describe(0xFFFF888000000000) is None
    # Absolute and per-CPU symbols name no image address.
    assert table.lookup(0x1000) is None


def test_sections_from_markers(system_map: Path) -> None:
    table = load_system_map(system_map)
    assert [s.name for s in table.sections] == [
        ".text",
        ".rodata",
        ".data",
        "init (freed)",
        ".bss",
    ]
    assert table.section(0xFFFFFFFF82610000) == Section(
        ".data", 0xFFFFFFFF82600000, 0xFFFFFFFF82800000
    )
    assert table.section(0xFFFFFFFF82B00000).name == "init (freed)"  # type: ignore[union-attr]
    # Padding between sections belongs to none.
    assert table.section(0xFFFFFFFF81F00000) is None
    assert table.section(0xFFFFFFFF83100000) is None


def test_slide_moves_the_image_not_per_cpu(system_map: Path) -> None:
    table = load_system_map(system_map).slid(SLIDE)
    assert table.slide == SLIDE
    assert table.address("init_task") == 0xFFFFFFFF82610000 + SLIDE
    assert table.address("fixed_percpu_data") == 0
    assert table.describe(0xFFFFFFFF82610008 + SLIDE) == "init_task+0x8"
    assert table.section(0xFFFFFFFF81000000 + SLIDE).name == ".text"  # type: ignore[union-attr]
    # Sliding again is relative to the file's addresses, not cumulative.
    assert table.slid(SLIDE).address("init_task") == 0xFFFFFFFF82610000 + SLIDE
    assert table.slid(0).address("init_task") == 0xFFFFFFFF82610000


def test_slide_for(system_map: Path) -> None:
    table = load_system_map(system_map)
    text = 0xFFFFFFFF81000000 + SLIDE
    assert slide_for(table, text, None) == SLIDE
    assert slide_for(table, text, 0x1234000) == SLIDE  # where _text is wins
    assert slide_for(table, None, SLIDE) == SLIDE
    assert slide_for(table, None, None) == 0
    # A map of a slid kernel (/proc/kallsyms of that boot) needs no more slide.
    assert slide_for(table.slid(SLIDE), text, SLIDE) == 0


def test_kallsyms_module_symbols_skipped(tmp_path: Path) -> None:
    path = write_system_map(
        tmp_path / "kallsyms",
        "ffffffff81000000 T _text\nffffffffc0000000 t fw_cfg_probe\t[qemu_fw_cfg]\n",
    )
    table = load_system_map(path)
    assert len(table) == 1
    assert table.address("fw_cfg_probe") is None


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("ffffffff81000000 T _text\nthis is not a map\n", 2),
        ("ffffffff81000000 T _text\n\nffffffff8100000g T bad\n", 3),
        ("ffffffff81000000 _text\n", 1),
    ],
)
def test_bad_system_map_names_path_and_line(tmp_path: Path, text: str, line: int) -> None:
    path = write_system_map(tmp_path / "System.map", text)
    with pytest.raises(SymbolFileError) as info:
        load_system_map(path)
    assert info.value.line == line
    assert str(info.value).startswith(f"{path}:{line}: not a System.map line")
    assert "\n" not in str(info.value)


def test_unreadable_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(SymbolFileError, match="No such file"):
        load_system_map(tmp_path / "missing")
    with pytest.raises(SymbolFileError, match="no symbols"):
        load_system_map(write_system_map(tmp_path / "empty", ""))
    with pytest.raises(SymbolFileError, match="not a vmlinux"):
        load_vmlinux(write_system_map(tmp_path / "map", "ffffffff81000000 T _text\n"))


def test_unknown_symbol_and_bad_offset(system_map: Path) -> None:
    table = load_system_map(system_map)
    with pytest.raises(UnknownSymbolError, match="no symbol 'init_tusk'") as info:
        table.resolve("init_tusk")
    assert info.value.name == "init_tusk"
    with pytest.raises(InputError, match="offset"):
        table.resolve("init_task+zz")
    assert parse_symbol("0x10") is None
    assert parse_symbol("init_task") == ("init_task", 0)


def test_vmlinux_symbols_and_sections(tmp_path: Path) -> None:
    table = load_vmlinux(write_vmlinux(tmp_path / "vmlinux"))
    assert table.address("init_task") == 0xFFFFFFFF82600040
    assert table.describe(0xFFFFFFFF81000104) == "do_one_initcall+0x4"
    assert table.describe(0xFFFFFFFF82E00008) == "jiffies_local+0x8"
    # No markers in its symbol table: the ELF's allocated sections.
    assert [(s.name, s.start, s.end) for s in table.sections] == [
        (".text", 0xFFFFFFFF81000000, 0xFFFFFFFF81000200),
        (".rodata", 0xFFFFFFFF82000000, 0xFFFFFFFF82000100),
        (".data", 0xFFFFFFFF82600000, 0xFFFFFFFF82600100),
        (".bss", 0xFFFFFFFF82E00000, 0xFFFFFFFF82E10000),
    ]
    # Past the last section's end there is no symbol to name.
    assert table.describe(0xFFFFFFFF82E10000) is None
    assert load_symbols(vmlinux=tmp_path / "vmlinux") == table
    assert load_symbols() is None


def test_sections_as_walk_markers(system_map: Path) -> None:
    table = load_system_map(system_map).slid(SLIDE)
    layout = with_sections(linux_layout(4), table)
    starts = [m.start for m in layout.markers]
    assert starts == sorted(starts)
    image = [
        (m.start - SLIDE, m.name)
        for m in layout.markers
        if START_KERNEL_MAP <= m.start < layout.bases["modules"].value
    ]
    assert image == [
        (START_KERNEL_MAP - SLIDE, "High Kernel Mapping"),
        (0xFFFFFFFF81000000, "Kernel image .text"),
        (0xFFFFFFFF81E00000, "High Kernel Mapping"),
        (0xFFFFFFFF82000000, "Kernel image .rodata"),
        (0xFFFFFFFF82400000, "High Kernel Mapping"),
        (0xFFFFFFFF82600000, "Kernel image .data"),
        (0xFFFFFFFF82800000, "High Kernel Mapping"),
        (0xFFFFFFFF82A00000, "Kernel image init (freed)"),
        (0xFFFFFFFF82C00000, "High Kernel Mapping"),
        (0xFFFFFFFF82E00000, "Kernel image .bss"),
        (0xFFFFFFFF83000000, "High Kernel Mapping"),
    ]
    # Without sections (a map without markers), the layout is as it was.
    plain = linux_layout(4)
    bare = load_system_map(write_system_map(system_map, "ffffffff81000000 T startup_64\n"))
    assert with_sections(plain, bare) == plain
