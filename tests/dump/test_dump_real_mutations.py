"""Mutated bytes of a real kernel dump: never an uncaught exception, never a hang.

The committed fixture ``fixtures/kernels/4level.elf.xz`` is a QEMU ``dump-guest-memory`` core of
Debian's kernel in which only the headers, notes and the pages that matter (page tables,
VMCOREINFO, boot_params) hold data. Hypothesis changes bytes exactly there (and anywhere else,
and truncates the file), then runs ``gdbext info``, ``walk``, ``translate`` and ``heap`` on it
through :func:`gdbext.cli.main`. Every run must end with exit status 0, 1 or 2, a status-2 run
with one ``gdbext: ...`` line on stderr, and within a time bound. Each example is undone in
place, so the 151 MB file is unpacked only once.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.paths import KERNELS

from gdbext.cli import main

#: No single command on a mutated 128 MiB dump may take longer than this (seconds). A normal run
#: takes well under a second; a hang would take forever.
TIME_BOUND = 20.0


def _data_extents(path: Path) -> list[tuple[int, int]]:
    """The (offset, length) runs of the sparse file that hold data."""
    extents = []
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: no data past pos
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            extents.append((start, end - start))
            pos = end
    return extents


class RealDump:
    """The unpacked fixture, with its data extents saved so that any change can be undone."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        self.extents = _data_extents(path)
        #: The 4 KiB pages of the file that are not all zero: headers, notes, kept pages.
        self.pages: list[int] = []
        with open(path, "rb") as f:
            self.saved = []
            for offset, length in self.extents:
                f.seek(offset)
                data = f.read(length)
                self.saved.append((offset, data))
                self.pages += [
                    offset + i for i in range(0, length, 4096) if data[i : i + 4096].strip(b"\0")
                ]

    def restore(self) -> None:
        with open(self.path, "r+b") as f:
            f.truncate(self.size)
            for offset, data in self.saved:
                f.seek(offset)
                f.write(data)


@pytest.fixture(scope="module")
def real_dump(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealDump]:
    from minimize import unpack

    path = unpack(KERNELS / "4level.elf.xz", tmp_path_factory.mktemp("mutated") / "4level.elf")
    dump = RealDump(path)
    # The headers and notes come first; then the kept pages (tables, VMCOREINFO, boot_params).
    assert dump.pages[0] == 0 and len(dump.pages) > 50
    yield dump
    path.unlink()


#: One mutation: (which non-zero page, or None for anywhere in the file), a position, a byte.
mutation = st.tuples(st.one_of(st.none(), st.integers(0, 1 << 16)), st.integers(0, 1 << 40),
                     st.integers(0, 255))  # fmt: skip


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    start = time.monotonic()
    with redirect_stdout(out), redirect_stderr(err):
        status = main(argv)
    took = time.monotonic() - start
    assert took < TIME_BOUND, f"{argv} took {took:.1f} s"
    return status, out.getvalue(), err.getvalue()


@settings(
    max_examples=int(os.environ.get("GDBEXT_MUTATION_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    mutations=st.lists(mutation, min_size=1, max_size=12),
    truncate_at=st.one_of(st.none(), st.integers(0, 1 << 40)),
)
def test_mutated_real_dump_gives_a_result_or_one_line_error(
    real_dump: RealDump,
    mutations: list[tuple[int | None, int, int]],
    truncate_at: int | None,
) -> None:
    try:
        with open(real_dump.path, "r+b") as f:
            for page, position, value in mutations:
                if page is None:
                    offset = position % real_dump.size
                elif page % 4 == 0:  # a quarter of the time: the headers and notes
                    offset = position % 4096
                else:
                    offset = real_dump.pages[page % len(real_dump.pages)] + position % 4096
                f.seek(offset)
                f.write(bytes([value]))
            if truncate_at is not None:
                f.truncate(truncate_at % real_dump.size)
        path = str(real_dump.path)
        for argv in (
            ["info", path],
            ["walk", path],
            ["walk", path, "--kernel", "--filter", "wx"],
            ["translate", path, "0xffffffff81000000", "0xffff888000100000", "0x400000"],
            ["heap", path, "--memmap", "e820"],
        ):
            status, out, err = _run(argv)
            assert status in (0, 1, 2), (argv, status)
            if status == 2 and not err and argv[0] == "translate":
                # A malformed table or a bad address is a per-address result: one record per
                # address on stdout (e.g. a broken ELF magic makes the file a raw image).
                assert len(out.splitlines()) >= 3, out
            elif status == 2:
                lines = err.splitlines()
                assert len(lines) == 1 and lines[0].startswith("gdbext: "), (argv, err)
    finally:
        real_dump.restore()


def test_restored_dump_is_the_fixture_again(real_dump: RealDump) -> None:
    """The undo really undoes: after the mutations, the walk is QEMU's info tlb again."""
    import lzma

    golden = lzma.decompress((KERNELS / "4level.info-tlb.txt.xz").read_bytes()).decode()
    out = io.StringIO()
    with redirect_stdout(out):
        status = main(["walk", str(real_dump.path), "--format", "qemu-tlb"])
    assert status == 0
    assert out.getvalue().splitlines() == golden.splitlines()


def test_e820_scan_skips_zero_fill_of_a_huge_segment(real_dump: RealDump) -> None:
    """A PT_LOAD whose memory size claims 1 TiB more than its file holds (legal: the rest reads
    as zeros) must not make ``heap --memmap e820`` scan a terabyte of zeros (found by the
    mutation test above: 50 s before the scan searched only the file's bytes)."""
    import struct

    try:
        with open(real_dump.path, "r+b") as f:
            header = f.read(64)
            phoff, phentsize, phnum = (
                struct.unpack_from("<Q", header, 32)[0],
                *struct.unpack_from("<HH", header, 54),
            )
            loads = []
            for i in range(phnum):
                f.seek(phoff + i * phentsize)
                p_type, _flags, _off, _va, _pa, _filesz, memsz = struct.unpack(
                    "<IIQQQQQ", f.read(48)
                )
                if p_type == 1:
                    loads.append((phoff + i * phentsize, memsz))
            # The last one (the BIOS ROM below 4 GiB): grown, it overlaps no other segment.
            at, memsz = loads[-1]
            f.seek(at + 40)
            f.write(struct.pack("<Q", memsz + (1 << 40)))
        status, out, err = _run(["heap", str(real_dump.path), "--memmap", "e820"])
        assert status == 0, err
        assert "boot_params at 0x331a880" in out
    finally:
        real_dump.restore()
