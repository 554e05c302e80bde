"""JSON output. Addresses are hex strings, because jq cannot hold 64-bit integers.

The walk streams: its records are written one per line inside the ``mappings`` array, so a
walk of millions of leaves never holds them all in memory. Shared tables are expanded (every
link's leaves are records), so the records are bounded
(:meth:`~gdbext.frontend.commands.WalkOptions.line_limit`). With ``--merge va`` a record whose
frames
are not contiguous has ``"paddr": null`` (its leaves' frames: a walk without ``--merge va``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from gdbext.errors import OutputLimitError
from gdbext.frontend.commands import InfoResult, WalkResult
from gdbext.plugin.target import Detail
from gdbext.render.common import hexs, leaf_flag_names, step_flag_names, unread_table
from gdbext.x86.merge import KEY_ALL_FLAGS, MergedRange, as_merged, merge_runs
from gdbext.x86.records import Anomaly

if TYPE_CHECKING:  # the heap's and translate's modules are not needed to render a walk
    from gdbext.frontend.heap import HeapResult
    from gdbext.frontend.translation import TranslateResult


def _anomaly(a: Anomaly) -> dict[str, Any]:
    return {
        "kind": a.kind,
        "vaddr": hexs(a.vaddr),
        "level": a.level,
        "table": hexs(a.table),
        "index": a.index,
        "entry": hexs(a.entry),
        "detail": a.detail,
    }


def render_walk(result: WalkResult) -> Iterator[str]:
    """The walk as one JSON document, streamed one mapping record per line."""
    yield f'{{"levels": {result.levels}, "root": "{hexs(result.root)}", "mappings": ['
    anomalies: list[dict[str, Any]] = []
    options = result.options
    records = (
        merge_runs(result.runs(), KEY_ALL_FLAGS, by_va=options.merge_by == "va")
        if options.merge
        else as_merged(result.runs())
    )
    limit = options.line_limit()
    count = 0
    # Records are formatted by hand (json.dumps per record costs several microseconds); the
    # flags list is encoded once per distinct flag set.
    flag_json: dict[tuple[int, int], str] = {}
    pending: str | None = None
    for rec in records:
        if type(rec) is MergedRange:
            count += 1
            if limit is not None and count > limit:
                raise OutputLimitError("json", limit, rec.vaddr)
            key = (rec.entry & KEY_ALL_FLAGS, rec.page_size)
            flags = flag_json.get(key)
            if flags is None:
                flags = flag_json[key] = json.dumps(leaf_flag_names(rec.entry, rec.page_size))
            if pending is not None:
                yield pending + ","
            paddr = "null" if rec.scattered else f'"0x{rec.paddr:x}"'
            pending = (
                f'{{"vaddr": "0x{rec.vaddr:x}", "paddr": {paddr}, '
                f'"size": {rec.end - rec.vaddr}, "page_size": {rec.page_size}, '
                f'"flags": {flags}, "user": {_BOOL[rec.user]}, '
                f'"writable": {_BOOL[rec.writable]}, "executable": {_BOOL[rec.executable]}}}'
            )
        elif type(rec) is Anomaly:
            anomalies.append(_anomaly(rec))
    if pending is not None:
        yield pending
    yield f'], "anomalies": {json.dumps(anomalies)}}}'


_BOOL = {True: "true", False: "false"}


def _symbol(name: str | None) -> dict[str, str]:
    """``{"symbol": "init_task+0x10"}`` for an address that has a symbol, else nothing (the
    record is as it is without symbols)."""
    return {} if name is None else {"symbol": name}


def render_translate(result: TranslateResult) -> Iterator[str]:
    """An array with one record per address; an error record for an unmapped one."""
    out: list[dict[str, Any]] = []
    for outcome in result.outcomes:
        t = outcome.translation
        if t is None:
            err = outcome.error
            record: dict[str, Any] = {
                "vaddr": hexs(outcome.vaddr),
                **_symbol(outcome.symbol),
                "error": str(err),
                "level": None if err is None else err.level,
                "entry": None if err is None or err.entry is None else hexs(err.entry),
                "steps": [] if err is None else [_step(*s) for s in err.steps],
            }
            unread = None if err is None else unread_table(err)
            if unread is not None:
                level, table, index, why = unread
                record["unread"] = {
                    "level": level,
                    "table": hexs(table),
                    "index": index,
                    "reason": why,
                }
            out.append(record)
            continue
        out.append(
            {
                "vaddr": hexs(t.vaddr),
                **_symbol(outcome.symbol),
                "paddr": hexs(t.paddr),
                "page_size": t.page_size,
                "flags": leaf_flag_names(t.entry, t.page_size),
                "user": t.user,
                "writable": t.writable,
                "executable": t.executable,
                "captured": outcome.captured,
                "steps": [_step(*s, t.page_size if s is t.steps[-1] else None) for s in t.steps],
            }
        )
    yield json.dumps(out, indent=2)


def _step(
    level: int, table: int, index: int, entry: int, page_size: int | None = None
) -> dict[str, Any]:
    """One level of a translation (``page_size`` for the leaf): as the text output's lines."""
    return {
        "level": level,
        "table": hexs(table),
        "index": index,
        "entry": hexs(entry),
        "flags": step_flag_names(entry, page_size),
    }


def render_info(result: InfoResult) -> Iterator[str]:
    """The backend, RAM, per-CPU paging state and Linux's layout (``null`` if not Linux)
    as JSON."""

    def reg(value: int | None) -> str | None:
        return None if value is None else hexs(value)

    doc = {
        "backend": result.backend,
        "description": result.description,
        "read_path": result.read_path,
        "ram": None
        if result.ram is None
        else [{"start": hexs(r.start), "end": hexs(r.end)} for r in result.ram],
        "details": {
            key: value.value if isinstance(value, Detail) else value
            for key, value in result.details.items()
        },
        "cpus": [
            {
                "levels": c.levels,
                "cr0": reg(c.cr0),
                "cr3": reg(c.cr3),
                "cr4": reg(c.cr4),
                "efer": reg(c.efer),
                "root": reg(c.root),
                "nxe": c.nxe,
                "wp": c.wp,
                "smep": c.smep,
                "smap": c.smap,
                "la57": c.la57,
            }
            for c in result.cpus
        ],
        "layout": None
        if result.layout is None
        else {
            "levels": result.layout.levels,
            "bases": {
                name: {"value": hexs(b.value), "source": b.source, "how": b.how}
                for name, b in result.layout.bases.items()
            },
        },
    }
    yield json.dumps(doc, indent=2)


def render_heap(result: HeapResult) -> Iterator[str]:
    """``{"start", "end"}`` of the heap, end exclusive."""
    yield json.dumps({"start": hexs(result.range.start), "end": hexs(result.range.end)})
