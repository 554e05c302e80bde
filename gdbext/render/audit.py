"""Output of ``audit``: text (one line per finding, evidence indented under it, the kernel's
W+X verdict lines, a summary line) and JSON.

Text, one finding (one line, shown here on two)::

    high      wx  0xffffffff81000000-0xffffffff81001000 -> 0x1000000-0x1001000  rwx kern
        cr3  1 kernel page writable and executable
        PML4[511] @0x1c0d000 = 0x1c0f063
        ...
    x86/mm: Checked W+X mappings: FAILED, 1 W+X pages found.
    audit: 1 finding (high 1) from 3 rules

The permissions are the effective ones, as ``walk`` prints them (``rwx``/``r-x``...,
``user``/``kern``); the physical range is ``0xSTART-0xEND``, or ``0xSTART...`` when the
frames are not contiguous (alone, ``-> 0xSTART-0xEND``, for a finding about frames with no
virtual address: a table outside RAM). JSON::

    {"findings": [{"rule", "severity", "vaddr", "end", "paddr", "user", "writable",
     "executable", "message", "paddr_end", "root", "pages", "evidence"}], "summary": {...}}

with addresses as ``"0x..."`` strings (``null`` when unknown), keys in that order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from gdbext.audit.model import AuditRule, Finding, Severity

if TYPE_CHECKING:  # the engine (walks, spans) loads only when an audit runs
    from gdbext.audit.engine import AuditResult


def _hex(value: int | None) -> str | None:
    return None if value is None else f"0x{value:x}"


def finding_json(f: Finding) -> dict[str, Any]:
    """One finding as a JSON object (key order fixed)."""
    return {
        "rule": f.rule,
        "severity": str(f.severity),
        "vaddr": _hex(f.vaddr),
        "end": _hex(f.end),
        "paddr": _hex(f.paddr),
        "user": f.user,
        "writable": f.writable,
        "executable": f.executable,
        "message": f.message,
        "paddr_end": _hex(f.paddr_end),
        "root": f.root,
        "pages": f.pages,
        "evidence": list(f.evidence),
    }


def render_audit_json(result: AuditResult) -> Iterator[str]:
    """``{"findings": [...], "summary": {...}}``, indented by two spaces."""
    doc = {"findings": [finding_json(f) for f in result.findings], "summary": result.summary}
    yield from json.dumps(doc, indent=2).splitlines()


def _perms(f: Finding) -> str:
    if f.writable is None and f.executable is None and f.user is None:
        return ""
    w = "w" if f.writable else "-"
    x = "x" if f.executable else "-"
    who = "user" if f.user else "kern"
    return f"r{w}{x} {who}"


def finding_line(f: Finding, rule_width: int) -> str:
    """The finding's one line (without its evidence)."""
    parts = [f"{f.severity!s:<8}", f"{f.rule:<{rule_width}}"]
    pa = None
    if f.paddr is not None:
        pa = f"0x{f.paddr:x}" + (f"-0x{f.paddr_end:x}" if f.paddr_end is not None else "...")
    if f.vaddr is not None or pa is not None:
        where = [] if f.vaddr is None else [f"0x{f.vaddr:016x}"]
        if where and f.end is not None:
            where[0] += f"-0x{f.end:016x}"
        if pa is not None:
            where.append(f"-> {pa}")
        parts.append(" ".join(where))
        perms = _perms(f)
        if perms:
            parts.append(perms)
        parts.append(f.root)
    parts.append(f.message)
    return "  ".join(parts)


def summary_line(result: AuditResult) -> str:
    """``audit: 3 findings (high 1, medium 2) from 9 rules; 1 skipped: heap-contract (...)``."""
    n = len(result.findings)
    counts: dict[Severity, int] = {}
    for f in result.findings:
        counts[f.severity] = counts.get(f.severity, 0) + 1
    text = f"audit: {n} finding{'s' if n != 1 else ''}" if n else "audit: no findings"
    if counts:
        text += " (" + ", ".join(f"{s} {counts[s]}" for s in sorted(counts, reverse=True)) + ")"
    rules = len(result.rules_run)
    text += f" from {rules} rule{'s' if rules != 1 else ''}"
    if result.skipped:
        listed = ", ".join(f"{rule} ({reason})" for rule, reason in result.skipped.items())
        text += f"; {len(result.skipped)} skipped: {listed}"
    return text


def render_audit_text(result: AuditResult) -> Iterator[str]:
    """One line per finding with its evidence indented, EFER.NXE when inferred from the tables
    (``EFER.NXE inferred on: NX bits in use (EFER unknown)``) or not known at all, the W+X
    verdict, the summary line."""
    width = max((len(f.rule) for f in result.findings), default=0)
    for f in result.findings:
        yield finding_line(f, width)
        for line in f.evidence:
            yield f"    {line}"
    if result.nxe is not None and result.nxe.startswith("inferred"):
        yield f"EFER.NXE {result.nxe} (EFER unknown)"
    elif result.nxe is not None and result.nxe.startswith("unknown"):
        yield f"EFER.NXE {result.nxe}"
    wx = result.extra.get("wx")
    if isinstance(wx, list):
        yield from (str(line) for line in wx)
    yield summary_line(result)


def render_rules(rules: Mapping[str, AuditRule], fmt: str) -> Iterator[str]:
    """``--list-rules``: one line per rule (id, default severity, summary), or JSON."""
    if fmt == "json":
        doc = [
            {"id": r.id, "severity": str(r.severity), "summary": r.summary} for r in rules.values()
        ]
        yield from json.dumps(doc, indent=2).splitlines()
        return
    width = max((len(r) for r in rules), default=0)
    for rule in rules.values():
        yield f"{rule.id:<{width}}  {rule.severity!s:<8}  {rule.summary}"
