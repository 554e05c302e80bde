"""The built-in output formats, registered as a plugin like any other.

A renderer's module is imported when it first renders (:func:`_lazy`): listing the formats, as
every parser does, needs none of them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from gdbext.plugin.formats import OutputFormat
from gdbext.plugin.hookspecs import hookimpl


def _lazy(module: str, name: str) -> Callable[[Any], Iterator[str]]:
    """The renderer ``name`` of ``gdbext.render.MODULE``, imported on its first call."""

    def render(result: Any, **options: Any) -> Iterator[str]:
        function: Callable[..., Iterator[str]] = getattr(
            importlib.import_module(f"gdbext.render.{module}"), name
        )
        return function(result, **options)

    render.__qualname__ = render.__name__ = name
    return render


@hookimpl
def gdbext_output_formats() -> Sequence[OutputFormat]:
    return [
        OutputFormat(
            "text", "walk", _lazy("text", "render_walk"), "one line per merged range", styles=True
        ),
        OutputFormat("json", "walk", _lazy("jsonout", "render_walk"), "mappings as JSON"),
        OutputFormat(
            "qemu-tlb", "walk", _lazy("qemu_tlb", "render_walk"), "QEMU's `info tlb` lines"
        ),
        OutputFormat(
            "ptdump", "walk", _lazy("ptdump", "render_walk"), "Linux's debugfs page_tables lines"
        ),
        OutputFormat(
            "text",
            "translate",
            _lazy("text", "render_translate"),
            "every level, decoded",
            styles=True,
        ),
        OutputFormat(
            "json", "translate", _lazy("jsonout", "render_translate"), "an array of records"
        ),
        OutputFormat("text", "info", _lazy("text", "render_info"), "paging state"),
        OutputFormat("json", "info", _lazy("jsonout", "render_info"), "paging state as JSON"),
        OutputFormat(
            "text", "who-maps", _lazy("whomaps", "render_who_maps_text"), "a line per mapping"
        ),
        OutputFormat(
            "json", "who-maps", _lazy("whomaps", "render_who_maps_json"), '{"mappings": [...]}'
        ),
        OutputFormat(
            "text", "aliases", _lazy("whomaps", "render_aliases_text"), "a block per finding"
        ),
        OutputFormat(
            "json", "aliases", _lazy("whomaps", "render_aliases_json"), '{"findings": [...]}'
        ),
        OutputFormat("text", "heap", _lazy("text", "render_heap"), "the heap range"),
        OutputFormat("json", "heap", _lazy("jsonout", "render_heap"), '{"start", "end"}'),
        OutputFormat(
            "text",
            "audit",
            _lazy("audit", "render_audit_text"),
            "one line per finding",
            styles=True,
        ),
        OutputFormat(
            "json", "audit", _lazy("audit", "render_audit_json"), '{"findings", "summary"}'
        ),
        OutputFormat(
            "hexdump", "read", _lazy("memory", "render_hexdump"), "hexdump -C lines, gaps named"
        ),
        OutputFormat("u64", "read", _lazy("memory", "render_u64"), "a 64-bit value a line"),
        OutputFormat("u32", "read", _lazy("memory", "render_u32"), "a 32-bit value a line"),
        OutputFormat(
            "raw",
            "read",
            _lazy("memory", "render_raw"),
            "the bytes (to -o FILE or a pipe)",
            binary=True,
        ),
        OutputFormat("json", "read", _lazy("memory", "render_json"), "bytes in hex, and gaps"),
        OutputFormat("text", "kaslr", _lazy("kaslr", "render_text"), "a line per base, leaks"),
        OutputFormat("json", "kaslr", _lazy("kaslr", "render_json"), '{"bases", "leaks"}'),
        OutputFormat("text", "roots", _lazy("roots", "render_text"), "a line per address space"),
        OutputFormat("json", "roots", _lazy("roots", "render_json"), '{"address_spaces": [...]}'),
        OutputFormat("text", "tasks", _lazy("tasks", "render_text"), "a line per task"),
        OutputFormat("json", "tasks", _lazy("tasks", "render_json"), '{"tasks": [...]}'),
        OutputFormat("text", "search", _lazy("search", "render_text"), "one hit a line"),
        OutputFormat("text", "snapshot", _lazy("snapshot", "render_text"), "what was written"),
        OutputFormat(
            "json", "snapshot", _lazy("snapshot", "render_json"), '{"path", "root", "size"...}'
        ),
        OutputFormat(
            "text", "diff", _lazy("diff", "render_text"), "a line per changed range", styles=True
        ),
        OutputFormat("json", "diff", _lazy("diff", "render_json"), '{"changes": [...]}'),
        OutputFormat("json", "search", _lazy("search", "render_json"), "one hit a line, as JSON"),
        OutputFormat(
            "html", "map", _lazy("mapview", "render_html"), "a self-contained page (zoom, pan)"
        ),
        OutputFormat("svg", "map", _lazy("mapsvg", "render_svg"), "the overview, a static picture"),
        OutputFormat("json", "map", _lazy("mapview", "render_json"), "the data the page draws"),
    ]
