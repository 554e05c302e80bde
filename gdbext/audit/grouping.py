"""Grouping findings: one finding per rule, severity, root and cause in one region.

A busybox guest's user code is writable through the kernel's image mapping page by page, and
the ``alias-wx`` rule finds each run of frames on its own: fifteen findings that say one thing.
Findings of one rule, severity, root (``cr3``, ``kernel+user``...) and *cause* (what the
finding is about, without addresses: :attr:`Finding.cause`, or the message with its numbers
masked) whose ranges all lie in one region of Linux's layout (:meth:`Layout.label`, the
regions of ``mm.rst``) become one finding that lists them (:attr:`Finding.ranges`):

>>> from gdbext.audit.model import Finding, Severity
>>> from gdbext.linux.layout import linux_layout
>>> fs = [Finding("r", Severity.LOW, f"bad page {n}", vaddr=n << 12, end=(n + 1) << 12,
...               pages=1, cause="bad page") for n in (1, 2, 5)]
>>> [g] = group_findings(fs, linux_layout(4))
>>> g.message, hex(g.vaddr), hex(g.end), g.pages, len(g.ranges)
('3 ranges in user space: bad page', '0x1000', '0x6000', 3, 3)

A finding without a virtual range, or whose range crosses regions, stays as it is; without a
layout (the target is not known to be Linux) nothing is grouped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from gdbext.audit.model import Finding, Severity
from gdbext.linux.layout import Layout

__all__ = ["cause_of", "group_findings"]

#: (rule, severity, root, cause, region name).
_Key = tuple[str, Severity, str, str, str]

_NUMBER = re.compile(r"\b0x[0-9a-fA-F]+\b|\b\d+\b")


def cause_of(f: Finding) -> str:
    """What ``f`` is about: its :attr:`~Finding.cause`, else its message with every number
    masked (``"1 page at 0x1000"`` and ``"3 page at 0x9000"`` are one cause)."""
    return f.cause or _NUMBER.sub("#", f.message)


def _region(layout: Layout, f: Finding) -> str | None:
    """The name of the region holding all of ``f``'s range, or ``None``."""
    if f.vaddr is None or f.end is None or f.end <= f.vaddr or f.end > 1 << 64:
        return None
    first, last = layout.label(f.vaddr), layout.label(f.end - 1)
    return first.name if first == last else None


def _same(values: Sequence[bool | None]) -> bool | None:
    return values[0] if all(v == values[0] for v in values) else None


def _grouped(members: list[Finding], region: str, cause: str) -> Finding:
    first = members[0]
    vaddrs = [m.vaddr for m in members if m.vaddr is not None]
    ends = [m.end for m in members if m.end is not None]
    return Finding(
        first.rule,
        first.severity,
        f"{len(members)} ranges in {region}: {cause}",
        vaddr=min(vaddrs),
        end=max(ends),
        user=_same([m.user for m in members]),
        writable=_same([m.writable for m in members]),
        executable=_same([m.executable for m in members]),
        root=first.root,
        pages=sum(m.pages for m in members),
        cause=cause,
        ranges=tuple(members),
    )


def group_findings(findings: Sequence[Finding], layout: Layout | None) -> list[Finding]:
    """``findings`` (sorted), with those of one rule, severity, root and cause in one region
    of ``layout`` grouped; each group stands where its first member stood, its members in
    their order. Without ``layout``, ``findings`` as they are."""
    if layout is None:
        return list(findings)
    keyed: list[tuple[_Key | None, Finding]] = []
    members: dict[_Key, list[Finding]] = {}
    for f in findings:
        region = _region(layout, f)
        key = None if region is None else (f.rule, f.severity, f.root, cause_of(f), region)
        keyed.append((key, f))
        if key is not None:
            members.setdefault(key, []).append(f)
    out: list[Finding] = []
    for key, f in keyed:
        if key is None or len(members[key]) == 1:
            out.append(f)
        elif members[key][0] is f:
            _, _, _, cause, region = key
            out.append(_grouped(members[key], region, cause))
    return out
