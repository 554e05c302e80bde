"""``map``: what a picture of an address space is drawn from.

One walk of the selected root, merged as the text output merges it (leaves contiguous in
virtual and physical address with the same shown flags; a table linked again elsewhere, such
as ESPFIX's, kept as one :class:`~gdbext.x86.records.AliasRun`), the Linux layout's regions when
the target looks like Linux, and the walk's anomalies. The renderers
(:mod:`gdbext.render.mapview`, :mod:`gdbext.render.mapsvg`) only draw it.

An address space with more ranges than a page can draw at once is aggregated: neighbouring
ranges with the same permissions are joined whatever their frames, then, if that is not
enough, the address space is cut into blocks of a power-of-two size and each block drawn as
one range with the most dangerous permissions found in it. :attr:`MapResult.aggregated` says
what was done, and the page shows it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from gdbext.audit.model import Finding
from gdbext.defaults import MAP_MAX_LEAVES, MAP_MAX_RANGES
from gdbext.errors import UsageError
from gdbext.flags import ACCESSED_DIRTY
from gdbext.frontend.commands import RootOptions, WalkOptions, walk
from gdbext.linux.layout import Region
from gdbext.plugin.target import Target
from gdbext.x86.diff import Change
from gdbext.x86.merge import KEY_SHOWN_FLAGS, MergedRange, merge_runs
from gdbext.x86.records import AliasRun, Anomaly


@dataclass(frozen=True)
class MapOptions:
    root: RootOptions = field(default_factory=RootOptions)
    #: Region labels: one of :data:`~gdbext.defaults.LABEL_MODES`.
    labels: str = "auto"
    #: Aggregate past this many ranges.
    max_ranges: int = MAP_MAX_RANGES
    max_leaves: int | None = MAP_MAX_LEAVES


@dataclass(frozen=True)
class Span:
    """Ranges joined by aggregation: ``[vaddr, end)`` holds ``ranges`` ranges of ``leaves``
    leaves; the permissions are the most dangerous of them (W+X first)."""

    vaddr: int
    end: int
    ranges: int
    leaves: int
    user: bool
    writable: bool
    executable: bool
    #: With ``--diff``: the most notable change state joined (:data:`STATE_RANK`).
    state: str = ""


#: Change states of a drawn range (``--diff``), least notable first: unchanged, changed,
#: removed, added.
STATE_RANK = {"": 0, "changed": 1, "removed": 2, "added": 3}


@dataclass
class MapResult:
    """An address space to draw."""

    levels: int
    root: int
    #: Merged ranges and aliases in address order (:class:`Span` when aggregated).
    records: list[MergedRange | AliasRun | Span]
    #: Linux's regions (an empty tuple when the target is not labelled as Linux).
    regions: tuple[Region, ...] = ()
    #: The layout's title (``Linux x86-64 4-level layout``), or ``None``.
    layout_title: str | None = None
    anomalies: list[Anomaly] = field(default_factory=list)
    #: Leaves and anomalies counted by the walk.
    stats: dict[str, int] = field(default_factory=dict)
    #: How the records were aggregated (one line), or ``None`` when every range is drawn.
    aggregated: str | None = None
    #: The selected table's warnings (``--user-pgd`` on a table with no PTI pair...).
    warnings: list[str] = field(default_factory=list)
    #: Audit findings with an address range, one per range (a group's ranges apart).
    findings: list[Finding] = field(default_factory=list)
    #: With ``--diff``: each record's change state (``""``, ``added``, ``removed``,
    #: ``changed``), by index; ``None`` for a map of one table.
    states: list[str] | None = None
    #: With ``--diff``: the changes (:func:`gdbext.frontend.diff.diff`), and the two sides'
    #: names (old, new).
    changes: list[Change] = field(default_factory=list)
    diff_names: tuple[str, str] | None = None

    @property
    def virtual_bits(self) -> int:
        """48 for 4-level paging, 57 for 5-level."""
        return 57 if self.levels == 5 else 48


def address_map(
    target: Target, options: MapOptions = MapOptions(), findings: Iterable[Finding] = ()
) -> MapResult:
    """Walk the selected table once and keep what a picture of it needs; ``findings``: an
    audit's (:func:`~gdbext.audit.engine.run_audit`), marked where they are."""
    if options.max_ranges < 1:
        raise UsageError(f"--max-ranges must be 1 or more, not {options.max_ranges}")
    result = walk(
        target,
        WalkOptions(options.root, max_leaves=options.max_leaves, labels=options.labels),
    )
    records: list[MergedRange | AliasRun | Span] = []
    anomalies: list[Anomaly] = []
    for rec in merge_runs(result.runs(aliases="collapse", ignore=ACCESSED_DIRTY), KEY_SHOWN_FLAGS):
        if type(rec) is Anomaly:
            anomalies.append(rec)
        elif type(rec) is MergedRange or type(rec) is AliasRun:
            records.append(rec)
    layout = result.labels
    drawn, aggregated = aggregate(records, options.max_ranges)
    return MapResult(
        levels=result.levels,
        root=result.root,
        records=drawn,
        regions=layout.regions if layout is not None else (),
        layout_title=layout.title if layout is not None else None,
        anomalies=anomalies,
        stats=dict(result.stats),
        aggregated=aggregated,
        warnings=list(result.warnings),
        findings=located(findings),
    )


def located(findings: Iterable[Finding]) -> list[Finding]:
    """The findings that have a virtual range, a group's ranges each on its own, by address."""
    out: list[Finding] = []
    for f in findings:
        for one in f.ranges or (f,):
            if one.vaddr is not None and one.end is not None:
                out.append(one)
    out.sort(key=lambda f: (f.vaddr or 0, -int(f.severity)))
    return out


def _span(rec: MergedRange | AliasRun | Span, state: str = "") -> Span:
    if isinstance(rec, Span):
        return rec
    leaves = rec.leaves * rec.count if isinstance(rec, AliasRun) else rec.leaves
    return Span(rec.vaddr, rec.end, 1, leaves, rec.user, rec.writable, rec.executable, state)


def _join(a: Span, b: Span, end: int | None = None) -> Span:
    """``a`` and ``b`` as one span; its permissions are W+X if either's is, else the union;
    its change state the more notable."""
    return Span(
        a.vaddr,
        b.end if end is None else end,
        a.ranges + b.ranges,
        a.leaves + b.leaves,
        a.user or b.user,
        a.writable or b.writable,
        a.executable or b.executable,
        max(a.state, b.state, key=STATE_RANK.__getitem__),
    )


def aggregate(
    records: list[MergedRange | AliasRun | Span], limit: int
) -> tuple[list[MergedRange | AliasRun | Span], str | None]:
    """``records`` when there are at most ``limit``; else fewer, joined, and what was done.

    First, neighbours of equal permissions are joined whatever their frames and the gap
    between them; then, while there are still too many, the address space is cut into
    blocks (4 KiB times a power of two, doubled each time) and what falls in one block is
    joined into one span.
    """
    drawn, _, how = aggregate_states(records, None, limit)
    return drawn, how


def aggregate_states(
    records: list[MergedRange | AliasRun | Span], states: list[str] | None, limit: int
) -> tuple[list[MergedRange | AliasRun | Span], list[str] | None, str | None]:
    """:func:`aggregate`, each record with its change state (``states``, or ``None``): only
    neighbours of equal permissions and equal states are joined at first; a block's span
    has the most notable state in it. Returns the records, their states and what was done."""
    total = len(records)
    if total <= limit:
        return records, states, None
    joined: list[Span] = []
    for k, rec in enumerate(records):
        span = _span(rec, states[k] if states is not None else "")
        last = joined[-1] if joined else None
        if last is not None and (last.user, last.writable, last.executable, last.state) == (
            span.user,
            span.writable,
            span.executable,
            span.state,
        ):
            joined[-1] = _join(last, span)
        else:
            joined.append(span)
    block = 4096
    while len(joined) > limit:
        block *= 2
        blocks: list[Span] = []
        for span in joined:
            last = blocks[-1] if blocks else None
            if last is not None and (last.end - 1) // block == span.vaddr // block:
                blocks[-1] = _join(last, span, max(last.end, span.end))
            else:
                blocks.append(span)
        joined = blocks
    how = f"{total} ranges drawn as {len(joined)}: neighbours of equal permissions joined"
    if block > 4096:
        how += f", then joined within blocks of {block // 1024} KiB"
    return list(joined), None if states is None else [s.state for s in joined], how
