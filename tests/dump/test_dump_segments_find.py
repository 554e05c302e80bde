"""Searching a dump in place at the very end of its file (``SegmentMapper.find``).

CPython 3.11.2's ``mmap.find`` reads one byte past its end; on a file whose size is a multiple
of the page size (every raw RAM image) that byte is not mapped and the process died with
SIGSEGV (``gdbext heap IMAGE --memmap e820``). Run in subprocesses, so a crash is a failure and
not the end of the test run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SIZE = 128 << 20


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
