"""Output of ``audit``: text (a line per finding, its detail and evidence indented under it,
the kernel's W+X verdict lines, a summary line) and JSON.

Text, one finding (its line shown here on two)::

    high      wx  0xffffffff81000000-0xffffffff81001000 -> 0x1000000-0x1001000  rwx kern  cr3
                  1 kernel page writable and executable
        PML4[511] @0x1c0d000 = 0x1c0f063
        ...
    x86/mm: Checked W+X mappings: FAILED, 1 W+X pages found.
    audit: 1 finding (high 1) from 3 rules

No line is wider than :data:`WIDTH`: a finding's line that would be ends its message at the
first ``": "`` and the rest follows, indented, and long lines continue on indented lines. The
permissions are the effective ones, as ``walk`` prints them (``rwx``/``r-x``...,
``user``/``kern``); the physical range is ``0xSTART-0xEND``, or ``0xSTART...`` when the
frames are not contiguous (alone, ``-> 0xSTART-0xEND``, for a finding about frames with no
virtual address: a table outside RAM).

A grouped finding (:mod:`gdbext.audit.grouping`: one rule, severity, root and cause in one
region) spans its ranges, says how many and where (``15 ranges in user space``), its cause
under it, then one indented line per range with that range's own message, and the evidence of
the first range (JSON has every range's). JSON::

    {"findings": [{"rule", "severity", "vaddr", "end", "paddr", "user", "writable",
     "executable", "message", "paddr_end", "root", "pages", "evidence", "ranges"}],
     "summary": {...}}

with addresses as ``"0x..."`` strings (``null`` when unknown), keys in that order; ``ranges``
holds a grouped finding's ranges as findings (without ``ranges``), and is empty otherwise.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from gdbext.audit.model import Finding, Severity
from gdbext.audit.rule import AuditRule
from gdbext.render.common import PLAIN, Style
from gdbext.units import plural

if TYPE_CHECKING:  # the engine (walks, spans) loads only when an audit runs
    from gdbext.audit.engine import AuditResult


def _hex(value: int | None) -> str | None:
    return None if value is None else f"0x{value:x}"


#: The widest line of the text output (a longer one continues on indented lines).
WIDTH = 160


def finding_json(f: Finding, *, nested: bool = False) -> dict[str, Any]:
    """One finding as a JSON object (key order fixed); ``nested``: a range of a group (no
    ``ranges`` key)."""
    doc: dict[str, Any] = {
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
    if not nested:
        doc["ranges"] = [finding_json(r, nested=True) for r in f.ranges]
    return doc


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


def _where(f: Finding) -> list[str]:
    """The virtual range, ``-> `` the physical one, as the finding's line shows them."""
    pa = None
    if f.paddr is not None:
        pa = f"0x{f.paddr:x}" + (f"-0x{f.paddr_end:x}" if f.paddr_end is not None else "...")
    where = [] if f.vaddr is None else [f"0x{f.vaddr:016x}"]
    if where and f.end is not None:
        where[0] += f"-0x{f.end:016x}"
    if pa is not None:
        where.append(f"-> {pa}")
    return where


def finding_line(f: Finding, rule_width: int) -> str:
    """The finding's one line (without its evidence), however wide."""
    parts = [f"{f.severity!s:<8}", f"{f.rule:<{rule_width}}"]
    where = _where(f)
    if where:
        parts.append(" ".join(where))
        perms = _perms(f)
        if perms:
            parts.append(perms)
        parts.append(f.root)
    parts.append(f.message)
    return "  ".join(parts)


def _wrap(text: str, indent: str, more: str = "  ") -> list[str]:
    """``text`` at ``indent``, continued at ``indent + more``, within :data:`WIDTH`."""
    return textwrap.wrap(
        text,
        WIDTH,
        initial_indent=indent,
        subsequent_indent=indent + more,
        break_on_hyphens=False,
        break_long_words=False,
    ) or [indent]


def finding_lines(f: Finding, rule_width: int, style: Style = PLAIN) -> Iterator[str]:
    """The finding's line, its detail and evidence indented under it, within :data:`WIDTH`;
    W+X permissions in ``style``'s colour."""
    line = finding_line(f, rule_width)
    rest = ""
    if len(line) <= WIDTH:
        first = [line]
    else:
        head, _, rest = f.message.partition(": ")
        first = _wrap(line[: len(line) - len(f.message)] + head, "", "    ")
    if f.writable and f.executable and f.vaddr is not None:
        # The permissions' word follows the severity, the rule and the range (and ``->`` and
        # the physical range, when known).
        first = style.paint_word(first, 3 + 2 * (f.paddr is not None), style.wx)
    yield from first
    if rest:
        yield from _wrap(rest, "    ")
    if f.ranges and f.cause and not f.message.endswith(f": {f.cause}"):
        yield from _wrap(f.cause, "    ")
    for i, r in enumerate(f.ranges):
        detail = r.message.removeprefix(f"{f.cause}: ") if f.cause else r.message
        yield from _wrap("  ".join([" ".join(_where(r)), detail]), "    ")
        if i == 0:
            for ev in r.evidence:
                yield from _wrap(ev, "        ")
    if len(f.ranges) > 1:
        others = len(f.ranges) - 1
        yield f"    (the evidence of the other {others} range{plural(others)}: --json)"
    for ev in f.evidence:
        yield from _wrap(ev, "    ")


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


def render_audit_text(result: AuditResult, style: Style = PLAIN) -> Iterator[str]:
    """A line per finding with its detail and evidence indented, EFER.NXE when inferred from
    the tables (``EFER.NXE inferred on: NX bits in use (EFER unknown)``) or not known at all,
    the W+X verdict, the summary line (each skipped rule on a line of its own when it would
    be too wide). ``style``: W+X permissions of the findings."""
    width = max((len(f.rule) for f in result.findings), default=0)
    for f in result.findings:
        yield from finding_lines(f, width, style)
    if result.nxe is not None and result.nxe.startswith("inferred"):
        yield f"EFER.NXE {result.nxe} (EFER unknown)"
    elif result.nxe is not None and result.nxe.startswith("unknown"):
        yield f"EFER.NXE {result.nxe}"
    wx = result.extra.get("wx")
    if isinstance(wx, list):
        yield from (str(line) for line in wx)
    line = summary_line(result)
    if len(line) <= WIDTH or not result.skipped:
        yield line
        return
    # Too wide: each skipped rule and its reason on a line of its own.
    yield line.split("; ")[0] + f"; {len(result.skipped)} skipped:"
    for rule, reason in result.skipped.items():
        yield from _wrap(f"{rule} ({reason})", "    ")


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
