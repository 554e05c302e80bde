"""Searching a dump in place (``SegmentMapper.find``): around the data of a sparse file, and
at the very end of a file.

CPython 3.11.2's ``mmap.find`` reads one byte past its end; on a file whose size is a multiple
of the page size (every raw RAM image) that byte is not mapped and the process died with
SIGSEGV (``gdbext heap IMAGE --memmap e820``). Run in subprocesses, so a crash is a failure and
not the end of the test run.
"""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from depth import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from gdbext_dump.segments import Segment, SegmentMapper, open_mmap

SIZE = 128 << 20
#: The sparse files of the property test: 8 blocks, some written, the rest holes.
SPARSE_SIZE = 8 * 4096


@st.composite
def sparse_file(draw: st.DrawFn) -> tuple[list[tuple[int, bytes]], bytes, int, int]:
    """Writes into a file of :data:`SPARSE_SIZE` holes (often at a block's edge), a needle
    (often cut from the file's bytes across a data/hole edge) and a search window."""
    edges = st.integers(1, SPARSE_SIZE // 4096 - 1).map(lambda b: b * 4096)
    writes = draw(
        st.lists(
            st.tuples(
                st.one_of(edges, edges.map(lambda e: e - 3), st.integers(0, SPARSE_SIZE - 8)),
                st.binary(min_size=1, max_size=8).filter(lambda b: b.strip(b"\0")),
            ),
            max_size=4,
        )
    )
    image = bytearray(SPARSE_SIZE)
    for at, data in writes:
        image[at : at + len(data)] = data
    cut = draw(st.booleans())
    if writes and cut:
        at = draw(st.sampled_from([w[0] for w in writes])) + draw(st.integers(-6, 6))
        at = min(max(at, 0), SPARSE_SIZE - 1)
        needle = bytes(image[at : at + draw(st.integers(1, 10))])
    else:
        needle = draw(st.binary(min_size=1, max_size=6))
    start = draw(st.sampled_from([0, 1, 4093, 4097]))
    end = draw(st.sampled_from([SPARSE_SIZE, SPARSE_SIZE - 1, 4099, 8192]))
    return writes, needle, start, end


@settings(max_examples=examples(300), deadline=None)
@given(sparse_file())
def test_find_in_a_sparse_file_equals_find_in_its_bytes(
    case: tuple[list[tuple[int, bytes]], bytes, int, int],
) -> None:
    """The search looks only around a sparse file's data; it finds what ``bytes.find`` finds in
    the whole file, needles that start or end in a hole included."""
    writes, needle, start, end = case
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "ram.raw")
        with open(path, "wb") as f:
            f.truncate(SPARSE_SIZE)
            for at, data in writes:
                f.seek(at)
                f.write(data)
        with open(path, "rb") as f:
            image = f.read()
        mapper = SegmentMapper(path, open_mmap(path), [Segment(0, SPARSE_SIZE, 0, SPARSE_SIZE)])
        try:
            assert mapper.find(needle, start, end) == image.find(needle, start, end)
        finally:
            mapper.close()


def test_a_sparse_file_is_searched_only_around_its_data(tmp_path: Path) -> None:
    """A 1 GiB image holding one page: the search reads that page, not a GiB of holes (each
    of which would be a page of zeros paged in)."""
    path = tmp_path / "ram.raw"
    with open(path, "wb") as f:
        f.truncate(1 << 30)
        f.seek(700 << 20)
        f.write(b"\0VMCOREINFO")
    mapper = SegmentMapper(str(path), open_mmap(str(path)), [Segment(0, 1 << 30, 0, 1 << 30)])
    data = mapper._data
    assert isinstance(data, mmap.mmap)
    try:
        before = _resident(data)
        assert mapper.find(b"VMCOREINFO", 0, 1 << 30) == (700 << 20) + 1
        assert mapper.find(b"\0VMCOREINFO", 0, 1 << 30) == 700 << 20
        assert mapper.find(b"VMCOREINFO", (700 << 20) + 2, 1 << 30) == -1
        assert _resident(data) - before < 1024  # a GiB is 262,144 pages
    finally:
        mapper.close()


def _resident(data: mmap.mmap) -> int:
    """Pages of the process's memory in the page cache or RAM (``/proc/self/statm``'s
    resident count)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1])


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "ram.raw"
    with open(path, "wb") as f:
        f.truncate(SIZE)  # page-aligned, all zeros (sparse)
    return path


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_find_to_the_end_of_a_page_aligned_image(image: Path, tmp_path: Path) -> None:
    # CPython's search steps len(needle) + 1 bytes at a time over a miss; it peeks one byte
    # past the end when it lands exactly there, i.e. when (end - start - 4) % 5 == 0.
    start = (SIZE - 4) % 5
    tail = tmp_path / "tail.raw"
    with open(tail, "wb") as f:
        f.truncate(SIZE)
        f.seek(SIZE - 4)
        f.write(b"HdrS")
    code = f"""
from gdbext_dump.raw import open_raw
zeros = open_raw({str(image)!r}, 0)
print(zeros.find(b"HdrS", {start}, {SIZE}))
m = open_raw({str(tail)!r}, 0)
print(m.find(b"HdrS", 0, {SIZE}), m.find(b"HdrS", 0, {SIZE - 1}), m.find(b"HdrZ", 0, {SIZE}))
"""
    proc = _python(code)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert proc.stdout.split() == ["-1", str(SIZE - 4), "-1", "-1"]


def test_heap_e820_on_a_raw_image_is_an_answer_not_a_crash(image: Path) -> None:
    argv = ["heap", str(image), "--format-in", "raw", "--memmap", "e820"]
    proc = subprocess.run(
        [sys.executable, "-m", "gdbext.cli", *argv],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr  # nothing found, said in one line
    assert proc.stderr.count("\n") == 1 and "no Linux boot_params" in proc.stderr
