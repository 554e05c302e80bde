"""The audit of each committed kernel dump equals its golden, ``fixtures/kernels/NAME.audit.json``.

The goldens are ``gdbext audit DUMP --json`` as written by ``fixtures/audit_goldens.py``
(regenerate them there after a deliberate change of a rule, and read the diff). The text output
must agree with them: one unindented line per finding with its severity and rule, in the JSON's
order, the line saying how EFER.NXE is known (inferred: the dumps have no EFER), the kernel's
W+X line(s) of the JSON summary, and the summary line built here from the
JSON summary in the wording ``audit: 3 findings (high 1, medium 2) from 9 rules; 1 skipped:
heap-contract (reason)``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from audit_goldens import audit_output, fixture_names, golden_path

NAMES = fixture_names()


def summary_line(summary: dict[str, Any]) -> str:
    """The text output's last line, from the JSON summary.

    >>> summary_line({"findings": 0, "severities": {"high": 0}, "rules_run": ["wx"],
    ...               "skipped": {}})
    'audit: no findings from 1 rule'
    >>> summary_line({"findings": 3, "severities": {"high": 1, "medium": 2, "low": 0},
    ...               "rules_run": list("abcdefghi"), "skipped": {"heap-contract": "no heap"}})
    'audit: 3 findings (high 1, medium 2) from 9 rules; 1 skipped: heap-contract (no heap)'
    """
    n = summary["findings"]
    rules = len(summary["rules_run"])
    counts = ", ".join(f"{sev} {k}" for sev, k in summary["severities"].items() if k)
    line = "audit: "
    line += f"{n} finding{'s' if n != 1 else ''} ({counts})" if n else "no findings"
    line += f" from {rules} rule{'s' if rules != 1 else ''}"
    skipped = summary["skipped"]
    if skipped:
        why = ", ".join(f"{rule} ({reason})" for rule, reason in skipped.items())
        line += f"; {len(skipped)} skipped: {why}"
    return line


def test_every_fixture_has_a_golden() -> None:
    assert NAMES == ["4level", "kaslr-pti", "la57"]
    for name in NAMES:
        assert golden_path(name).is_file(), f"run python fixtures/audit_goldens.py {name}"


@pytest.mark.parametrize("name", NAMES)
def test_json_equals_golden(kernel_dump: Callable[[str], Path], name: str) -> None:
    status, out = audit_output(kernel_dump(name), "--json")
    assert status == 0
    golden = golden_path(name).read_text()
    assert json.loads(out) == json.loads(golden)
    assert out == golden  # key order and layout too


@pytest.mark.parametrize("name", NAMES)
def test_text_agrees_with_golden(kernel_dump: Callable[[str], Path], name: str) -> None:
    golden = json.loads(golden_path(name).read_text())
    status, out = audit_output(kernel_dump(name))
    assert status == 0
    lines = out.splitlines()
    # The summary line; when it would be wider than 160 columns, each skipped rule follows on
    # an indented line of its own.
    at = max(i for i, line in enumerate(lines) if line.startswith("audit: "))
    skipped = ", ".join(line.strip() for line in lines[at + 1 :])
    assert f"{lines[at]} {skipped}".strip() == summary_line(golden["summary"])
    assert all(len(line) <= 160 for line in lines)
    lines = lines[: at + 1]
    assert [line for line in lines if line.startswith("x86/mm: ")] == golden["summary"]["wx"]
    # QEMU's ELF dumps carry no EFER: NXE is inferred from the tables (NX bits in use), and
    # the text says so in one line before the W+X verdict.
    nxe = golden["summary"]["nxe"]
    assert nxe.startswith("inferred on: ")
    assert [line for line in lines if line.startswith("EFER.NXE ")] == [
        f"EFER.NXE {nxe} (EFER unknown)"
    ]
    findings = [
        line.split()[:2]
        for line in lines[:-1]
        if line and not line[0].isspace() and not line.startswith(("x86/mm: ", "EFER.NXE "))
    ]
    assert findings == [[f["severity"], f["rule"]] for f in golden["findings"]]
