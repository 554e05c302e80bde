"""The built-in output formats, registered as a plugin like any other."""

from __future__ import annotations

from collections.abc import Sequence

from gdbext.plugin.formats import OutputFormat
from gdbext.plugin.hookspecs import hookimpl
from gdbext.render import audit, jsonout, ptdump, qemu_tlb, text


@hookimpl
def gdbext_output_formats() -> Sequence[OutputFormat]:
    return [
        OutputFormat("text", "walk", text.render_walk, "one line per merged range"),
        OutputFormat("json", "walk", jsonout.render_walk, "mappings as JSON"),
        OutputFormat("qemu-tlb", "walk", qemu_tlb.render_walk, "QEMU's `info tlb` lines"),
        OutputFormat("ptdump", "walk", ptdump.render_walk, "Linux's debugfs page_tables lines"),
        OutputFormat("text", "translate", text.render_translate, "every level, decoded"),
        OutputFormat("json", "translate", jsonout.render_translate, "an array of records"),
        OutputFormat("text", "info", text.render_info, "paging state"),
        OutputFormat("json", "info", jsonout.render_info, "paging state as JSON"),
        OutputFormat("text", "heap", text.render_heap, "the heap range"),
        OutputFormat("json", "heap", jsonout.render_heap, '{"start", "end"}'),
        OutputFormat("text", "audit", audit.render_audit_text, "one line per finding"),
        OutputFormat("json", "audit", audit.render_audit_json, '{"findings", "summary"}'),
    ]
