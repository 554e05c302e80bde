"""LLDB's ``pt-snapshot FILE``, ``pt-diff FILE`` and ``pt-map FILE --diff SNAPSHOT`` on a live
guest (``pt-connect`` through its relay): the snapshot taken live walks as a dump of the same
stop; a snapshot of the PTI user half diffs against the live table, and is drawn against it,
as the command line diffs and draws it against that dump."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support import lldbrun
from support.cli import cli_text
from support.diffpair import stop_with_user_snapshot
from support.mappage import decoded_ranges, page_data

from gdbext.errors import EXIT_OK

if TYPE_CHECKING:
    from qemu_guest import QemuGuest

pytestmark = [pytest.mark.qemu, pytest.mark.skipif(not lldbrun.available(), reason="no lldb")]


def test_pt_snapshot_diff_and_map_diff_live(
    qemu_guest: Callable[[str], QemuGuest], tmp_path: Path
) -> None:
    guest = qemu_guest("kaslr-pti")
    dump, user = stop_with_user_snapshot(guest, tmp_path)
    live, live_page, dump_page = (tmp_path / n for n in ("live.elf", "live.html", "dump.html"))
    run = lldbrun.run(
        [
            f"pt-snapshot {live}",
            f"pt-diff {live}",
            f"pt-diff {user} --json",
            f"pt-map {live_page} --diff {user}",
        ],
        port=guest.gdb_port,
    )
    snap_out, same, against_user, _ = run.outputs()
    assert str(live) in snap_out, [r.err for r in run.results]
    # Taken live, the snapshot walks as the dump of the same stop does.
    assert cli_text(["walk", str(live)]) == cli_text(["walk", str(dump)])
    assert same.rstrip().endswith("no differences"), same
    expected = json.loads(cli_text(["diff", str(user), str(dump), "--json"])[1])
    assert expected["changes"]
    assert json.loads(against_user)["changes"] == expected["changes"]
    # The page: what the command line draws for the snapshot against the dump.
    assert cli_text(["map", str(user), "--diff", str(dump), "-o", str(dump_page)])[0] == EXIT_OK
    drawn, offline = page_data(live_page.read_text()), page_data(dump_page.read_text())
    assert drawn["diff"]["count"] > 0 and drawn["diff"]["old"] == str(user)
    assert drawn["diff"]["changes"] == offline["diff"]["changes"]
    assert decoded_ranges(drawn) == decoded_ranges(offline)
    assert run.report["detached"]
