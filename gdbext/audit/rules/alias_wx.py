"""Rule ``alias-wx``: frames writable at one virtual address and executable at another.

W^X holds per mapping in Linux's ``CONFIG_DEBUG_WX`` check (ptdump, rule ``wx``), which looks
at one virtual address at a time: code mapped read-only and executable passes even when the
same physical frames are writable through another mapping, a direct-map alias say. That is
the bypass this rule finds. Permissions are the *effective* ones (NX counts only with
EFER.NXE); a frame mapped read-only elsewhere (Linux's ESPFIX stacks, linked thousands of
times, read-only) is not a finding, nor is a page writable and executable at one address
only (rule ``wx``'s job).

It works on intervals: the frame indexes (leaf runs and collapsed aliases as spans, sorted by
physical address) of the tables audited (the selected one and, under PTI, both halves of the
pair) are merged into one, each span tagged with the tables that map it (a mapping both halves
share, PTI's cpu_entry_area say, is one span of both), and swept once, writable spans against
executable ones (:func:`gdbext.audit.frames.overlap_pairs`), never page by page. So a frame
writable through the kernel PGD and executable through the user PGD is found (the user PGD
lacks the kernel's mapping, the kernel PGD makes the user half no-execute: neither table alone
shows it); such a finding's ``root`` names both tables (``"kernel+user"``), and its evidence
says which mapping is in which. One mapping (same address, frames and permissions) in both
tables is still one mapping: writable and executable there is rule ``wx``'s.

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

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from gdbext.audit.context import AuditContext
from gdbext.audit.frames import (
    is_offset_mapping,
    mapping_lines,
    overlap_pairs,
    perm_key,
    places,
    where,
)
from gdbext.audit.model import Finding, Severity
from gdbext.audit.spans import LeafSpan
from gdbext.audit.views import AuditView
from gdbext.geometry import SIZE_4K

__all__ = ["AliasWxRule", "SpanUnion", "WxAlias", "span_union", "wx_aliases", "wx_aliases_in"]


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
    return wx_aliases_in(view.frame_index.spans)


def wx_aliases_in(spans: Sequence[LeafSpan]) -> Iterator[WxAlias]:
    """:func:`wx_aliases` over ``spans`` (sorted by physical address): a span that is both
    writable and executable pairs with itself only when a collapsed alias maps it again."""
    writable = [s for s in spans if s.run.writable]
    executable = [s for s in spans if s.run.executable]
    for w, x, lo, hi in overlap_pairs(writable, executable):
        if w is x and w.copies == 1:
            continue  # writable and executable at one address: rule wx
        yield WxAlias(w, x, lo, hi)


#: Names of the tables a finding may involve, in the order a joined ``root`` lists them.
ROOT_ORDER = ("kernel", "user", "cr3")


@dataclass
class SpanUnion:
    """The spans of several views, by physical address, each mapping once, and which views map
    it (``roots``, by ``id`` of the span)."""

    spans: list[LeafSpan]
    roots: dict[int, tuple[str, ...]]
    views: dict[str, AuditView]

    def of(self, spans: Sequence[LeafSpan]) -> tuple[str, ...]:
        """The views that map any of ``spans``, in :data:`ROOT_ORDER`."""
        names = {name for s in spans for name in self.roots[id(s)]}
        return tuple(sorted(names, key=ROOT_ORDER.index))


def span_union(views: Sequence[AuditView]) -> SpanUnion:
    """The frame indexes of ``views`` merged: a mapping at the same virtual address, of the
    same frames, size, repetitions and permissions in several views (tables they share) is
    one span, tagged with all of their names."""
    by_key: dict[tuple[object, ...], LeafSpan] = {}
    roots: dict[int, tuple[str, ...]] = {}
    for view in views:
        for span in view.frame_index.spans:
            run = span.run
            key = (run.vaddr, run.paddr, span.size, span.reps, perm_key(span))
            first = by_key.setdefault(key, span)
            have = roots.get(id(first), ())
            if view.name not in have:
                roots[id(first)] = (*have, view.name)
    spans = sorted(by_key.values(), key=lambda s: (s.paddr, s.size, s.vaddr))
    return SpanUnion(spans, roots, {v.name: v for v in views})


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

    _ids: set[tuple[bool, int]] = field(default_factory=set)

    def add(self, writers: Sequence[LeafSpan], executors: Sequence[LeafSpan]) -> None:
        """Add mappings that take part (each once)."""
        for role, spans, out in ((True, writers, self.writers), (False, executors, self.executors)):
            for span in spans:
                key = (role, id(span))
                if key not in self._ids:
                    self._ids.add(key)
                    out.append(span)

    def single(self) -> bool:
        """One writer, one other executor, neither mapped again by an alias."""
        (w, *more_w), (x, *more_x) = self.writers, self.executors
        return not more_w and not more_x and w is not x and not w.reps and not x.reps


def _bundles(spans: Sequence[LeafSpan], base: int | None) -> dict[int, list[LeafSpan]]:
    """Spans (sorted by physical address) that map the same frames with the same permissions,
    and are direct-map mappings alike, bundled: the first of each -> all of them (by ``id``).
    They make the same pairs with every other span, so the sweep pairs bundles, not spans
    (many mappings of one frame, a table linked again under other permissions, would make
    pairs quadratic in the mappings)."""
    bundles: dict[tuple[object, ...], list[LeafSpan]] = {}
    for span in spans:
        key = (span.paddr, span.size, perm_key(span), is_offset_mapping(span, base))
        bundles.setdefault(key, []).append(span)
    return {id(members[0]): members for members in bundles.values()}


def _bundle_aliases(
    spans: Sequence[LeafSpan], bundles: dict[int, list[LeafSpan]]
) -> Iterator[WxAlias]:
    """:func:`wx_aliases_in` over the first span of each bundle: a writable and executable
    bundle pairs with itself when it holds more than one mapping."""
    firsts = [s for s in spans if id(s) in bundles]
    writable = [s for s in firsts if s.run.writable]
    executable = [s for s in firsts if s.run.executable]
    for w, x, lo, hi in overlap_pairs(writable, executable):
        if w is x and w.copies == 1 and len(bundles[id(w)]) == 1:
            continue  # writable and executable at one address: rule wx
        yield WxAlias(w, x, lo, hi)


def _groups(
    found: list[tuple[WxAlias, Severity, str]],
    roots: Callable[[LeafSpan], tuple[str, ...]],
    bundles: dict[int, list[LeafSpan]],
) -> list[_Group]:
    """One group per shared frame range and kind (every mapping of those frames that takes
    part, e.g. the copies of a table linked many times, in one finding: each bundle's
    mappings); then groups of one plain writer and executor that continue each other
    (contiguous frames, the same VA - PA offsets, the same permissions, in the same tables:
    ``roots``) merged."""
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
        group.add(bundles[id(alias.writer)], bundles[id(alias.executor)])
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
            roots(w),
            roots(x),
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
        base = ctx.direct_map_base
        union = span_union(ctx.views)
        bundles = _bundles(union.spans, base)
        found = []
        for alias in _bundle_aliases(union.spans, bundles):
            verdict = _classify(alias, base)
            if verdict is not None:
                found.append((alias, *verdict))
        for group in _groups(found, lambda span: union.roots[id(span)], bundles):
            yield self._finding(ctx, union, group)

    def _finding(self, ctx: AuditContext, union: SpanUnion, group: _Group) -> Finding:
        lo, hi = group.paddr, group.paddr_end
        writers, executors = group.writers, group.executors
        xva = places(executors, lo, hi)[0]
        wva = places(writers, lo, hi)[0]
        x_roots, w_roots = union.of(executors), union.of(writers)
        roots = tuple(r for r in ROOT_ORDER if r in x_roots or r in w_roots)
        both = len(roots) > 1

        def at(spans: Sequence[LeafSpan], names: tuple[str, ...]) -> str:
            text = where(spans, lo, hi)
            return f"{text} in {_tables(names)}" if both else text

        if {id(s) for s in writers} == {id(s) for s in executors}:
            message = (
                f"{group.what}: frames 0x{lo:x}-0x{hi:x} are writable and executable at "
                f"{at(executors, x_roots)}"
            )
        else:
            message = (
                f"{group.what}: frames 0x{lo:x}-0x{hi:x} executable at "
                f"{at(executors, x_roots)} are writable at {at(writers, w_roots)}"
            )
        evidence = self._lines(union, executors, lo, hi, "executable at", both)
        evidence += self._lines(union, writers, lo, hi, "writable at", both)
        x_view = union.views[union.of(executors[:1])[0]]
        w_view = union.views[union.of(writers[:1])[0]]
        if wva != xva or w_view is not x_view:
            label = f"writable at 0x{wva:x}" + (f" in {_tables((w_view.name,))}" if both else "")
            evidence += [f"{label}: {step}" for step in ctx.evidence(w_view, wva)]
        x = executors[0].run
        finding = ctx.finding(
            self,
            x_view,
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
            cause=group.what,
        )
        return dataclasses.replace(finding, root="+".join(roots)) if both else finding

    @staticmethod
    def _lines(
        union: SpanUnion, spans: Sequence[LeafSpan], lo: int, hi: int, label: str, both: bool
    ) -> list[str]:
        lines = mapping_lines(spans, lo, hi, label)
        if both:
            for i, span in enumerate(spans[: len(lines)]):
                if not lines[i].startswith(f"{label} ... "):
                    lines[i] += f" in {_tables(union.roots[id(span)])}"
        return lines


def _tables(names: Sequence[str]) -> str:
    """``"the kernel PGD"``, ``"the kernel and user PGDs"`` (the halves of a PTI pair).

    >>> _tables(["user"]), _tables(["kernel", "user"])
    ('the user PGD', 'the kernel and user PGDs')
    """
    if len(names) == 1:
        return f"the {names[0]} PGD"
    return f"the {' and '.join(names)} PGDs"


RULES = (AliasWxRule(),)
