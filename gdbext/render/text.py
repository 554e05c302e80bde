"""Plain-text output for people.

The walk prints a header line naming the columns, then one line per merged range, in the
spirit of Linux's ptdump::

    # start            end                    size page  perms    attrs       -> physical
    0xffff800000000000-0xffff800000800000       8M  2M  rw- kern G           -> 0x200000

With ``--merge va`` ranges merge whatever their frames, and a range whose frames are not
contiguous shows ``-> scattered``. A table linked under many entries (Linux's ESPFIX area links
one table thousands of times) is walked and printed once; the other links become one line with
their count and span. Lines stay within :data:`WIDTH` columns: a longer one (an anomaly's
detail) continues on indented lines.

With region labels on (``--labels linux``, or ``auto`` for a target that carries a VMCOREINFO),
a ``# Linux x86-64 ... layout`` line says so (``info`` lists the layout's bases and where each
came from), and a ``---[ Name ]---`` line (ptdump's section names, :mod:`gdbext.linux.layout`) comes
before the first line of each section that has lines, ``(default base)`` added where the
section's base was assumed; a range that crosses into the next section is split there. (Only
``--format ptdump`` shows empty sections, as Linux does.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from gdbext.cpu import CR0_PG, CR4_PAE, CpuState
from gdbext.errors import OutputLimitError
from gdbext.flags import ACCESSED_DIRTY
from gdbext.frontend.commands import InfoResult, WalkResult
from gdbext.geometry import level_name
from gdbext.linux.layout import Layout, Marker, MarkerCursor
from gdbext.render.common import (
    PLAIN,
    Style,
    extra_tokens,
    hex64,
    perms,
    step_flag_names,
    unread_table,
)
from gdbext.units import format_size, plural
from gdbext.x86.merge import KEY_SHOWN_FLAGS, MergedRange, as_merged, merge_runs
from gdbext.x86.records import AliasRun, Anomaly

if TYPE_CHECKING:  # the heap's and translate's modules are not needed to render a walk
    from gdbext.frontend.heap import HeapResult
    from gdbext.frontend.translation import TranslateResult

#: The widest line the text walk writes (before a line continues on the next).
WIDTH = 120
#: The column header; the columns line up with :func:`_range_line`'s.
HEADER = (
    f"{'# start':<19}{'end':<18}{'size':>8} {'page':>4}  {'perms':<8} {'attrs':<11} -> physical"
)


def _anomaly_line(a: Anomaly) -> str:
    return (
        f"# {hex64(a.vaddr)}: {level_name(a.level)}[{a.index}] entry 0x{a.entry:x} "
        f"in table 0x{a.table:x}: {a.kind}" + (f" ({a.detail})" if a.detail else "")
    )


def _range_line(m: MergedRange, style: Style) -> str:
    extra = extra_tokens(m.entry)
    return (
        f"{hex64(m.vaddr)}-{hex64(m.end)} {format_size(m.size):>8} {format_size(m.page_size):>3}"
        f"  {perms(m.user, m.writable, m.executable, style)} {extra:<11} -> "
        + ("scattered" if m.scattered else f"0x{m.paddr:x}")
    )


def _alias_line(a: AliasRun) -> str:
    access = "" if a.same_access else f", path {perms(a.user, a.writable, a.executable)}"
    return (
        f"{hex64(a.vaddr)}-{hex64(a.end)} {format_size(a.end - a.vaddr):>8} alias"
        f"  {level_name(a.level)} 0x{a.table:x} x{a.count} more, {a.leaves} "
        f"lea{'f' if a.leaves == 1 else 'ves'} each, as at 0x{a.first_vaddr:x}{access}"
    )


def _alias_lines(a: AliasRun, style: Style) -> list[str]:
    """The alias line, fitted; a W+X path's permissions (its last word but one) styled."""
    lines = _fit(_alias_line(a))
    if a.same_access or not (a.writable and a.executable):
        return lines
    words = sum(len(line.split()) for line in lines)
    return style.paint_word(lines, words - 2, style.wx)


def _fit(line: str) -> list[str]:
    """``line``, continued on indented lines if it is wider than :data:`WIDTH`."""
    if len(line) <= WIDTH:
        return [line]
    import textwrap  # here: most walks have no line to wrap, and textwrap compiles regexes

    indent = "#   " if line.startswith("#") else "    "
    return textwrap.wrap(line, WIDTH, subsequent_indent=indent, break_on_hyphens=False)


def _marker_line(m: Marker, style: Style = PLAIN) -> str:
    return style.paint(
        style.section, f"---[ {m.name} ]---" + (" (default base)" if m.assumed else "")
    )


def _with_markers(
    records: Iterator[MergedRange | AliasRun | Anomaly], layout: Layout, style: Style
) -> Iterator[MergedRange | AliasRun | Anomaly | str]:
    """The records with a marker line before each section's first record (sections without
    records have none)."""
    cursor = MarkerCursor(layout)
    for rec in records:
        while True:
            for marker in cursor.advance(rec.vaddr)[-1:]:
                yield _marker_line(marker, style)
            if type(rec) is MergedRange:
                nxt = cursor.next_start()
                if nxt < rec.end:
                    ps = rec.page_size
                    cut = rec.vaddr + -(-(nxt - rec.vaddr) // ps) * ps
                    if rec.vaddr < cut < rec.end:
                        head, rec = rec.split(cut)
                        yield head
                        continue
            yield rec
            break


def render_walk(result: WalkResult, style: Style = PLAIN) -> Iterator[str]:
    """The header lines, one line per merged range (or per leaf with ``--no-merge``), then a
    summary line. ``--no-merge`` expands shared tables, so its lines are bounded
    (:meth:`~gdbext.frontend.commands.WalkOptions.line_limit`). ``style``: section markers,
    W+X permissions, anomalies and comment lines."""
    ranges = 0
    options = result.options
    records: Iterator[MergedRange | AliasRun | Anomaly | str]
    limit = None
    if options.merge:
        # ACCESSED and DIRTY are not shown, so leaves that differ only there share a line.
        records = merge_runs(
            result.runs(aliases="collapse", ignore=ACCESSED_DIRTY),
            KEY_SHOWN_FLAGS,
            by_va=options.merge_by == "va",
        )
    else:
        records = as_merged(result.runs())
        limit = options.line_limit()
    layout = result.labels
    if layout is not None:
        yield style.paint(style.comment, f"# {layout.title} (its bases: the info command)")
        records = _with_markers(records, layout, style)
    yield style.paint(style.comment, HEADER)
    for rec in records:
        if type(rec) is MergedRange:
            ranges += 1
            if limit is not None and ranges > limit:
                raise OutputLimitError("text --no-merge", limit, rec.vaddr)
            yield _range_line(rec, style)
        elif type(rec) is AliasRun:
            ranges += 1
            yield from _alias_lines(rec, style)
        elif type(rec) is Anomaly:
            for line in _fit(_anomaly_line(rec)):
                yield style.paint(style.warning, line)
        elif type(rec) is str:
            yield rec
    stats = result.stats
    yield style.paint(
        style.comment,
        f"# {ranges} line{plural(ranges)}, {stats['leaves']} leaf entries, "
        f"{stats['anomalies']} anomalies; {result.levels}-level paging, root 0x{result.root:x}",
    )


def render_translate(result: TranslateResult, style: Style = PLAIN) -> Iterator[str]:
    """Per address: the result, then every level with its raw entry and decoded flags.
    ``style``: addresses that did not translate, W+X permissions."""
    for outcome in result.outcomes:
        t = outcome.translation
        if t is None:
            err = outcome.error
            yield style.paint(
                style.warning, f"{hex64(outcome.vaddr)}{_symbol(outcome.symbol)}: {err}"
            )
            if err is not None:
                for level, table, index, entry in err.steps:
                    names = " ".join(step_flag_names(entry)) or "(not present)"
                    yield _step_line(level, table, index, f"0x{entry:016x}  {names}")
                unread = unread_table(err)
                if unread is not None:
                    level, table, index, why = unread
                    yield _step_line(level, table, index, f"unknown: the table is {why}", "")
            continue
        yield (
            f"{hex64(t.vaddr)}{_symbol(outcome.symbol)} -> 0x{t.paddr:x}  "
            f"{format_size(t.page_size)} page  "
            f"{perms(t.user, t.writable, t.executable, style)}"
            + ("" if outcome.captured else "  (mapped; the frame is not in the dump)")
        )
        for step in t.steps:
            leaf = step is t.steps[-1]
            names = " ".join(step_flag_names(step.entry, t.page_size if leaf else None))
            yield _step_line(step.level, step.table, step.index, f"0x{step.entry:016x}  {names}")


def _symbol(name: str | None) -> str:
    """`` <init_task+0x10>`` after an address that has a symbol, else nothing."""
    return "" if name is None else f" <{name}>"


def _step_line(level: int, table: int, index: int, what: str, sep: str = "= ") -> str:
    """One level of a translation: ``  PD 0x2a16000[  8] = 0x00000000010001e1  PRESENT ...``."""
    return f"    {level_name(level):>4} 0x{table:x}[{index:3}] {sep}{what}"


def render_info(result: InfoResult) -> Iterator[str]:
    """The backend, RAM and each CPU's control registers and paging features."""
    yield f"backend:     {result.backend} ({result.description})"
    if result.read_path:
        yield f"read path:   {result.read_path}"
    if result.ram is not None:
        total = sum(r.size for r in result.ram)
        spans = ", ".join(f"0x{r.start:x}-0x{r.end:x}" for r in result.ram)
        yield f"RAM:         {format_size(total)} ({spans})"
    for key, value in result.details.items():
        yield f"{key + ':':<12} {value}"
    if result.layout is not None:
        yield f"{'layout:':<12} {result.layout.title}"
        for line in result.layout.base_lines():
            yield f"  {line}"
    for index, cpu in enumerate(result.cpus):
        yield f"cpu {index}:"
        yield f"  paging:    {cpu.levels}-level" + (" (LA57)" if cpu.la57 else "") + _off(cpu)
        for name in ("cr0", "cr3", "cr4", "efer"):
            value = getattr(cpu, name)
            yield f"  {name + ':':<10} " + ("unknown" if value is None else f"0x{value:x}")
        if cpu.root is not None:
            yield f"  root:      0x{cpu.root:x}" + (f" (PCID {cpu.pcid})" if cpu.pcid else "")
        bits = {
            "CR0.WP": cpu.wp if cpu.cr0 is not None else None,
            "CR4.SMEP": cpu.smep if cpu.cr4 is not None else None,
            "CR4.SMAP": cpu.smap if cpu.cr4 is not None else None,
            "CR4.PCIDE": cpu.pcide if cpu.cr4 is not None else None,
            "CR4.LA57": cpu.la57 if cpu.cr4 is not None else None,
            "EFER.NXE": cpu.nxe if cpu.efer is not None else None,
        }
        yield "  " + "  ".join(f"{k}={'?' if v is None else int(v)}" for k, v in bits.items())


def render_heap(result: HeapResult) -> Iterator[str]:
    """The heap range, its size and where the memory map came from."""
    r = result.range
    yield (
        f"heap: {hex64(r.start)}-{hex64(r.end)} ({format_size(r.size)}) from {result.source}, "
        f"physical_memory_offset 0x{result.physical_memory_offset:x}"
    )


def _off(cpu: CpuState) -> str:
    """A warning when the control registers say the CPU is not in 4/5-level paging: the walk
    still reads the tables CR3 names, but the MMU is not using them."""
    if cpu.cr0 is not None and not cpu.cr0 & CR0_PG:
        return " (but CR0.PG=0: paging is off, CR3's tables are not in use)"
    if cpu.cr4 is not None and not cpu.cr4 & CR4_PAE:
        return " (but CR4.PAE=0: 32-bit paging, which gdbext does not walk)"
    return ""
