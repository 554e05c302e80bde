"""The audit groups findings of one rule, severity, root and cause in one region of Linux's
layout into one finding that lists the ranges; text lines stay within 160 columns.

The simulated machines are built here, so which pages are findings is known by hand; the
committed dumps' goldens (``fixtures/kernels/NAME.audit.json``, regenerated with
``fixtures/audit_goldens.py`` for the grouping) hold the real kernels' groups.
"""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from support.paths import KERNELS
from support.scenario import mapping as m

from gdbext import cli
from gdbext.audit.engine import run_audit
from gdbext.audit.grouping import group_findings
from gdbext.audit.model import Finding, Severity
from gdbext.audit.options import AuditOptions
from gdbext.audit.rules.alias_wx import RULES as ALIAS_WX
from gdbext.linux.layout import linux_layout
from gdbext.plugin.facts import KernelFacts
from gdbext.plugin.host import Host
from gdbext.plugin.target import Target
from gdbext.render.audit import render_audit_json, render_audit_text
from gdbext_sim.scenario import build_machine

DIRECT = 0xFFFF_8880_0000_0000
VMALLOC = 0xFFFF_C900_0000_0000


def target(linux: bool) -> Target:
    """User code at 0x400000-0x408000 (frames 0x2000000...), two of its pages, 0x401000 and
    0x405000, writable through vmalloc mappings: two low ``alias-wx`` findings in user space."""
    doc = {
        "levels": 4,
        "ram": "64M",
        "mappings": [
            m(DIRECT, 0, 32, "WRITABLE", "NO_EXECUTE", "GLOBAL", size="2M"),
            m(0x400000, 0x2000000, 8, "USER_ACCESSIBLE"),
            m(VMALLOC, 0x2001000, 1, "WRITABLE", "NO_EXECUTE"),
            m(VMALLOC + 0x10000, 0x2005000, 1, "WRITABLE", "NO_EXECUTE"),
        ],
    }
    t = build_machine(doc).to_target()
    return dataclasses.replace(t, facts=KernelFacts(os="linux")) if linux else t


def test_findings_of_one_cause_in_one_region_become_one() -> None:
    plain = run_audit(target(False), AuditOptions(), ALIAS_WX)
    assert [(f.vaddr, f.end, f.severity) for f in plain.findings] == [
        (0x401000, 0x402000, Severity.LOW),
        (0x405000, 0x406000, Severity.LOW),
    ]
    grouped = run_audit(target(True), AuditOptions(), ALIAS_WX)
    [g] = grouped.findings
    assert (g.rule, g.severity, g.root) == ("alias-wx", Severity.LOW, "cr3")
    assert (g.vaddr, g.end, g.pages) == (0x401000, 0x406000, 2)
    assert g.message == (
        "2 ranges in user space: user code writable through a kernel mapping outside the direct map"
    )
    # The ranges are the findings as they were, evidence and all.
    assert list(g.ranges) == plain.findings
    assert grouped.summary["findings"] == 1
    # JSON keeps every range inside the group; a finding that is no group has none.
    doc = json.loads("\n".join(render_audit_json(grouped)))
    [f] = doc["findings"]
    assert [(r["vaddr"], r["paddr"], r["paddr_end"]) for r in f["ranges"]] == [
        ("0x401000", "0x2001000", "0x2002000"),
        ("0x405000", "0x2005000", "0x2006000"),
    ]
    assert f["ranges"][0]["evidence"] == list(plain.findings[0].evidence)
    assert "ranges" not in f["ranges"][0]
    assert json.loads("\n".join(render_audit_json(plain)))["findings"][0]["ranges"] == []
    # Text: the group's line, its cause, a line per range, the first range's evidence.
    lines = list(render_audit_text(grouped))
    assert lines[0] == (
        "low       alias-wx  0x0000000000401000-0x0000000000406000  r-x user  cr3  "
        "2 ranges in user space"
    )
    assert lines[1] == "    user code writable through a kernel mapping outside the direct map"
    assert lines[2].startswith("    0x0000000000401000-0x0000000000402000 -> 0x2001000-0x2002000  ")
    evidence = "\n".join(f"        {e}" for e in g.ranges[0].evidence)
    assert evidence in "\n".join(lines)
    assert "\n".join(f"        {e}" for e in g.ranges[1].evidence) not in "\n".join(lines)
    assert any(line.startswith("    0x0000000000405000-0x0000000000406000 ") for line in lines)


def test_far_apart_ranges_of_one_region_group_and_other_regions_stay_apart() -> None:
    """User code at 0x400000 and at 0x7f0000000000, both aliased: one region (user space),
    one group; the same cause in the direct map and in vmalloc space: two findings."""
    doc = {
        "levels": 4,
        "ram": "64M",
        "mappings": [
            m(DIRECT, 0, 32, "WRITABLE", "NO_EXECUTE", "GLOBAL", size="2M"),
            m(0x400000, 0x2000000, 2, "USER_ACCESSIBLE"),
            m(0x7F0000000000, 0x2100000, 2, "USER_ACCESSIBLE"),
            m(VMALLOC, 0x2001000, 1, "WRITABLE", "NO_EXECUTE"),
            m(VMALLOC + 0x10000, 0x2101000, 1, "WRITABLE", "NO_EXECUTE"),
        ],
    }
    t = dataclasses.replace(build_machine(doc).to_target(), facts=KernelFacts(os="linux"))
    found = run_audit(t, AuditOptions(), ALIAS_WX).findings
    assert [(f.vaddr, f.end, len(f.ranges)) for f in found] == [(0x401000, 0x7F0000002000, 2)]
    same = [
        Finding("r", Severity.INFO, f"page {n}", vaddr=va, end=va + 4096, cause="page")
        for n, va in enumerate((DIRECT + 0x1000, DIRECT + 0x9000, VMALLOC + 0x1000))
    ]
    grouped = group_findings(same, linux_layout(4))
    assert [(f.vaddr, len(f.ranges)) for f in grouped] == [
        (DIRECT + 0x1000, 2),
        (VMALLOC + 0x1000, 0),
    ]
    assert grouped[0].message == "2 ranges in direct mapping of all physical memory: page"
    # A range across two regions, or no layout (not Linux): nothing grouped.
    across = [*same[:2], dataclasses.replace(same[0], end=VMALLOC + 0x2000)]
    assert [len(f.ranges) for f in group_findings(across, linux_layout(4))] == [2, 0]
    assert group_findings(same, None) == same


@pytest.mark.parametrize("name", ["4level", "kaslr-pti", "la57"])
def test_audit_text_of_the_dumps_fits_160_columns(
    kernel_dump: Callable[[str], Path], name: str
) -> None:
    out = io.StringIO()
    status = cli.run(["audit", str(kernel_dump(name))], Host.create(), out)
    assert status == 0
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 160
    golden = json.loads((KERNELS / f"{name}.audit.json").read_text())
    # The busybox guest's user code, writable through the kernel image mapping page by page:
    # one low alias-wx finding, its ranges all in user space.
    [low] = [f for f in golden["findings"] if f["severity"] == "low"]
    assert low["rule"] == "alias-wx" and len(low["ranges"]) >= 13
    assert all(int(r["end"], 16) <= 1 << 47 for r in low["ranges"])
    assert low["message"].startswith(f"{len(low['ranges'])} ranges in user space: user code")
    head = [line for line in lines if line.startswith("low")]
    assert head == [
        f"low       alias-wx           {int(low['vaddr'], 16):#018x}-{int(low['end'], 16):#018x}"
        f"  r-x user  {low['root']}  {len(low['ranges'])} ranges in user space"
    ]
