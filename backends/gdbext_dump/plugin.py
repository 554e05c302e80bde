"""The dump backend plugin: ``gdbext walk DUMP`` / ``--backend core DUMP``."""

from __future__ import annotations

from collections.abc import Sequence

from gdbext.errors import UsageError
from gdbext.plugin.hookspecs import hookimpl
from gdbext.plugin.target import BackendInfo, BackendOption, OpenRequest, Target
from gdbext.units import parse_int


def open_core(request: OpenRequest) -> Target:
    """Open the dump file named by the request's source (``--format-in``, ``--base``)."""
    if not request.source:
        raise UsageError("the core backend needs a dump file (gdbext walk DUMP)")
    base_text = request.options.get("base")
    base = None
    if base_text is not None:
        try:
            base = parse_int(base_text)
        except ValueError as exc:
            raise UsageError(f"--base: {exc}") from None
    from gdbext_dump.dump import open_dump  # here: listing the backends needs none of it

    return open_dump(request.source, format_in=request.options.get("format_in"), base=base)


@hookimpl
def gdbext_backends() -> Sequence[BackendInfo]:
    return [
        BackendInfo(
            name="core",
            summary="offline dump: QEMU/vmcore ELF, kdump, LiME, raw",
            open=open_core,
            options=[
                BackendOption(
                    "format_in",
                    "FORMAT",
                    "dump format: elf, kdump, lime or raw (default: from the file's magic)",
                ),
                BackendOption(
                    "base", "ADDR", "physical address of a raw image's first byte (default 0)"
                ),
            ],
        )
    ]
