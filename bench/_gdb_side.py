"""The GDB side of ``bench/bench_gdb.py``: runs inside ``gdb -nx -batch -x bench/_gdb_side.py``.

GDB is already connected to the stopped guest's gdbstub (``-ex 'target remote ...'``). The
script reads its settings as JSON from the environment variable :data:`CONFIG_ENV`, sources
``gdbext/gdbinit.py`` (timed), and times every command inside GDB's Python with
``time.perf_counter`` around ``gdb.execute(COMMAND, to_string=True)``. Each round takes every
measurement in turn, so the machine's noise falls on all alike; the host script takes the
medians. The results (raw times, page counts, correctness checks, optional profiles) go as JSON
to the file the settings name; an error becomes ``{"error": "..."}`` there, never a traceback.

A cold measurement drops the live backend's per-stop cache first, the way GDB's events do after
a resume: :meth:`gdbext_gdb.live.LiveState.invalidate` (the handler that ``gdb.events.cont``,
``memory_changed``, ``register_changed`` and ``inferior_call`` run): table pages and control
registers are read again. GDB's own register and frame caches are left alone: after a real stop
GDB has filled them before the prompt (to print where it stopped), so a user's first command does
not pay for them either. Per-connection probes (PhyMemMode support, ``monitor info mtree -f``)
are kept, as they are after a resume.

Debugger-side script: it imports ``gdb``, and gdbext only after ``gdbinit.py`` has set the path.
"""

from __future__ import annotations

import cProfile
import dataclasses
import gc
import io
import json
import os
import pstats
import re
import time
import traceback
from collections.abc import Callable
from typing import Any

import gdb

CONFIG_ENV = "GDBEXT_BENCH_GDB"
PAGE = 4096
PAGE_MASK = ~(PAGE - 1)
_RECEIVED = re.compile(r'received: "(.*)"\s*$', re.DOTALL)
#: ``pt-translate`` probe: a kernel-image address with this offset into its page.
PROBE_OFFSET = 0x123
#: Commands profiled with ``profile`` set (cold ones after a cache drop).
PROFILED = (
    ("pt-walk", True),
    ("pt-walk --format qemu-tlb", True),
    ("pt-walk", False),
    ("pt-translate", True),
)
KERNEL_IMAGE = 0xFFFF_FFFF_8000_0000


def execute(command: str) -> str:
    return gdb.execute(command, to_string=True) or ""


def packet(text: str) -> str:
    """A raw packet's reply (``maintenance packet``), as the backend sends it."""
    m = _RECEIVED.search(execute(f"maintenance packet {text}"))
    if m is None:
        raise RuntimeError(f"no reply to {text}")
    return m.group(1)


def timed(command: str) -> tuple[float, str]:
    """Wall seconds of ``command`` inside GDB, and its output."""
    gc.collect()
    start = time.perf_counter()
    out = execute(command)
    return time.perf_counter() - start, out


class Bench:
    """The live backend's state for this connection, and the measurements on it."""

    def __init__(self) -> None:
        from gdbext_gdb.gdb_link import state_for

        execute("pt-info")  # opens the backend: probes PhyMemMode and RAM once per connection
        self.state = state_for(gdb.selected_inferior())

    def drop(self) -> None:
        """Make the next command cold: the backend's per-stop cache dropped, as on resume."""
        self.state.invalidate()

    def engine_pages(self) -> list[int]:
        """The pages a default ``pt-walk`` reads, in first-read order: the command run once on
        the live target with a mapper that records each read and offers no prefetch, so the
        engine asks page by page for exactly the tables it walks."""
        from gdbext import cli
        from gdbext_gdb.gdb_commands import installed
        from gdbext_gdb.live import LiveOptions

        front = installed()
        assert front is not None
        target = self.state.open(LiveOptions())
        recorder = RecordingMapper(target.mapper)
        recorded = dataclasses.replace(target, mapper=recorder)
        args = cli.parse_command(front.session.parser("pt-walk"), [])
        scope = recorded.command_scope
        assert scope is not None
        with scope():
            cli.execute(args, front.session.host, io.StringIO(), recorded)
        return list(recorder.pages)

    def floor(self, pages: list[int]) -> float:
        """Seconds to read each page once through PhyMemMode, bracketed as the backend does:
        query the mode, switch to 1 and flush GDB's cache, read, restore, flush again."""
        inferior = gdb.selected_inferior()
        gc.collect()
        start = time.perf_counter()
        previous = packet("qqemu.PhyMemMode")
        switched = previous != "1"
        if switched:
            if packet("Qqemu.PhyMemMode:1") != "OK":
                raise RuntimeError("the gdbstub refused Qqemu.PhyMemMode:1")
            execute("maintenance flush dcache")
        try:
            for page in pages:
                inferior.read_memory(page, PAGE).tobytes()
        finally:
            if switched:
                packet(f"Qqemu.PhyMemMode:{previous}")
                execute("maintenance flush dcache")
        return time.perf_counter() - start

    def fetched(self, command: str) -> dict[str, int]:
        """What the backend read for ``command`` run cold: reads sent and pages they covered."""
        self.drop()
        stats = self.state.stats
        reads, size = stats.reads, stats.bytes
        execute(command)
        return {"reads": stats.reads - reads, "pages": (stats.bytes - size) // PAGE}


class RecordingMapper:
    """A read-only mapper that records the pages read through it (no ``prefetch``)."""

    read_only = True

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.pages: dict[int, None] = {}

    def read(self, paddr: int, size: int) -> bytes:
        for page in range(paddr & PAGE_MASK, paddr + max(size, 1), PAGE):
            self.pages.setdefault(page, None)
        data: bytes = self._inner.read(paddr, size)
        return data

    def write(self, paddr: int, data: bytes) -> None:
        self._inner.write(paddr, data)


def tlb_lines(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


def probe_address(tlb: list[str]) -> int:
    """A kernel-image address that ``qemu-tlb`` output maps (else its first mapping)."""
    vas = [int(line.split(":", 1)[0], 16) for line in tlb]
    image = [va for va in vas if va >= KERNEL_IMAGE]
    return (image or vas)[0] + PROBE_OFFSET


def profile(command: str, cold: bool, bench: Bench, top: int) -> str:
    """cProfile of one run of ``command``, gc disabled (Python 3.11.2 crashes under cProfile
    with gc on, CPython gh-101975): the ``top`` functions by own time, then by cumulative."""
    if cold:
        bench.drop()
    gc.collect()
    gc.disable()
    prof = cProfile.Profile()
    try:
        prof.enable()
        execute(command)
        prof.disable()
    finally:
        gc.enable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def run(config: dict[str, Any]) -> dict[str, Any]:
    repeat = int(config["repeat"])
    results: dict[str, Any] = {"repeat": repeat}

    gc.collect()
    start = time.perf_counter()
    execute(f"source {config['gdbinit']}")
    results["source_s"] = time.perf_counter() - start
    import gdbext_gdb.gdb_commands

    if gdbext_gdb.gdb_commands.installed() is None:
        raise RuntimeError(f"source {config['gdbinit']} did not install the commands")

    results["first_walk_s"], _ = timed("pt-walk")  # probes the connection, then walks
    bench = Bench()
    results["mode_before"] = packet("qqemu.PhyMemMode")
    pages = bench.engine_pages()
    results["pages"] = len(pages)
    results["fetched_walk"] = bench.fetched("pt-walk")

    # Correctness, once: the qemu-tlb walk against QEMU's own info tlb at the same stop, and the
    # translation of one address against gva2gpa.
    bench.drop()
    tlb = tlb_lines(execute("pt-walk --format qemu-tlb"))
    qemu = tlb_lines(execute("monitor info tlb"))
    results["tlb_lines"] = len(tlb)
    results["info_tlb_lines"] = len(qemu)
    results["tlb_equal"] = tlb == qemu
    if tlb != qemu:
        diff = next((i for i, (a, b) in enumerate(zip(tlb, qemu, strict=False)) if a != b), None)
        at = min(len(tlb), len(qemu)) if diff is None else diff
        results["tlb_first_difference"] = [at, tlb[at : at + 1], qemu[at : at + 1]]
    vaddr = probe_address(tlb)
    results["translate_vaddr"] = f"0x{vaddr:x}"
    translate = f"pt-translate 0x{vaddr:x}"
    out = execute(translate)
    m = re.search(r"->\s*(0x[0-9a-f]+)", out)
    results["translate_paddr"] = m.group(1) if m else None
    g = re.search(r"gpa:\s*(?:0x)?([0-9a-f]+)", execute(f"monitor gva2gpa 0x{vaddr:x}"), re.I)
    results["gva2gpa"] = f"0x{int(g.group(1), 16):x}" if g else None

    rounds: dict[str, list[float]] = {
        name: []
        for name in ("floor", "walk_cold", "walk_warm", "tlb_cold", "tlb_warm", "translate_cold")
    }
    lines: dict[str, int] = {}
    measures: list[tuple[str, Callable[[], tuple[float, str]]]] = [
        ("floor", lambda: (bench.floor(pages), "")),
        ("walk_cold", lambda: cold("pt-walk")),
        ("walk_warm", lambda: timed("pt-walk")),
        ("tlb_cold", lambda: cold("pt-walk --format qemu-tlb")),
        ("tlb_warm", lambda: timed("pt-walk --format qemu-tlb")),
        ("translate_cold", lambda: cold(translate)),
    ]

    def cold(command: str) -> tuple[float, str]:
        bench.drop()
        return timed(command)

    for _ in range(repeat):
        for name, measure in measures:
            seconds, text = measure()
            rounds[name].append(seconds)
            if text:
                lines[name] = len(text.splitlines())
    results["seconds"] = rounds
    results["lines"] = lines
    results["mode_after"] = packet("qqemu.PhyMemMode")

    if config.get("profile"):
        results["profiles"] = {
            f"{command} ({'cold' if is_cold else 'warm'})": profile(
                translate if command == "pt-translate" else command, is_cold, bench, 18
            )
            for command, is_cold in PROFILED
        }
    return results


def main() -> None:
    config = json.loads(os.environ[CONFIG_ENV])
    try:
        results = run(config)
    except Exception as exc:
        results = {
            "error": f"{type(exc).__name__}: {' '.join(str(exc).split())}",
            "traceback": traceback.format_exc(),
        }
    with open(config["out"], "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
