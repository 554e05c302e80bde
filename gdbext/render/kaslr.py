"""``kaslr``'s output: a line per base with how it was found, disagreements, then the leaks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from gdbext.frontend.kaslr import KaslrResult
from gdbext.units import plural


def _hex(value: int | None) -> str | None:
    return None if value is None else f"0x{value:x}"


def render_text(result: KaslrResult) -> Iterator[str]:
    """``kernel image (_text):  0xffffffffa7a00000  (VMCOREINFO KERNELOFFSET)`` lines, each
    agreeing source on a line under it, a ``DISAGREES`` line for each that does not; then the
    leaks grouped by region."""
    report = result.report
    width = max(len(i.name) for i in report.items) + 2
    for item in report.items:
        value = "not found" if item.value is None else f"0x{item.value:x}"
        yield f"{item.name + ':':<{width}}{value:<20} ({item.how})"
        for check in item.checks:
            if check.value is None:
                continue
            verdict = "agrees" if check.value == item.value else "DISAGREES"
            yield f"{'':<{width}}{verdict}: {check.how}: 0x{check.value:x}"
    for line in report.disagreements:
        yield f"disagreement: {line}"
    if result.leaks is None:
        return
    searched = result.searched
    assert searched is not None
    yield ""
    yield (
        f"leaks in 0x{searched.start:x}-0x{searched.end:x} of root 0x{result.root:x}: "
        f"{result.total_leaks} pointer{plural(result.total_leaks)}"
    )
    for region in result.regions:
        yield f"  {region.name}: 0x{region.range.start:x}-0x{region.range.end:x}"
    for name, leaks in result.groups().items():
        yield f"into {name} ({len(leaks)}):"
        for leak in leaks:
            yield (
                f"  va 0x{leak.vaddr:016x}  pa 0x{leak.paddr:x}  {leak.perms}  "
                f"-> 0x{leak.value:016x}"
            )
    if result.total_leaks > len(result.leaks):
        yield f"... {result.total_leaks - len(result.leaks)} more (raise --max)"


def render_json(result: KaslrResult) -> Iterator[str]:
    """``{"kernel_root", "bases": {key: {value, how, checks}}, "disagreements", "leaks"}``."""
    report = result.report
    doc: dict[str, Any] = {
        "kernel_root": _hex(report.kernel_root),
        "bases": {
            i.key: {
                "name": i.name,
                "value": _hex(i.value),
                "how": i.how,
                "checks": [{"value": _hex(c.value), "how": c.how} for c in i.checks],
            }
            for i in report.items
        },
        "disagreements": report.disagreements,
    }
    if result.leaks is not None and result.searched is not None:
        doc["leaks"] = {
            "root": _hex(result.root),
            "range": [_hex(result.searched.start), _hex(result.searched.end)],
            "regions": {r.name: [_hex(r.range.start), _hex(r.range.end)] for r in result.regions},
            "total": result.total_leaks,
            "shown": len(result.leaks),
            "groups": {
                name: [
                    {
                        "vaddr": _hex(x.vaddr),
                        "paddr": _hex(x.paddr),
                        "value": _hex(x.value),
                        "perms": x.perms,
                    }
                    for x in leaks
                ]
                for name, leaks in result.groups().items()
            },
        }
    yield json.dumps(doc, indent=2)
