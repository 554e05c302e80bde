"""``diff``: what changed from one page table to another, with Linux's region labels.

The comparison is :func:`gdbext.x86.diff.diff_runs` on the two walks (aliases collapsed, the
bits in ``ignore`` left out); this module opens the two tables, refuses two paging modes, warns
when the two look like unrelated address spaces (their kernel halves share no top-level
entry), and labels each change with the Linux region it starts in.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from gdbext.addr import AddrRange
from gdbext.defaults import DEFAULT_MAX_LEAVES
from gdbext.errors import GdbextError, UsageError
from gdbext.flags import ACCESSED_DIRTY, PRESENT
from gdbext.frontend.commands import (
    RootOptions,
    open_page_table,
    root_warnings,
    target_layout,
)
from gdbext.geometry import ENTRIES_PER_TABLE
from gdbext.linux.detect import labels_wanted
from gdbext.linux.layout import Layout
from gdbext.plugin.target import Target
from gdbext.x86.diff import DEFAULT_IGNORE, REMOVED, Change, DiffCounts, diff_runs
from gdbext.x86.paging import X86PageTable
from gdbext.x86.records import WalkRecord


@dataclass(frozen=True)
class DiffOptions:
    """The two tables, and what to compare."""

    old: RootOptions = field(default_factory=RootOptions)
    new: RootOptions = field(default_factory=RootOptions)
    #: Only this VA range.
    range: AddrRange | None = None
    #: Compare ACCESSED and DIRTY too (by default they are left out: the CPU sets them).
    accessed_dirty: bool = False
    #: ``--labels``: ``auto``, ``linux`` or ``none``.
    labels: str = "auto"
    max_leaves: int | None = DEFAULT_MAX_LEAVES


@dataclass
class DiffResult:
    """The changes from the old table to the new one, in VA order."""

    old_name: str
    new_name: str
    old_root: int
    new_root: int
    levels: int
    changes: list[Change]
    #: The Linux region each change starts in (``None`` without labels), by index.
    regions: list[str | None]
    counts: DiffCounts
    warnings: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return not self.changes


def diff_tables(
    old: X86PageTable,
    new: X86PageTable,
    *,
    range: AddrRange | None = None,
    ignore: int = DEFAULT_IGNORE,
    max_leaves: int | None = DEFAULT_MAX_LEAVES,
    counts: DiffCounts | None = None,
) -> list[Change]:
    """The changes from ``old`` to ``new`` (both walked with aliases collapsed).

    :raises UsageError: the two tables have different paging modes.
    """
    if old.levels != new.levels:
        raise UsageError(
            f"the tables have different paging modes: {old.levels}-level (root 0x{old.root:x}) "
            f"and {new.levels}-level (root 0x{new.root:x}); a diff compares one mode"
        )

    def walk(pt: X86PageTable) -> Iterator[WalkRecord]:
        return pt.iter_runs(range, aliases="collapse", ignore=ignore, max_leaves=max_leaves)

    return list(diff_runs(walk(old), walk(new), ignore=ignore, counts=counts))


def unrelated_warning(
    old: X86PageTable, new: X86PageTable, changes: Sequence[Change], counts: DiffCounts
) -> str | None:
    """A warning when the two tables look like unrelated address spaces (two kernels, or two
    boots) rather than two stops, two processes or a PTI pair of one kernel: their kernel
    halves share no top-level entry; or the higher half mapped in both is less than half of
    the smaller one's (the direct map and vmalloc moved); or more than half of it maps other
    frames."""
    half = ENTRIES_PER_TABLE // 2
    try:
        a = {e & ~ACCESSED_DIRTY for e in old.read_table(old.root)[half:] if e & PRESENT}
        b = {e & ~ACCESSED_DIRTY for e in new.read_table(new.root)[half:] if e & PRESENT}
    except GdbextError:
        return None
    if not a or not b:
        return None
    removed = frames = 0
    for c in changes:
        if c.start >> 63 and not (c.old is not None and c.old.is_alias):
            if c.kind == REMOVED:
                removed += c.size
            elif "frame" in c.what:
                frames += c.size
    both = counts.old_high_bytes - removed
    smaller = min(counts.old_high_bytes, counts.new_high_bytes)
    if a.isdisjoint(b) or both * 2 < smaller or frames * 2 > both:
        return (
            "the two kernel halves have little in common: these look like unrelated address "
            "spaces (another kernel or another boot); diffed all the same"
        )
    return None


def _layout(target: Target, pt: X86PageTable, labels: str) -> Layout | None:
    if not labels_wanted(labels, target.facts):
        return None
    try:
        return target_layout(target, pt)
    except GdbextError:
        return None


def diff(
    old_target: Target, new_target: Target, options: DiffOptions = DiffOptions()
) -> DiffResult:
    """The changes from the table ``options.old`` selects on ``old_target`` to the one
    ``options.new`` selects on ``new_target`` (the same target twice for two roots)."""
    old = open_page_table(old_target, options.old)
    new = open_page_table(new_target, options.new)
    ignore = 0 if options.accessed_dirty else DEFAULT_IGNORE
    counts = DiffCounts()
    changes = diff_tables(
        old, new, range=options.range, ignore=ignore, max_leaves=options.max_leaves, counts=counts
    )
    warnings = root_warnings(old, options.old) + root_warnings(new, options.new)
    unrelated = unrelated_warning(old, new, changes, counts)
    if unrelated is not None:
        warnings.append(unrelated)
    for side, n in (("old", counts.old_anomalies), ("new", counts.new_anomalies)):
        if n:
            warnings.append(
                f"the {side} table has {n} entr{'y' if n == 1 else 'ies'} the walk did not "
                "follow (walk shows them): not compared"
            )
    layout = _layout(new_target, new, options.labels) or _layout(old_target, old, options.labels)
    regions: Sequence[str | None] = (
        [layout.label(c.start).name for c in changes]
        if layout is not None
        else [None] * len(changes)
    )
    return DiffResult(
        _name(old_target, options.old),
        _name(new_target, options.new),
        old.root,
        new.root,
        new.levels,
        changes,
        list(regions),
        counts,
        warnings,
    )


def _name(target: Target, root: RootOptions) -> str:
    """The side's name: the target, and its selection when it is not the default."""
    parts = [target.description]
    if root.cr3 is not None:
        parts.append(f"--cr3 0x{root.cr3:x}")
    if root.kernel:
        parts.append("--kernel")
    if root.user_pgd:
        parts.append("--user-pgd")
    if root.cpu is not None:
        parts.append(f"--cpu {root.cpu}")
    return " ".join(parts)
