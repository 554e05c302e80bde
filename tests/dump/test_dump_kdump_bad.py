"""Bad kdump files: each gives a one-line error that names the file and the offset, exit
status 2, in bounded time; no other exception, whatever the bytes."""

from __future__ import annotations

import io
import struct
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, suppress
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gdbext.cpu import CpuState
from gdbext.errors import EXIT_BAD_INPUT, GdbextError, InputError, NotCapturedError
from gdbext_dump.kdump import open_kdump
from gdbext_sim.elfcore import qemu_notes
from gdbext_sim.kdump import write_kdump

BS = 4096
SUB = BS  # the sub-header's file offset
#: The dump's one CPU: its root table is pfn 8, the first compressed page.
CPU = CpuState(cr0=0x8005_0033, cr3=0x8000, cr4=0x6A0)


def page(seed: int) -> bytes:
    return (bytes([seed]) + bytes(range(63))) * 64


def base_kdump(compression: str = "zlib", max_mapnr: int = 64) -> bytes:
    """A small valid seekable kdump: 12 compressed pages, 4 zero pages, 1 excluded page, the
    notes of a QEMU dump with one CPU."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "base.kdump"
        pages = {pfn: page(pfn) for pfn in range(8, 20)}
        pages.update({pfn: bytes(BS) for pfn in range(30, 34)})
        write_kdump(
            path,
            pages,
            max_mapnr=max_mapnr,
            flattened=False,
            compression=compression,
            excluded={40},
            notes=qemu_notes([CPU]),
            vmcoreinfo=b"OSRELEASE=x\n",
        )
        return path.read_bytes()


def flatten(data: bytes, size: int = BS) -> bytes:
    """``data`` as a flattened file: records of ``size`` bytes, in order, then the terminator."""
    out = bytearray(b"makedumpfile\0\0\0\0" + struct.pack(">qq", 1, 1)).ljust(4096, b"\0")
    for off in range(0, len(data), size):
        chunk = data[off : off + size]
        out += struct.pack(">qq", off, len(chunk)) + chunk
    return bytes(out + struct.pack(">qq", -1, -1))


def flat_position(offset: int, size: int = BS) -> int:
    """Where byte ``offset`` of the seekable file is in :func:`flatten`'s output."""
    return 4096 + (offset // size + 1) * 16 + offset


def layout(data: bytes) -> tuple[int, list[tuple[int, int, int]]]:
    """The descriptor offset and the descriptors of a seekable kdump, read by hand."""
    sub_hdr_size, bitmap_blocks = struct.unpack_from("<iI", data, 432)
    desc = (1 + sub_hdr_size + bitmap_blocks) * BS
    descs: list[tuple[int, int, int]] = []
    at = desc
    while True:
        offset, size, flags, _ = struct.unpack_from("<QIIQ", data, at)
        if offset == 0 or size == 0 or len(descs) >= 64:
            break
        descs.append((offset, size, flags))
        at += 24
        if at >= descs[0][0]:  # the data area starts with the first page's data
            break
    return desc, descs


def consume(path: Path) -> None:
    """Open the dump and read every page of its RAM (excluded pages are not an error)."""
    with open_kdump(str(path)) as k:
        for r in k.ram:
            for paddr in r.pages():
                with suppress(NotCapturedError):
                    k.mapper.read(paddr, BS)


def check(exc: GdbextError, path: Path, offset: int | None = None) -> None:
    message = str(exc)
    assert "\n" not in message and message.startswith(str(path))
    assert exc.exit_status == EXIT_BAD_INPUT
    if offset is not None:
        assert isinstance(exc, InputError) and exc.offset == offset, message


def expect_error(path: Path, match: str | None, offset: int | None = None) -> InputError:
    start = time.monotonic()
    with pytest.raises(InputError, match=match) as info:
        consume(path)
    assert time.monotonic() - start < 5
    check(info.value, path, offset)
    return info.value


def patch(data: bytes, offset: int, fmt: str, *values: object) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


@pytest.fixture(params=["seekable", "flattened"])
def form(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def write(tmp_path: Path, data: bytes, form: str) -> Path:
    path = tmp_path / f"bad.{form}"
    path.write_bytes(data if form == "seekable" else flatten(data))
    return path


def real(offset: int, form: str) -> int:
    return offset if form == "seekable" else flat_position(offset)


# --- Truncation ---------------------------------------------------------------------------------


def truncation_points(size: int) -> Iterator[int]:
    yield from (0, 1, 8, 100, 463, 464, 465, 4095, 4096, 4100, 4199, 4200, 4250)
    yield from range(4300, size, max(1, size // 97))
    yield from (size - 17, size - 16, size - 15, size - 2, size - 1)


@pytest.mark.parametrize("flattened", [False, True], ids=["seekable", "flattened"])
def test_truncated_anywhere(tmp_path: Path, flattened: bool) -> None:
    data = base_kdump()
    whole = flatten(data) if flattened else data
    path = tmp_path / "cut.kdump"
    for cut in sorted(set(truncation_points(len(whole)))):
        path.write_bytes(whole[:cut])
        expect_error(path, None)


# --- Corrupted header fields --------------------------------------------------------------------

HEADER_CASES = [
    ("signature", 0, "8s", b"XXXXXXXX", "not a kdump file"),
    ("diskdump", 0, "8s", b"DISKDUMP", "old diskdump"),
    ("version 0", 8, "<i", 0, "header_version"),
    ("version negative", 8, "<i", -1, "header_version"),
    ("block_size 0", 428, "<i", 0, "block_size"),
    ("block_size huge", 428, "<i", 1 << 30, "block_size"),
    ("block_size odd", 428, "<i", 3000, "block_size"),
    ("block_size negative", 428, "<i", -4096, "block_size"),
    ("sub_hdr_size 0", 432, "<i", 0, "sub_hdr_size"),
    ("sub_hdr_size huge", 432, "<i", 1 << 30, "run past the end"),
    ("sub_hdr_size negative", 432, "<i", -5, "sub_hdr_size"),
    ("bitmap_blocks 0", 436, "<I", 0, "bitmap_blocks"),
    ("bitmap_blocks odd", 436, "<I", 3, "bitmap_blocks"),
    ("bitmap_blocks vs file size", 436, "<I", 1000, "run past the end"),
    ("bitmap_blocks huge", 436, "<I", 0xFFFF_FFFE, "run past the end"),
    ("max_mapnr absurd", SUB + 96, "<Q", 1 << 62, "max_mapnr"),
    ("bitmap shorter than max_mapnr", SUB + 96, "<Q", 8 * BS + 1, "shorter than max_mapnr"),
    ("notes beyond EOF", SUB + 48, "<Q", 1 << 40, "notes"),
    ("notes huge", SUB + 56, "<Q", 1 << 62, "notes"),
    ("vmcoreinfo beyond EOF", SUB + 32, "<Q", (1 << 64) - 8, "VMCOREINFO"),
]


@pytest.mark.parametrize(
    ("field", "offset", "fmt", "value", "match"), HEADER_CASES, ids=[c[0] for c in HEADER_CASES]
)
def test_corrupted_header(
    tmp_path: Path, form: str, field: str, offset: int, fmt: str, value: object, match: str
) -> None:
    path = write(tmp_path, patch(base_kdump(), offset, fmt, value), form)
    exc = expect_error(path, match)
    if field.startswith("notes"):  # named at offset_note, with the size in the message
        offset = SUB + 48
    if field == "sub_hdr_size huge":  # the bitmaps move past the end: named at bitmap_blocks
        offset = 436
    assert exc.offset == real(offset, form), str(exc)


def test_block_size_of_the_32_bit_layout_is_named(tmp_path: Path) -> None:
    """A header whose fields sit 12 bytes earlier (block_size 4096 at 416): the 32-bit layout."""
    data = bytearray(base_kdump())
    data[412:440] = data[424:452]
    path = write(tmp_path, bytes(data), "seekable")
    expect_error(path, "32-bit kdump layout", 428)


def test_second_bitmap_claims_more_pages_than_the_file_holds(tmp_path: Path, form: str) -> None:
    data = bytearray(base_kdump(max_mapnr=8 * BS))
    sub_hdr_size, bitmap_blocks = struct.unpack_from("<iI", data, 432)
    bitmap2 = (1 + sub_hdr_size + bitmap_blocks // 2) * BS
    data[bitmap2 : bitmap2 + BS] = b"\xff" * BS  # 32768 descriptors: 786 KiB
    path = write(tmp_path, bytes(data), form)
    desc = (1 + sub_hdr_size + bitmap_blocks) * BS
    expect_error(path, "page descriptors", real(desc, form))


# --- Page descriptors and page data ---------------------------------------------------------------


def test_descriptor_offset_beyond_eof(tmp_path: Path, form: str) -> None:
    data = base_kdump()
    desc, _ = layout(data)
    path = write(tmp_path, patch(data, desc + 24 * 2, "<Q", 1 << 45), form)
    expect_error(path, "past the end", real(desc + 48, form))


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [("size", 0, "bad size"), ("size", 3 * BS, "bad size"), ("flags", 0x40, "unknown flags")],
)
def test_descriptor_fields(tmp_path: Path, form: str, field: str, value: int, match: str) -> None:
    data = base_kdump()
    desc, _ = layout(data)
    at = desc + 24 * 3 + (8 if field == "size" else 12)
    path = write(tmp_path, patch(data, at, "<I", value), form)
    expect_error(path, match, real(at, form))


def test_raw_page_with_a_short_size(tmp_path: Path, form: str) -> None:
    data = base_kdump(compression="none")
    desc, _ = layout(data)
    path = write(tmp_path, patch(data, desc + 8, "<I", BS - 1), form)
    expect_error(path, "bad size", real(desc + 8, form))


CODECS = ["zlib", "lzo", "snappy", "zstd"]


def need(codec: str) -> None:
    if codec == "lzo":
        pytest.importorskip("lzo", reason="python-lzo is not installed (needs liblzo2-dev)")


@pytest.mark.parametrize("codec", CODECS)
def test_garbage_compressed_data(tmp_path: Path, form: str, codec: str) -> None:
    need(codec)
    data = bytearray(base_kdump(compression=codec))
    _, descs = layout(bytes(data))
    offset, size, _flags = next(d for d in descs if d[2])
    data[offset : offset + size] = bytes((i * 97 + 13) & 0xFF for i in range(size))
    path = write(tmp_path, bytes(data), form)
    expect_error(path, "does not decompress", real(offset, form))


def test_snappy_body_garbage_names_the_codec_once() -> None:
    """A valid length preamble, then garbage: cramjam's own "snappy: " prefix is not doubled."""
    pytest.importorskip("cramjam")
    from gdbext_dump.kdump_codecs import DECODERS, FLAG_SNAPPY, CodecError

    with pytest.raises(CodecError) as info:
        DECODERS[FLAG_SNAPPY](b"\x80\x20" + b"garbage!" * 8, 4096)
    message = str(info.value)
    assert message.startswith("snappy: corrupt input") and message.count("snappy") == 1


def compressed(codec: str, raw: bytes) -> bytes:
    if codec == "zlib":
        return zlib.compress(raw)
    if codec == "lzo":
        import lzo

        return bytes(lzo.compress(raw, 1, False))
    if codec == "snappy":
        import cramjam

        return bytes(cramjam.snappy.compress_raw(raw))
    import zstandard

    return bytes(zstandard.ZstdCompressor().compress(raw))


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("length", [100, 2 * BS], ids=["short", "long"])
def test_wrong_decompressed_size(tmp_path: Path, form: str, codec: str, length: int) -> None:
    need(codec)
    data = base_kdump(compression=codec)
    desc, descs = layout(data)
    index = next(i for i, d in enumerate(descs) if d[2])
    blob = compressed(codec, b"\x5a" * length)
    at = len(data)
    data = patch(data, desc + 24 * index, "<QI", at, len(blob)) + blob
    path = write(tmp_path, data, form)
    expect_error(path, "does not decompress", real(at, form))


# --- Flattened framing ----------------------------------------------------------------------------


def flat_records(records: list[tuple[int, int, bytes]], end: bool = True) -> bytes:
    out = bytearray(b"makedumpfile\0\0\0\0" + struct.pack(">qq", 1, 1)).ljust(4096, b"\0")
    for offset, size, blob in records:
        out += struct.pack(">qq", offset, size) + blob
    return bytes(out + (struct.pack(">qq", -1, -1) if end else b""))


def test_flattened_framing_errors(tmp_path: Path) -> None:
    data = base_kdump()
    path = tmp_path / "f.kdump"
    head, rest = data[:BS], data[BS:]
    cases: list[tuple[bytes, str, int]] = [
        (flat_records([(0, BS, head), (BS - 8, len(rest), rest)]), "overlaps", 4096 + 16 + BS),
        (flat_records([(-4096, BS, head)]), "out of range", 4096),
        (flat_records([(0, -1, b"")]), "out of range", 4096),
        (flat_records([(1 << 60, BS, head)]), "out of range", 4096),
        (flat_records([(0, 1 << 40, head)]), "runs past the end", 4096),
        (flat_records([(0, BS, head), (BS, len(rest), rest)], end=False), "terminator", 0),
        (flat_records([(0, BS, head)])[:-3], "terminator", 4096 + 16 + BS),
        (patch(flatten(data), 16, ">q", 2), "type 2", 16),
        (flatten(data)[:4000], "flattened header", 4000),
    ]
    for blob, match, offset in cases:
        path.write_bytes(blob)
        exc = expect_error(path, match)
        if offset:
            assert exc.offset == offset, str(exc)


def test_many_empty_records_are_bounded(tmp_path: Path) -> None:
    """A file of 200,000 empty records is indexed in linear time, then refused."""
    path = tmp_path / "empty.kdump"
    path.write_bytes(flat_records([(0, 0, b"")] * 200_000))
    expect_error(path, "kdump header needs")


def test_hole_where_the_header_should_be(tmp_path: Path) -> None:
    """Records that never write offset 0: the header reads as zeros: not a kdump file."""
    data = base_kdump()
    path = tmp_path / "hole.kdump"
    path.write_bytes(flat_records([(BS, len(data) - BS, data[BS:])]))
    exc = expect_error(path, "not a kdump file")
    assert exc.offset is None and "in no record" in str(exc)


# --- Through the command line ---------------------------------------------------------------------


def run_cli(argv: list[str]) -> tuple[int, str]:
    from gdbext.cli import main

    err = io.StringIO()
    with redirect_stderr(err):
        status = main(argv)
    return status, err.getvalue()


@pytest.fixture(scope="module")
def cli_opens_dumps(tmp_path_factory: pytest.TempPathFactory) -> Callable[[], None]:
    path = tmp_path_factory.mktemp("cli") / "ok.kdump"
    path.write_bytes(base_kdump())
    try:
        status, _ = run_cli(["info", str(path)])
    except SystemExit:
        status = 2
    if status != 0:
        pytest.skip("the command line does not open dump files yet")
    return lambda: None


@pytest.mark.parametrize(
    ("field", "offset", "fmt", "value", "match"),
    [c for c in HEADER_CASES if c[0] in ("block_size 0", "bitmap_blocks huge", "notes huge")],
)
def test_cli_exit_status(
    cli_opens_dumps: Callable[[], None],
    tmp_path: Path,
    form: str,
    field: str,
    offset: int,
    fmt: str,
    value: object,
    match: str,
) -> None:
    path = write(tmp_path, patch(base_kdump(), offset, fmt, value), form)
    status, err = run_cli(["walk", str(path)])
    assert status == EXIT_BAD_INPUT
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and match in lines[0]


def test_cli_truncated_and_garbage_pages(
    cli_opens_dumps: Callable[[], None], tmp_path: Path
) -> None:
    data = base_kdump()
    _, descs = layout(data)
    offset, size, _ = descs[0]  # pfn 8: the root table
    garbage = data[:offset] + bytes(size) + data[offset + size :]
    cases = [(data[:5000], "info", None), (flatten(data)[:-1], "info", "terminator")]
    cases += [(garbage, "walk", "does not decompress"), (flatten(garbage), "walk", None)]
    for blob, command, match in cases:
        path = tmp_path / "t.kdump"
        path.write_bytes(blob)
        status, err = run_cli([command, str(path)])
        lines = err.strip().splitlines()
        assert status == EXIT_BAD_INPUT and len(lines) == 1, err
        assert str(path) in lines[0] and (match is None or match in lines[0]), lines[0]


# --- Mutation fuzzing -----------------------------------------------------------------------------

_BASE = base_kdump()
_BASE_FLAT = flatten(_BASE, size=3000)


@settings(
    max_examples=300,
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    flattened=st.booleans(),
    mutations=st.lists(
        st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=8
    ),
    hot=st.lists(
        st.tuples(
            st.sampled_from([0, 8, 428, 432, 436, 440, SUB, SUB + 32, SUB + 48, SUB + 96]),
            st.integers(0, 7),
            st.integers(0, 255),
        ),
        max_size=3,
    ),
    cut=st.one_of(st.none(), st.integers(0, 1 << 20)),
)
def test_mutated_kdump_raises_only_gdbext_errors(
    flattened: bool,
    mutations: list[tuple[int, int]],
    hot: list[tuple[int, int, int]],
    cut: int | None,
) -> None:
    data = bytearray(_BASE)
    for field, byte, value in hot:  # header fields, where mutations matter most
        data[field + byte] = value
    blob = bytearray(flatten(bytes(data), size=3000) if flattened else data)
    for position, value in mutations:
        blob[position % len(blob)] = value
    if cut is not None:
        del blob[cut % (len(blob) + 1) :]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.kdump"
        path.write_bytes(blob)
        try:
            with open_kdump(str(path)) as k:
                for r in k.ram[:64]:
                    for paddr in list(r.pages())[:64]:
                        with suppress(NotCapturedError):
                            k.mapper.read(paddr, BS)
                for paddr in (0, 0x8000, 0x1FFF8, 1 << 40):
                    with suppress(GdbextError):
                        k.mapper.read(paddr, 16)
        except GdbextError as exc:
            assert "\n" not in str(exc)
