"""What the debugger sides of the live benchmarks share (``bench/_gdb_side.py`` inside GDB,
``bench/_lldb_side.py`` inside LLDB): the measurements, over a small :class:`Side` that speaks
to its debugger.

Each measurement is timed inside the debugger's Python with ``time.perf_counter`` around one
command (its output collected as a string); each round takes every measurement in turn, so the
machine's noise falls on all alike, and the host script takes the medians:

- the floor: the pages a default ``pt-walk`` reads (the command run once through
  :class:`benchlib.RecordingMapper`, which offers no prefetch), read once each in PhyMemMode,
  bracketed as the backend brackets its reads (:meth:`Side.floor`);
- ``pt-walk`` cold and warm, ``pt-walk --format qemu-tlb`` cold and warm, ``pt-translate`` of
  one kernel-image address cold. Cold: the backend's per-stop cache dropped as a resume or a
  new stop drops it (``LiveState.invalidate``); per-connection probes are kept.

Correctness is checked once: the ``qemu-tlb`` walk against QEMU's ``info tlb`` at the same stop,
the translation against ``gva2gpa``.

Imported inside a debugger, once gdbext is importable.
"""

from __future__ import annotations

import dataclasses
import gc
import io
import json
import os
import re
import time
import traceback
from collections.abc import Callable
from typing import Any, Protocol

from benchlib import RecordingMapper

PAGE = 4096
#: ``pt-translate`` probe: a kernel-image address with this offset into its page.
PROBE_OFFSET = 0x123
KERNEL_IMAGE = 0xFFFF_FFFF_8000_0000
MEASURES = ("floor", "walk_cold", "walk_warm", "tlb_cold", "tlb_warm", "translate_cold")
QUERY = "qqemu.PhyMemMode"


class Side(Protocol):
    """One debugger connected to the stopped guest, with gdbext loaded."""

    #: The backend's :class:`gdbext_gdbstub.state.LiveState` for the connection.
    state: Any

    def execute(self, command: str) -> str:
        """Run a debugger command; its output. :raises RuntimeError: it failed."""
        ...

    def packet(self, text: str) -> str:
        """A raw packet's reply, sent as the backend sends it."""
        ...

    def monitor(self, command: str) -> str:
        """The output of QEMU's monitor command ``command``."""
        ...

    def floor(self, pages: list[int]) -> float:
        """Seconds to read each page once in PhyMemMode, bracketed as the backend does."""
        ...

    def target(self) -> Any:
        """The live backend's target, as a ``pt-*`` command gets it (its ``command_scope`` puts
        everything back)."""
        ...

    def session(self) -> Any:
        """The front end's :class:`gdbext.session.Session`."""
        ...


def timed(side: Side, command: str) -> tuple[float, str]:
    """Wall seconds of ``command`` inside the debugger, and its output."""
    gc.collect()
    start = time.perf_counter()
    out = side.execute(command)
    return time.perf_counter() - start, out


def cold(side: Side, command: str) -> tuple[float, str]:
    """:func:`timed`, the backend's per-stop cache dropped first."""
    side.state.invalidate()
    return timed(side, command)


def engine_pages(side: Side) -> list[int]:
    """The pages a default ``pt-walk`` reads, in first-read order: the command run once on the
    live target with a mapper that records each read and offers no prefetch, so that the engine
    asks page by page for exactly the tables it walks (with a stop cache of its own, so that no
    page table kept from an earlier command answers instead)."""
    from gdbext.frontend.parsing import parse_command
    from gdbext.frontend.runner import execute
    from gdbext.plugin.target import StopCache

    target = side.target()
    recorder = RecordingMapper(target.mapper)
    recorded = dataclasses.replace(target, mapper=recorder, stop_cache=StopCache())
    session = side.session()
    args = parse_command(session.parser("pt-walk"), [])
    scope = recorded.command_scope
    assert scope is not None
    with scope():
        execute(args, session.host, io.StringIO(), recorded)
    return list(recorder.pages)


def fetched(side: Side, command: str) -> dict[str, int]:
    """What the backend read for ``command`` run cold: reads sent and pages they covered."""
    side.state.invalidate()
    stats = side.state.stats
    reads, size = stats.reads, stats.bytes
    side.execute(command)
    return {"reads": stats.reads - reads, "pages": (stats.bytes - size) // PAGE}


def tlb_lines(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


def probe_address(tlb: list[str]) -> int:
    """A kernel-image address that ``qemu-tlb`` output maps (else its first mapping)."""
    vas = [int(line.split(":", 1)[0], 16) for line in tlb]
    image = [va for va in vas if va >= KERNEL_IMAGE]
    return (image or vas)[0] + PROBE_OFFSET


def checks(side: Side) -> dict[str, Any]:
    """Correctness, once: the ``qemu-tlb`` walk against QEMU's ``info tlb`` at the same stop, the
    translation of one address against ``gva2gpa``; and the ``pt-translate`` command."""
    results: dict[str, Any] = {}
    side.state.invalidate()
    tlb = tlb_lines(side.execute("pt-walk --format qemu-tlb"))
    qemu = tlb_lines(side.monitor("info tlb"))
    results["tlb_lines"] = len(tlb)
    results["info_tlb_lines"] = len(qemu)
    results["tlb_equal"] = tlb == qemu
    if tlb != qemu:
        diff = next((i for i, (a, b) in enumerate(zip(tlb, qemu, strict=False)) if a != b), None)
        at = min(len(tlb), len(qemu)) if diff is None else diff
        results["tlb_first_difference"] = [at, tlb[at : at + 1], qemu[at : at + 1]]
    vaddr = probe_address(tlb)
    results["translate_vaddr"] = f"0x{vaddr:x}"
    results["translate"] = f"pt-translate 0x{vaddr:x}"
    m = re.search(r"->\s*(0x[0-9a-f]+)", side.execute(results["translate"]))
    results["translate_paddr"] = m.group(1) if m else None
    g = re.search(r"gpa:\s*(?:0x)?([0-9a-f]+)", side.monitor(f"gva2gpa 0x{vaddr:x}"), re.I)
    results["gva2gpa"] = f"0x{int(g.group(1), 16):x}" if g else None
    return results


def measure(side: Side, repeat: int) -> dict[str, Any]:
    """Every measurement, ``repeat`` rounds (see the module's description)."""
    results: dict[str, Any] = {"repeat": repeat, "mode_before": side.packet(QUERY)}
    pages = engine_pages(side)
    results["pages"] = len(pages)
    results["fetched_walk"] = fetched(side, "pt-walk")
    results.update(checks(side))
    translate = results["translate"]
    measures: list[tuple[str, Callable[[], tuple[float, str]]]] = [
        ("floor", lambda: (side.floor(pages), "")),
        ("walk_cold", lambda: cold(side, "pt-walk")),
        ("walk_warm", lambda: timed(side, "pt-walk")),
        ("tlb_cold", lambda: cold(side, "pt-walk --format qemu-tlb")),
        ("tlb_warm", lambda: timed(side, "pt-walk --format qemu-tlb")),
        ("translate_cold", lambda: cold(side, translate)),
    ]
    rounds: dict[str, list[float]] = {name: [] for name in MEASURES}
    lines: dict[str, int] = {}
    for _ in range(repeat):
        for name, run in measures:
            seconds, text = run()
            rounds[name].append(seconds)
            if text:
                lines[name] = len(text.splitlines())
    results["seconds"] = rounds
    results["lines"] = lines
    results["mode_after"] = side.packet(QUERY)
    return results


def run_and_write(config_env: str, run: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Read the side's settings (JSON in the environment variable ``config_env``), call ``run``
    with them and write what it returns as JSON to the settings' ``out`` file; an exception is
    written there as ``{"error", "traceback"}``, for the host script to report, since a side
    inside a debugger has no other channel."""
    config = json.loads(os.environ[config_env])
    try:
        results = run(config)
    except Exception as exc:
        results = {
            "error": f"{type(exc).__name__}: {' '.join(str(exc).split())}",
            "traceback": traceback.format_exc(),
        }
    with open(config["out"], "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
