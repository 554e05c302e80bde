"""``snapshot``: the saved table walks as the original, byte for byte, in a small file that the
``core`` backend opens; damaged or foreign snapshots are one clear error."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from depth import FULL, kernels
from support.cli import cli_text

from gdbext import cli
from gdbext.errors import EXIT_BAD_INPUT, EXIT_OK
from gdbext.formats.snapshot import SnapshotInfo


@pytest.mark.parametrize("name", kernels())
@pytest.mark.parametrize("select", [[], ["--kernel"]])
def test_snapshot_walks_as_the_original(
    kernel_dump: Callable[[str], Path], tmp_path: Path, name: str, select: list[str]
) -> None:
    dump = str(kernel_dump(name))
    snap = str(tmp_path / "snap.elf")
    status, _ = cli_text(["snapshot", dump, *select, "-o", snap])
    assert status == EXIT_OK
    # Tables only: a few hundred KiB for a whole kernel's table.
    assert Path(snap).stat().st_size < 1 << 20
    # JSON holds every leaf with all its bits; qemu-tlb says it again another way (full depth).
    formats = [["--format", "text"], ["--json"]] + ([["--format", "qemu-tlb"]] if FULL else [])
    for fmt in formats:
        assert cli_text(["walk", snap, *fmt]) == cli_text(["walk", dump, *select, *fmt])


def test_snapshot_user_pgd_of_a_pti_pair(
    kernel_dump: Callable[[str], Path], tmp_path: Path
) -> None:
    dump = str(kernel_dump("kaslr-pti"))
    snap = str(tmp_path / "user.elf")
    assert cli_text(["snapshot", dump, "--user-pgd", "-o", snap])[0] == EXIT_OK
    assert cli_text(["walk", snap]) == cli_text(["walk", dump, "--user-pgd"])


def test_snapshot_says_what_it_saved(kernel_dump: Callable[[str], Path], tmp_path: Path) -> None:
    import json

    dump = str(kernel_dump("4level"))
    snap = str(tmp_path / "snap.elf")
    status, text = cli_text(["snapshot", dump, "--kernel", "-o", snap, "--json"])
    doc = json.loads(text)
    assert status == EXIT_OK
    assert doc["size"] == Path(snap).stat().st_size
    assert doc["vmcoreinfo"] is True
    info = cli_text(["info", snap, "--json"])[1]
    assert doc["root"] in info


def _snap(kernel_dump: Callable[[str], Path], tmp_path: Path) -> Path:
    snap = tmp_path / "snap.elf"
    assert cli_text(["snapshot", str(kernel_dump("4level")), "-o", str(snap)])[0] == EXIT_OK
    return snap


def test_truncated_snapshot_is_one_error(
    kernel_dump: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snap = _snap(kernel_dump, tmp_path)
    data = snap.read_bytes()
    snap.write_bytes(data[: len(data) // 2])
    assert cli.main(["walk", str(snap)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]


def test_snapshot_of_another_version_is_refused(
    kernel_dump: Callable[[str], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    snap = _snap(kernel_dump, tmp_path)
    data = bytearray(snap.read_bytes())
    at = data.index(b"snapshot=1\n")
    data[at : at + 11] = b"snapshot=9\n"
    snap.write_bytes(bytes(data))
    assert cli.main(["walk", str(snap)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "format version 9" in err and "reads version 1" in err


def test_snapshot_note_round_trips() -> None:
    info = SnapshotInfo(1, 0x61B6000, 5, 111, 46, "core x.elf --kernel")
    assert SnapshotInfo.decode(info.encode()) == info


def test_snapshot_needs_a_file(kernel_dump: Callable[[str], Path]) -> None:
    assert cli.main(["snapshot", str(kernel_dump("4level"))]) == EXIT_BAD_INPUT
