"""GDB's ``pt-snapshot FILE`` and ``pt-diff FILE`` on a live guest (the gdb backend over QEMU's
gdbstub): the snapshot taken live walks as a dump of the same stop; a snapshot of another root
diffs against the live table as the command line diffs it against that dump."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support.cli import cli_text
from support.debuggers import gdb, marked, sections
from support.diffpair import stop_with_user_snapshot

if TYPE_CHECKING:
    from qemu_guest import QemuGuest

pytestmark = [pytest.mark.skipif(shutil.which("gdb") is None, reason="no gdb"), pytest.mark.qemu]


def test_pt_snapshot_and_pt_diff_live(
    qemu_guest: Callable[[str], QemuGuest], tmp_path: Path
) -> None:
    guest = qemu_guest("kaslr-pti")
    dump, user = stop_with_user_snapshot(guest, tmp_path)
    live = tmp_path / "live.elf"
    proc = gdb(
        "set pagination off",
        f"target remote 127.0.0.1:{guest.gdb_port}",
        *marked(f"pt-snapshot {live}", f"pt-diff {live}", f"pt-diff {user} --json"),
        "detach",
        timeout=300,
    )
    snap_out, same, against_user = sections(proc.stdout)
    assert str(live) in snap_out, proc.stderr
    # Taken live, the snapshot walks as the dump of the same stop does.
    assert cli_text(["walk", str(live)]) == cli_text(["walk", str(dump)])
    assert same.rstrip().endswith("no differences"), same
    expected = json.loads(cli_text(["diff", str(user), str(dump), "--json"])[1])
    assert expected["changes"]
    got, _ = json.JSONDecoder().raw_decode(against_user)  # "detach" says a line after it
    assert got["changes"] == expected["changes"]
