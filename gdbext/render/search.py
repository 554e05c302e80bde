"""``search``'s output: one hit a line (text), or one JSON object a line.

- ``text``: ``ADDRESS  PADDR  PERMS  REGION  HEX  |ASCII|`` for a virtual search (the bytes
  from the hit on: the match and what follows it), ``PADDR  HEX  |ASCII|`` for ``--phys``; a
  last ``# N hits`` line, which says when more exist than ``--max`` let through;
- ``json``: one object, ``{"pattern", "hits", "found", "more"}``, with a hit a line in
  ``hits``: ``{"address", "paddr", "perms", "region", "context"}`` (addresses as hex
  strings, ``context`` in hex; ``perms`` and ``region`` left out for ``--phys``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from gdbext.frontend.memsearch import SearchResult
from gdbext.units import plural

#: Printable ASCII shown as itself, the rest as ``.`` (``hexdump -C``'s).
_ASCII = bytes(b if 0x20 <= b < 0x7F else ord(".") for b in range(256))


def _summary(result: SearchResult) -> str:
    n = result.found
    line = f"# {n} hit{plural(n)} of {result.options.pattern.describe}"
    if result.more:
        line += f"; more exist (--max {result.options.max_hits}: raise it to see them)"
    return line


def render_text(result: SearchResult) -> Iterator[str]:
    for hit in result.hits():
        text = hit.context.translate(_ASCII).decode("ascii")
        data = f"{hit.context.hex(' ')}  |{text}|"
        if result.physical:
            yield f"{hit.paddr:016x}  {data}"
        else:
            region = f"  {hit.region}" if hit.region else ""
            yield f"{hit.address:016x}  {hit.paddr:012x}  {hit.perms}{region}  {data}"
    yield _summary(result)


def render_json(result: SearchResult) -> Iterator[str]:
    """One JSON object, a hit a line: ``{"pattern", "hits": [...], "found", "more"}``."""
    yield f'{{"pattern": {json.dumps(result.options.pattern.describe)}, "hits": ['
    held: str | None = None
    for hit in result.hits():
        record: dict[str, object] = {"address": f"0x{hit.address:x}", "paddr": f"0x{hit.paddr:x}"}
        if not result.physical:
            record["perms"] = hit.perms
            record["region"] = hit.region or None
        record["context"] = hit.context.hex()
        if held is not None:
            yield held + ","
        held = json.dumps(record)
    if held is not None:
        yield held
    yield f'], "found": {result.found}, "more": {json.dumps(result.more)}}}'
