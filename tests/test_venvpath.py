"""What a debugger's entry script puts on ``sys.path`` (:mod:`gdbext.venvpath`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gdbext.venvpath import Located, activate


def test_the_checkout_runs_its_own_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An environment whose editable install names another checkout (a ``.pth``), with this
    checkout already on the path (PYTHONPATH): this checkout's code comes first."""
    checkout, other = tmp_path / "here", tmp_path / "other"
    for root in (checkout, other):
        (root / "backends").mkdir(parents=True)
    site_dir = tmp_path / "venv" / "site-packages"
    site_dir.mkdir(parents=True)
    (site_dir / "editable.pth").write_text(f"{other}\n{other / 'backends'}\n")
    debugger_dir = str(tmp_path / "debugger-python")
    monkeypatch.setattr(sys, "path", [debugger_dir, str(checkout), "/usr/lib/python3"])
    found = Located(str(checkout), str(tmp_path / "venv"), str(site_dir), False, "fix")
    activate(found, keep_first=[debugger_dir])
    first = [str(checkout), str(checkout / "backends"), debugger_dir, str(site_dir)]
    assert sys.path[:4] == first
    assert sys.path.index(str(other)) > 3
    assert sys.path.count(str(checkout)) == 1
    activate(found, keep_first=[debugger_dir])  # again: nothing changes
    assert sys.path[:4] == first
