"""``diff``: hand-made changes between two simulated machines come out as exactly those
changes, merged into ranges; a table diffed with itself is empty."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from support.cli import cli_text
from support.diffpair import BASE, KERN, changed_machine, machine
from support.diffpair import core as _core
from support.scenario import mapping

from gdbext import cli
from gdbext.errors import EXIT_BAD_INPUT, EXIT_NOT_FOUND, EXIT_OK
from gdbext.flags import GLOBAL
from gdbext.frontend.diff import diff_tables
from gdbext.x86.diff import ADDED, CHANGED, REMOVED
from gdbext_sim.scenario import SimMachine, build_machine


def test_exactly_the_changes_made() -> None:
    changes = diff_tables(machine(BASE).page_table, changed_machine().page_table)
    got = [(c.kind, c.start, c.end, c.what) for c in changes]
    assert got == [
        (CHANGED, 0x400000, 0x404000, ("permissions", "flags")),
        (REMOVED, 0x600000, 0x602000, ()),
        (ADDED, 0x800000, 0x801000, ()),
        (CHANGED, KERN, KERN + (2 << 20), ("page-size",)),
        (CHANGED, KERN + (4 << 20), KERN + (4 << 20) + 0x1000, ("flags",)),
    ]
    assert changes[-1].flags_changed == GLOBAL
    perm = changes[0]
    assert perm.old is not None and perm.new is not None
    assert (perm.old.writable, perm.new.writable) == (False, True)
    added = changes[2].new
    assert added is not None and added.paddr == 0x300000 and added.user


def test_a_table_diffed_with_itself_is_empty() -> None:
    pt = changed_machine().page_table
    assert diff_tables(pt, pt) == []


def test_scattered_frames_merge_into_one_range() -> None:
    old = machine([])
    new = machine(
        [
            mapping(0x400000 + i * 0x1000, 0x100000 + i * 0x3000, 1, "USER_ACCESSIBLE")
            for i in range(5)
        ]
    )
    (change,) = diff_tables(old.page_table, new.page_table)
    assert (change.kind, change.start, change.end) == (ADDED, 0x400000, 0x405000)
    assert change.new is not None and not change.new.pa_contiguous


def test_cli_text_json_and_exit_status(tmp_path: Path) -> None:
    a = _core(machine(BASE), tmp_path / "a.elf")
    b = _core(changed_machine(), tmp_path / "b.elf")
    status, text = cli_text(["diff", a, b, "--json"])
    assert status == EXIT_NOT_FOUND
    doc = json.loads(text)
    assert doc["counts"] == {ADDED: 1, REMOVED: 1, CHANGED: 3}
    assert doc["changes"][4]["flags_changed"] == ["G"]
    status, text = cli_text(["diff", a, b])
    lines = text.splitlines()
    assert status == EXIT_NOT_FOUND and len(lines) == 6
    assert lines[3].startswith("+ 0x0000000000800000-0x0000000000801000")
    assert "flags +G" in lines[5]
    assert cli_text(["diff", a, a])[0] == EXIT_OK


def test_two_roots_of_one_target(tmp_path: Path) -> None:
    a = machine(BASE)
    path = _core(a, tmp_path / "a.elf")
    root = a.page_table.root
    status, _ = cli_text(["diff", path, "--a-cr3", hex(root), "--b-cr3", hex(root)])
    assert status == EXIT_OK


def test_different_paging_modes_are_one_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _core(machine(BASE), tmp_path / "a.elf")
    b = _core(machine(BASE, levels=5), tmp_path / "b.elf")
    assert cli.main(["diff", a, b]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different paging modes" in err[0]


@pytest.mark.parametrize("name", ["4level", "kaslr-pti", "la57"])
def test_committed_dumps_diffed_with_themselves_are_empty(
    kernel_dump: Callable[[str], Path], name: str
) -> None:
    dump = str(kernel_dump(name))
    status, text = cli_text(["diff", dump, dump])
    assert status == EXIT_OK and text.endswith("no differences\n")


def test_range_and_cache_flags(tmp_path: Path) -> None:
    old = machine(BASE)
    new = machine(
        [
            *BASE[:3],
            mapping(KERN + (4 << 20), 0x800000, 1, "WRITABLE", "NO_EXECUTE", "NO_CACHE"),
            mapping(KERN + (4 << 20) + 0x1000, 0x801000, 2, "WRITABLE", "NO_EXECUTE"),
        ]
    )
    a, b = _core(old, tmp_path / "a.elf"), _core(new, tmp_path / "b.elf")
    status, text = cli_text(["diff", a, b])
    assert status == EXIT_NOT_FOUND
    assert text.splitlines()[1].endswith("flags +PCD")
    # Outside the change's range: equal.
    assert cli_text(["diff", a, b, "--range", "0x400000-0x800000"])[0] == EXIT_OK


ESPFIX = 0xFFFF_FF00_0000_0000


def espfix_like(links: int, *flags: str) -> SimMachine:
    """One page table at ESPFIX, linked again by ``links`` PD entries after it."""
    return build_machine(
        {
            "levels": 4,
            "ram": "64M",
            "mappings": [mapping(ESPFIX, 0x100000, 4, "WRITABLE", *flags)],
            "links": [{"vaddr": hex(ESPFIX + (2 << 20)), "level": 2, "count": links,
                       "table_of": hex(ESPFIX)}],
        }
    )  # fmt: skip


def test_aliases_are_compared_as_aliases() -> None:
    # Fewer links: the links gone are one removed alias range, not a line per page.
    (gone,) = diff_tables(espfix_like(511).page_table, espfix_like(255).page_table)
    assert (gone.kind, gone.start, gone.end) == (REMOVED, ESPFIX + (256 << 21), ESPFIX + (1 << 30))
    assert gone.old is not None and gone.old.is_alias and gone.old.first_vaddr == ESPFIX
    # The shared table's leaves made non-executable: one change where it was first walked;
    # the 511 links to it map those same leaves and add nothing.
    (nx,) = diff_tables(espfix_like(511).page_table, espfix_like(511, "NO_EXECUTE").page_table)
    assert (nx.kind, nx.start, nx.end, nx.what) == (
        CHANGED, ESPFIX, ESPFIX + 0x4000, ("permissions", "flags"),
    )  # fmt: skip


def test_one_table_alone_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _core(machine(BASE), tmp_path / "a.elf")
    assert cli.main(["diff", a]) == EXIT_BAD_INPUT
    assert "diff needs a second target B" in capsys.readouterr().err
    assert cli.main(["diff", a, "--a-user-pgd"]) in (EXIT_OK, EXIT_NOT_FOUND)
