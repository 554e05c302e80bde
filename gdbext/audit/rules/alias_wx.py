"""Rule ``alias-wx``: frames writable at one virtual address and executable at another.

W^X holds per mapping in Linux's ``CONFIG_DEBUG_WX`` check (ptdump, rule ``wx``), which looks
at one virtual address at a time: code mapped read-only and executable passes even when the
same physical frames are writable through another mapping, a direct-map alias say. That is
the bypass this rule finds. Permissions are the *effective* ones (NX counts only with
EFER.NXE); a frame mapped read-only elsewhere (Linux's ESPFIX stacks, linked thousands of
times, read-only) is not a finding, nor is a page writable and executable at one address
only (rule ``wx``'s job).

It works on intervals: each view's frame index (leaf runs and collapsed aliases as spans,
sorted by physical address) is swept once, writable spans against executable ones
(:func:`gdbext.audit.frames.overlap_pairs`), never page by page. Checked in the selected table
and, under PTI, in both halves of the pair, each on its own.

Severities (the default ``high`` refined by who may execute and who may write):

- kernel code (executable, supervisor-only) writable elsewhere: ``high``; writable from user
  mode: ``critical``;
- user code writable through another user mapping (a JIT's double mapping, or a bypass of
  user-space W^X): ``medium``;
- user code writable through a supervisor mapping other than the direct map: ``low`` (Linux
  without PTI leaves the kernel image mapping of freed ``__init`` memory writable, and that
  memory is reused for user pages: the ``4level`` and ``la57`` dumps show it);
- user code writable through the direct map: not a finding (the direct map holds every frame
  of RAM, so that the kernel can fill the page cache).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from gdbext.audit.context import AuditContext, AuditView, LeafSpan
from gdbext.audit.frames import (
    audited_views,
    is_offset_mapping,
    mapping_lines,
    overlap_pairs,
    perm_key,
    places,
    where,
)
from gdbext.audit.model import Finding, Severity
from gdbext.geometry import SIZE_4K

__all__ = ["AliasWxRule", "WxAlias", "wx_aliases"]


@dataclass(frozen=True, slots=True)
class WxAlias:
    """The frames ``[paddr, paddr_end)``, writable through ``writer`` and executable through
    ``executor`` at another virtual address (``writer is executor`` when one writable and
    executable span is mapped several times by a collapsed alias)."""

    writer: LeafSpan
    executor: LeafSpan
    paddr: int
    paddr_end: int


def wx_aliases(view: AuditView) -> Iterator[WxAlias]:
    """Every writable span and executable span of ``view`` that share frames at different
    virtual addresses, by physical address: one sweep over the view's frame index."""
    spans = view.frame_index.spans
    writable = [s for s in spans if s.run.writable]
    executable = [s for s in spans if s.run.executable]
    for w, x, lo, hi in overlap_pairs(writable, executable):
        if w is x and w.copies == 1:
            continue  # writable and executable at one address: rule wx
        yield WxAlias(w, x, lo, hi)


def _classify(alias: WxAlias, direct_map_base: int | None) -> tuple[Severity, str] | None:
    """The severity of ``alias`` and what it is, or ``None`` when it is no finding."""
    w, x = alias.writer.run, alias.executor.run
    if not x.user:
        if w.user:
            return Severity.CRITICAL, "kernel code writable from user mode through an alias"
        return Severity.HIGH, "kernel code writable through an alias"
    if w.user:
        return Severity.MEDIUM, "user code writable through another user mapping"
    if is_offset_mapping(alias.writer, direct_map_base):
        return None
    return Severity.LOW, "user code writable through a kernel mapping outside the direct map"


@dataclass
class _Group:
    """Frames ``[paddr, paddr_end)`` executable through ``executors`` and writable through
    ``writers`` (one finding)."""

    severity: Severity
    what: str
    paddr: int
    paddr_end: int
    writers: list[LeafSpan] = field(default_factory=list)
    executors: list[LeafSpan] = field(default_factory=list)

    def add(self, alias: WxAlias) -> None:
        if all(s is not alias.writer for s in self.writers):
            self.writers.append(alias.writer)
        if all(s is not alias.executor for s in self.executors):
            self.executors.append(alias.executor)

    def single(self) -> bool:
        """One writer, one other executor, neither mapped again by an alias."""
        (w, *more_w), (x, *more_x) = self.writers, self.executors
        return not more_w and not more_x and w is not x and not w.reps and not x.reps


def _groups(found: list[tuple[WxAlias, Severity, str]]) -> list[_Group]:
    """One group per shared frame range and kind (every mapping of those frames that takes
    part, e.g. the copies of a table linked many times, in one finding); then groups of one
    plain writer and executor that continue each other (contiguous frames, the same VA - PA
    offsets, the same permissions) merged."""
    by_key: dict[tuple[object, ...], _Group] = {}
    for alias, severity, what in found:
        key: tuple[object, ...] = (
            alias.paddr,
            alias.paddr_end,
            severity,
            what,
            perm_key(alias.writer),
            perm_key(alias.executor),
        )
        group = by_key.get(key)
        if group is None:
            group = by_key[key] = _Group(severity, what, alias.paddr, alias.paddr_end)
        group.add(alias)
    merged: list[_Group] = []
    last: dict[tuple[object, ...], _Group] = {}
    for group in sorted(by_key.values(), key=lambda g: (g.paddr, g.paddr_end)):
        if not group.single():
            merged.append(group)
            continue
        w, x = group.writers[0], group.executors[0]
        run_key: tuple[object, ...] = (
            group.severity,
            group.what,
            w.vaddr - w.paddr,
            x.vaddr - x.paddr,
            perm_key(w),
            perm_key(x),
        )
        prev = last.get(run_key)
        if prev is not None and prev.paddr_end == group.paddr:
            prev.paddr_end = group.paddr_end
            continue
        last[run_key] = group
        merged.append(group)
    return merged


class AliasWxRule:
    id = "alias-wx"
    severity = Severity.HIGH
    summary = "frames writable at one virtual address and executable at another (W^X bypass)"

    def check(self, ctx: AuditContext) -> Iterator[Finding]:
        direct_map = ctx.direct_map
        base = None if direct_map is None else direct_map.start
        for view in audited_views(ctx):
            found = []
            for alias in wx_aliases(view):
                verdict = _classify(alias, base)
                if verdict is not None:
                    found.append((alias, *verdict))
            for group in _groups(found):
                yield self._finding(ctx, view, group)

    def _finding(self, ctx: AuditContext, view: AuditView, group: _Group) -> Finding:
        lo, hi = group.paddr, group.paddr_end
        writers, executors = group.writers, group.executors
        xva = places(executors, lo, hi)[0]
        wva = places(writers, lo, hi)[0]
        if {id(s) for s in writers} == {id(s) for s in executors}:
            message = (
                f"{group.what}: frames 0x{lo:x}-0x{hi:x} are writable and executable at "
                f"{where(executors, lo, hi)}"
            )
        else:
            message = (
                f"{group.what}: frames 0x{lo:x}-0x{hi:x} executable at "
                f"{where(executors, lo, hi)} are writable at {where(writers, lo, hi)}"
            )
        evidence = mapping_lines(executors, lo, hi, "executable at")
        evidence += mapping_lines(writers, lo, hi, "writable at")
        if wva != xva:
            evidence += [f"writable at 0x{wva:x}: {step}" for step in ctx.evidence(view, wva)]
        x = executors[0].run
        return ctx.finding(
            self,
            view,
            message,
            vaddr=xva,
            end=xva + hi - lo,
            paddr=lo,
            paddr_end=hi,
            user=x.user,
            writable=x.writable,
            executable=True,
            pages=(hi - lo) // SIZE_4K,
            severity=group.severity,
            evidence=evidence,
        )


RULES = (AliasWxRule(),)
