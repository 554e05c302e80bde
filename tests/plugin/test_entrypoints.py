"""Entry points found by reading the distributions' metadata directly, as importlib.metadata
finds them (compared with it on this environment and on hand-made distributions)."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import pytest

from gdbext.plugin.entrypoints import EntryPoint, entry_points, parse
from gdbext.plugin.hookspecs import ENTRY_POINT_GROUP

TEXT = """\
# a comment
[console_scripts]
gdbext = gdbext.cli:main

[gdbext.plugins]
plain = acme.plugin
attr = acme.plugin : hooks.impl
extras = acme.extra [fast, small]
"""


def reference(group: str, paths: list[str]) -> list[tuple[str, str]]:
    """importlib.metadata's answer: every distribution's entry points of ``group``, in order."""
    return [
        (ep.name, ep.value)
        for dist in importlib.metadata.distributions(path=paths)
        for ep in dist.entry_points
        if ep.group == group
    ]


def test_parse_reads_one_group() -> None:
    assert parse(TEXT, "gdbext.plugins") == [
        EntryPoint("plain", "acme.plugin"),
        EntryPoint("attr", "acme.plugin : hooks.impl"),
        EntryPoint("extras", "acme.extra [fast, small]"),
    ]
    assert parse(TEXT, "console_scripts") == [EntryPoint("gdbext", "gdbext.cli:main")]
    assert parse(TEXT, "nothing") == []


def test_this_environment_as_importlib_metadata_sees_it() -> None:
    ours = [(ep.name, ep.value) for ep in entry_points(ENTRY_POINT_GROUP)]
    assert ours == reference(ENTRY_POINT_GROUP, sys.path)
    assert {"sim", "core", "render", "audit"} <= {name for name, _ in ours}


def test_hand_made_distributions(tmp_path: Path) -> None:
    made = [
        ("b_pkg-1.0.dist-info", TEXT),
        ("a_pkg.egg-info", "[gdbext.plugins]\nz = z\n"),
        ("c_pkg-2.0.dist-info", ""),
    ]
    for name, text in made:
        info = tmp_path / name
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name[:5]}\nVersion: 1\n")
        (info / "entry_points.txt").write_text(text)
    (tmp_path / "nometa.dist-info").mkdir()
    paths = [str(tmp_path), str(tmp_path / "missing")]
    ours = [(ep.name, ep.value) for ep in entry_points("gdbext.plugins", paths)]
    assert ours == reference("gdbext.plugins", paths)
    assert len(ours) == 4


def test_load_names_a_module_or_an_attribute() -> None:
    assert EntryPoint("x", "gdbext.plugin.entrypoints").load() is sys.modules[parse.__module__]
    assert EntryPoint("x", "gdbext.plugin.entrypoints:EntryPoint.load").load() is EntryPoint.load
    assert EntryPoint("x", "gdbext.cli : main [extra]").load() is sys.modules["gdbext.cli"].main
    with pytest.raises(ValueError, match="names no module"):
        EntryPoint("x", "not a module!").load()
