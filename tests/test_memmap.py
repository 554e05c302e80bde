"""Tests of gdbext.memmap: memory maps given as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gdbext.errors import EXIT_BAD_INPUT, InputError
from gdbext.heap import MemoryRegion, locate_kernel_heap
from gdbext.memmap import TEXT_SOURCE, load_memmap_json

MAP: list[dict[str, object]] = [
    {"start": "0x0", "end": "0x1000", "kind": "Bootloader"},
    {"start": "0x100000", "end": "0x8000000", "kind": "Usable"},
    {"start": 0xFEC00000, "end": 4275044352, "kind": "UnknownUefi(7)"},
    {"start": "1_048_576", "end": "0x10_0000", "kind": "InUse"},
]
EXPECTED = (
    MemoryRegion(0x0, 0x1000, "Bootloader"),
    MemoryRegion(0x100000, 0x8000000, "Usable"),
    MemoryRegion(0xFEC00000, 0xFED00000, "UnknownUefi(7)"),
    MemoryRegion(0x100000, 0x100000, "InUse"),
)


def test_list_from_text() -> None:
    assert load_memmap_json(json.dumps(MAP)) == EXPECTED


def test_object_with_regions_from_text() -> None:
    assert load_memmap_json("\n  " + json.dumps({"regions": MAP})) == EXPECTED


def test_from_file_as_str_and_path(tmp_path: Path) -> None:
    path = tmp_path / "memmap.json"
    path.write_text(json.dumps(MAP), encoding="utf-8")
    assert load_memmap_json(str(path)) == EXPECTED
    assert load_memmap_json(path) == EXPECTED


def test_empty_list_and_heap_use() -> None:
    assert load_memmap_json("[]") == ()
    regions = load_memmap_json(json.dumps(MAP))
    heap = locate_kernel_heap(regions, 0xFFFF_8000_0000_0000)
    assert (heap.start, heap.end) == (0xFFFF_8000_0010_0000, 0xFFFF_8000_0800_0000)


def test_end_at_2_64_is_allowed() -> None:
    regions = load_memmap_json('[{"start": 0, "end": "0x10000000000000000", "kind": "Usable"}]')
    assert regions[0].end == 1 << 64


def test_bad_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('[{"start": 0,', encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_memmap_json(path)
    assert str(err.value).startswith(f"{path} at offset 0xd: not JSON")
    assert err.value.path == str(path)
    assert err.value.exit_status == EXIT_BAD_INPUT


def test_bad_json_text() -> None:
    with pytest.raises(InputError, match=f"^{TEXT_SOURCE} at offset 0x5: not JSON"):
        load_memmap_json("[1, 2")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(InputError, match="cannot read memory map") as err:
        load_memmap_json(str(path))
    assert str(path) in str(err.value)


@pytest.mark.parametrize("key", ["start", "end", "kind"])
def test_missing_key_names_file_and_index(tmp_path: Path, key: str) -> None:
    bad = [dict(region) for region in MAP]
    del bad[2][key]
    path = tmp_path / "memmap.json"
    path.write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_memmap_json(path)
    assert str(err.value) == f"{path}: region 2 has no {key}"


def test_start_after_end(tmp_path: Path) -> None:
    path = tmp_path / "memmap.json"
    path.write_text('[{"start": "0x2000", "end": "0x1000", "kind": "Usable"}]', encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_memmap_json(path)
    assert str(err.value) == f"{path}: region 0 starts at 0x2000 after its end 0x1000"


@pytest.mark.parametrize(
    ("region", "message"),
    [
        ({"start": "zero", "end": 1, "kind": "Usable"}, "region 0: start is not a number"),
        ({"start": -1, "end": 1, "kind": "Usable"}, "region 0: start is not a number"),
        ({"start": 0, "end": 1.5, "kind": "Usable"}, "region 0: end must be an integer"),
        ({"start": True, "end": 1, "kind": "Usable"}, "region 0: start must be an integer"),
        ({"start": 0, "end": None, "kind": "Usable"}, "region 0: end must be an integer"),
        ({"start": 0, "end": 1 << 65, "kind": "Usable"}, "region 0: end 0x2" + "0" * 16),
        ({"start": 0, "end": 1, "kind": 3}, "region 0: kind must be a non-empty string"),
        ({"start": 0, "end": 1, "kind": ""}, "region 0: kind must be a non-empty string"),
    ],
)
def test_bad_values(region: dict[str, object], message: str) -> None:
    with pytest.raises(InputError) as err:
        load_memmap_json(json.dumps([region]))
    assert str(err.value).startswith(f"{TEXT_SOURCE}: {message}")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"memory": []}', 'needs a "regions" list'),
        ('{"regions": {"start": 0}}', "is a JSON list of regions"),
        ("[[0, 4096]]", "region 0 is not a JSON object"),
    ],
)
def test_bad_shapes(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_memmap_json(text)


def test_error_messages_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "multi.json"
    path.write_text("[\n{\n", encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_memmap_json(path)
    assert "\n" not in str(err.value)
