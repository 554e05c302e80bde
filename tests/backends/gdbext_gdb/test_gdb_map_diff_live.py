"""GDB's ``pt-map FILE --diff SNAPSHOT`` on a live guest: the page draws what the command
line's ``map SNAPSHOT --diff DUMP`` draws for a dump of the same stop (the snapshot is the old
table, the live one the new), every range with the same change state."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support.cli import cli_text
from support.debuggers import gdb, marked
from support.diffpair import stop_with_user_snapshot
from support.mappage import decoded_ranges, page_data

from gdbext.errors import EXIT_OK

if TYPE_CHECKING:
    from qemu_guest import QemuGuest

pytestmark = [pytest.mark.skipif(shutil.which("gdb") is None, reason="no gdb"), pytest.mark.qemu]


def test_pt_map_diff_live(qemu_guest: Callable[[str], QemuGuest], tmp_path: Path) -> None:
    guest = qemu_guest("kaslr-pti")
    dump, user = stop_with_user_snapshot(guest, tmp_path)
    live_page, dump_page = tmp_path / "live.html", tmp_path / "dump.html"
    proc = gdb(
        "set pagination off",
        f"target remote 127.0.0.1:{guest.gdb_port}",
        *marked(f"pt-map {live_page} --diff {user}"),
        "detach",
        timeout=300,
    )
    assert live_page.exists(), proc.stdout + proc.stderr
    assert cli_text(["map", str(user), "--diff", str(dump), "-o", str(dump_page)])[0] == EXIT_OK
    live, offline = page_data(live_page.read_text()), page_data(dump_page.read_text())
    assert live["diff"]["count"] > 0 and live["diff"]["old"] == str(user)
    assert live["diff"]["changes"] == offline["diff"]["changes"]
    ranges = decoded_ranges(live)
    assert ranges == decoded_ranges(offline)
    assert {r["state"] for r in ranges} >= {"", "changed"}
