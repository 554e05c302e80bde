"""The BTF reader on hand-built blobs (:mod:`tests.support.btfblob`), well-formed and hostile."""

from __future__ import annotations

import pytest
from support.btfblob import BtfBuilder, kernel_like

from gdbext.errors import BtfError, InputError
from gdbext.formats import btf as fmt
from gdbext.linux.btf import Btf


def test_member_offsets_sizes_and_anonymous_members() -> None:
    b, ids = kernel_like()
    btf = Btf.parse(b.build())
    assert btf.find("task_struct") == ids["task_struct"]
    # Offsets as laid out by kernel_like (bits / 8), each independent of the reader.
    assert [btf.member("task_struct", m).offset for m in ("__state", "tasks", "pid", "tgid")] == [
        0, 16, 32, 36,
    ]  # fmt: skip
    assert btf.member("task_struct", "tasks.prev").offset == 24
    assert btf.member("task_struct", "comm").size == 16  # char[16]: array of a 1-byte int
    assert btf.member("task_struct", "pid").size == 4  # through the typedef pid_t
    assert btf.member("task_struct", "__state").size == 4  # through volatile
    assert btf.member("mm_struct", "pgd").offset == 8  # inside an anonymous structure
    assert btf.size_of(ids["task_struct"]) == 96
    assert btf.count == len(b.records)


def test_member_path_through_a_pointer_is_the_pointed_structure() -> None:
    # A path steps into the member's type with typedefs and qualifiers stripped; a pointer
    # is not a structure, so a path past it is an error.
    b, _ = kernel_like()
    btf = Btf.parse(b.build())
    with pytest.raises(BtfError, match="PTR"):
        btf.member("task_struct", "mm.pgd")


def test_every_kind_is_skipped_with_its_trailer() -> None:
    b = BtfBuilder()
    u32 = b.integer("unsigned int", 4)
    b.every_kind(u32)
    b.ptr(u32)
    b.array(u32, u32, 3)
    b.typedef("u32_t", u32)
    b.struct("either", 4, [("x", u32, 0), ("y", u32, 0)], union=True)
    after = b.struct("after_all", 4, [("x", u32, 0)])
    btf = Btf.parse(b.build())
    assert btf.find("after_all") == after
    assert btf.member("after_all", "x").offset == 0
    assert {btf.type(i).kind for i in range(1, btf.count + 1)} == set(fmt.KIND_NAMES)


def test_bitfields_with_kind_flag() -> None:
    b = BtfBuilder()
    u32 = b.integer("unsigned int", 4)
    b.struct("flags", 8, [("a", u32, 0, 3), ("b", u32, 3, 5), ("c", u32, 32)])
    btf = Btf.parse(b.build())
    members = btf.members(btf.find("flags"))
    assert [(m.name, m.bit_offset, m.bitfield_size) for m in members] == [
        ("a", 0, 3), ("b", 3, 5), ("c", 32, 0),
    ]  # fmt: skip
    assert btf.member("flags", "c").offset == 4
    with pytest.raises(BtfError, match="bitfield"):
        btf.member("flags", "b")


def test_missing_names() -> None:
    b, _ = kernel_like()
    btf = Btf.parse(b.build())
    with pytest.raises(BtfError, match="no structure or union 'inode'"):
        btf.find("inode")
    with pytest.raises(BtfError, match="has no 'nope'"):
        btf.member("task_struct", "nope")
    with pytest.raises(BtfError, match="no structure"):
        btf.find("pid_t")  # a typedef, not a structure


def test_a_larger_header_and_sections_in_any_order() -> None:
    b, _ = kernel_like()
    good = b.build()
    hsize = fmt.BTF_HEADER.size
    h = fmt.BTF_HEADER.unpack(good)
    types = good[hsize : hsize + h["type_len"]]
    strs = good[hsize + h["type_len"] :]
    # hdr_len 32 (8 unknown header bytes), strings first, then types.
    blob = (
        fmt.BTF_HEADER.pack(**{**h, "hdr_len": hsize + 8, "str_off": 0, "type_off": len(strs)})
        + bytes(8)
        + strs
        + types
    )
    assert Btf.parse(blob).member("task_struct", "comm").offset == 48


# --- hostile blobs ---------------------------------------------------------------------------


def _blob(**header: int) -> bytes:
    b, _ = kernel_like()
    return b.build(**header)


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"\x9f\xeb\x01", "shorter than a header"),
        (_blob(magic=0xEB9E), "is not BTF version 1"),
        (_blob(version=2), "is not BTF version 1"),
        (_blob(hdr_len=8), "header length 8"),
        (_blob(hdr_len=1 << 31), "header length"),
        (_blob(type_len=1 << 30), "type section .* runs past"),
        (_blob(str_len=0xFFFF_FFFF), "string section .* runs past"),
        (_blob(str_off=0xFFFF_FFF0), "string section .* runs past"),
        (_blob(str_len=0), "does not end in NUL"),
    ],
)
def test_malformed_headers(blob: bytes, message: str) -> None:
    with pytest.raises(BtfError, match=message) as err:
        Btf.parse(blob, origin=0x1000)
    assert err.value.offset is not None and err.value.offset >= 0x1000
    assert isinstance(err.value, InputError)
    assert str(err.value).startswith("BTF at 0x")


def test_truncated_blob() -> None:
    blob = _blob()
    with pytest.raises(BtfError, match="runs past"):
        Btf.parse(blob[:-5])


def test_huge_vlen_runs_past_the_type_section() -> None:
    b = BtfBuilder()
    u32 = b.integer("unsigned int", 4)
    b.add(fmt.KIND_STRUCT, "huge", 0xFFFF, 4, fmt.BTF_MEMBER.pack(name_off=0, type=u32, offset=0))
    with pytest.raises(BtfError, match="type 2's trailer runs past") as err:
        Btf.parse(b.build(), origin=0x10_0000)
    assert err.value.offset == 0x10_0000 + fmt.BTF_HEADER.size + 16  # type 2's record


def test_a_record_cut_off_and_a_section_not_whole_words() -> None:
    b = BtfBuilder()
    b.integer("unsigned int", 4)
    blob = b.build()
    h = fmt.BTF_HEADER.unpack(blob)
    # type_len 20: the INT (16 bytes) then 4 bytes of the strings as half a record.
    with pytest.raises(BtfError, match="cut off"):
        Btf.parse(fmt.BTF_HEADER.pack(**{**h, "type_len": 20}) + blob[fmt.BTF_HEADER.size :])
    with pytest.raises(BtfError, match="whole number of words"):
        Btf.parse(fmt.BTF_HEADER.pack(**{**h, "type_len": 18}) + blob[fmt.BTF_HEADER.size :])


def test_unknown_kind() -> None:
    b = BtfBuilder()
    b.add(30, "strange")
    with pytest.raises(BtfError, match="unknown kind 30"):
        Btf.parse(b.build())


def test_string_section_must_start_with_nul() -> None:
    b = BtfBuilder()
    b.integer("unsigned int", 4)
    b.strings[0:1] = b"x"
    with pytest.raises(BtfError, match="start with NUL"):
        Btf.parse(b.build())


def test_bad_name_offset_and_type_ids() -> None:
    b = BtfBuilder()
    u32 = b.integer("unsigned int", 4)
    b.struct("s", 8, [("a", 999, 0), ("b", u32, 32)])
    b.records.append(
        fmt.BTF_TYPE.pack(name_off=10_000, info=fmt.KIND_TYPEDEF << fmt.KIND_SHIFT, size_or_type=1)
    )
    btf = Btf.parse(b.build())  # parses: names and ids are checked when read
    with pytest.raises(BtfError, match="name offset 10000 is outside the strings"):
        btf.type(3)
    with pytest.raises(BtfError, match="type id 999 out of range"):
        btf.member("s", "a")
    with pytest.raises(BtfError, match="type id 0 out of range"):
        btf.type(0)


def test_typedef_loops_and_self_containing_arrays_end() -> None:
    b = BtfBuilder()
    u32 = b.integer("unsigned int", 4)
    b.typedef("a", 3)
    b.typedef("b", 2)  # a -> b -> a
    arr = b.array(5, u32, 2)  # id 4 contains id 5 ...
    b.array(4, u32, 2)  # ... which contains id 4
    b.struct("s", 8, [("loop", 2, 0), ("arr", arr, 0)])
    btf = Btf.parse(b.build())
    with pytest.raises(BtfError, match="a loop"):
        btf.resolve(2)
    with pytest.raises(BtfError, match="a loop"):
        btf.member("s", "loop")
    with pytest.raises((BtfError, RecursionError)):
        btf.size_of(arr)


def test_anonymous_nesting_is_bounded() -> None:
    b = BtfBuilder()
    u32 = b.integer("unsigned int", 4)
    # A structure whose anonymous member is itself.
    b.struct("self", 4, [("", 2, 0)])
    btf = Btf.parse(b.build())
    with pytest.raises(BtfError, match="nested deeper"):
        btf.member("self", "x")
    assert u32 == 1
