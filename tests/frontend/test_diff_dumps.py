"""``diff`` on the committed dumps of Debian's kernel: the PTI pair's two halves, two
unrelated kernels, ESPFIX's aliases compared as aliases."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from support.cli import cli_text

from gdbext.errors import EXIT_NOT_FOUND, EXIT_OK
from gdbext.frontend.commands import RootOptions, open_page_table
from gdbext.frontend.diff import DiffOptions, diff
from gdbext.x86.diff import ADDED, CHANGED, REMOVED
from gdbext.x86.records import LeafRun
from gdbext_dump.dump import open_dump

HIGH_HALF = 0xFFFF_8000_0000_0000
ESPFIX = (0xFFFF_FF00_0000_0000, 0xFFFF_FF80_0000_0000)


def test_pti_pair_is_the_user_copy_and_the_user_half_nx(
    kernel_dump: Callable[[str], Path],
) -> None:
    target = open_dump(str(kernel_dump("kaslr-pti")))
    result = diff(target, target, DiffOptions(new=RootOptions(user_pgd=True)))
    assert not result.equal and not result.warnings
    assert result.new_root == result.old_root | 0x1000
    user = [c for c in result.changes if c.start < HIGH_HALF]
    kernel = [c for c in result.changes if c.start >= HIGH_HALF]
    # The user half: the same pages, executable only in the user PGD (the kernel PGD's copy
    # of user mappings is NX).
    assert user
    for c in user:
        assert c.kind == CHANGED and c.what == ("permissions",)
        assert c.old is not None and c.new is not None
        assert (c.old.executable, c.new.executable) == (False, True)
        assert (c.old.user, c.old.writable) == (c.new.user, c.new.writable)
    # The kernel half: the user PGD maps a part of it (cpu_entry_area, entry text) and maps
    # it where the kernel PGD does; the rest is absent.
    assert not any(c.kind == ADDED for c in kernel)
    assert all(c.kind == REMOVED or "frame" not in c.what for c in kernel)
    # What the user PGD maps in the kernel half translates alike in the kernel PGD: checked
    # on the tables themselves, page by page.
    a = open_page_table(target)
    b = open_page_table(target, RootOptions(user_pgd=True))
    mapped = [r for r in b.iter_runs() if type(r) is LeafRun and r.vaddr >= HIGH_HALF]
    assert mapped
    for run in mapped:
        for va in range(run.vaddr, run.end, 0x1000 * 64):
            assert a.translate(va).paddr == b.translate(va).paddr


def test_cli_pti_pair_exit_status_and_json(kernel_dump: Callable[[str], Path]) -> None:
    dump = str(kernel_dump("kaslr-pti"))
    status, text = cli_text(["diff", dump, "--b-user-pgd", "--json"])
    assert status == EXIT_NOT_FOUND
    doc = json.loads(text)
    regions = {c["region"] for c in doc["changes"] if c["kind"] == CHANGED}
    assert "user space" in regions
    # The same pair, named the other way: B's own root and A's user half.
    assert cli_text(["diff", dump, "--a-user-pgd", "--b-user-pgd"])[0] == EXIT_OK


def test_unrelated_kernels_are_said_and_still_diffed(kernel_dump: Callable[[str], Path]) -> None:
    old = open_dump(str(kernel_dump("4level")))
    new = open_dump(str(kernel_dump("kaslr-pti")))
    result = diff(old, new)
    assert any("unrelated address" in w for w in result.warnings)
    assert result.changes
    # ESPFIX's 65,536-fold alias: its first table's leaves (32 pages, each moved) compared
    # where that table was first walked; the links to it, equal aliases, add no line.
    espfix = [c for c in result.changes if ESPFIX[0] <= c.start < ESPFIX[1]]
    first_table = (0xFFFF_FF31_0000_0000, 0xFFFF_FF31_0020_0000)
    assert 0 < len(espfix) <= 2 * 32
    assert all(first_table[0] <= c.start < c.end <= first_table[1] for c in espfix)


def test_pt_snapshot_and_pt_diff_in_a_debugger_session(
    kernel_dump: Callable[[str], Path], tmp_path: Path
) -> None:
    """GDB's and LLDB's ``pt-snapshot FILE`` and ``pt-diff FILE`` (the same declarations, read
    by the session): the snapshot of the current table diffs equal with it; against another
    root's snapshot the changes are the command line's, FILE as A."""
    import io

    from gdbext.plugin.host import Host
    from gdbext.session import Session

    dump = str(kernel_dump("kaslr-pti"))
    host = Host.create()
    session = Session(host)
    session.backend(["core", dump], io.StringIO())
    snap = str(tmp_path / "now.elf")
    user = str(tmp_path / "user.elf")
    assert session.run("pt-snapshot", [snap], io.StringIO()) == EXIT_OK
    assert session.run("pt-snapshot", ["--user-pgd", "-o", user], io.StringIO()) == EXIT_OK
    out = io.StringIO()
    assert session.run("pt-diff", [snap], out) == EXIT_OK
    assert out.getvalue().rstrip().endswith("no differences")
    out = io.StringIO()
    assert session.run("pt-diff", [user, "--json"], out) == EXIT_NOT_FOUND
    expected = json.loads(cli_text(["diff", user, dump, "--json"])[1])
    assert json.loads(out.getvalue())["changes"] == expected["changes"]
