"""The LLDB side of ``bench/bench_lldb.py``: runs inside the real ``lldb``.

``scripts/lldb --batch -o 'command script import bench/_lldb_side.py' -o 'pt-connect ...'
-o gdbext-bench-lldb`` (``scripts/lldb`` imports ``gdbext/lldbinit.py`` first). The command reads
its settings as JSON from the environment variable :data:`CONFIG_ENV` and times each measurement
inside LLDB's Python with ``time.perf_counter`` around ``HandleCommand(COMMAND)`` (the command's
output collected in its result, as GDB's side collects it with ``to_string=True``). Each round
takes every measurement in turn; the host script takes the medians. The measurements are
``bench/_gdb_side.py``'s, the same way:

- the floor: the pages a default ``pt-walk`` reads (the command run once through
  :class:`benchlib.RecordingMapper`), read once each with one 4 KiB ``SBProcess.ReadMemory`` in
  PhyMemMode, bracketed as the backend brackets its reads (LLDB's memory cache bypassed, the
  mode queried, switched and restored);
- ``pt-walk`` cold and warm, ``pt-walk --format qemu-tlb`` cold and warm, ``pt-translate`` of
  one kernel-image address cold. Cold: the backend's per-stop cache dropped as a new stop drops
  it (``LiveState.invalidate``).

The results go as JSON to the file the settings name; an error becomes ``{"error": ...}``. At
the end the process is detached (quitting LLDB while connected would kill QEMU).

Debugger-side script: it imports ``lldb``; gdbext is importable once ``lldbinit.py`` ran.
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
from typing import Any

from benchlib import RecordingMapper

CONFIG_ENV = "GDBEXT_BENCH_LLDB"
COMMAND = "gdbext-bench-lldb"
PAGE = 4096
PROBE_OFFSET = 0x123
KERNEL_IMAGE = 0xFFFF_FFFF_8000_0000
_RESPONSE = re.compile(r"^response: (.*)$", re.M)
_TLB_LINE = re.compile(r"^[0-9a-f]{16}: [0-9a-f]{16} [-A-Z]{9}$", re.M)


class Bench:
    """One LLDB process connected to the guest, and the backend's state for it."""

    def __init__(self, debugger: Any) -> None:
        import lldb

        from gdbext_lldb.lldb_link import state_for

        self.lldb = lldb
        self.debugger = debugger
        self.interpreter = debugger.GetCommandInterpreter()
        self.process = debugger.GetSelectedTarget().GetProcess()
        self.context = lldb.SBExecutionContext(self.process)
        self.execute("pt-info")  # opens the backend: probes PhyMemMode and RAM once
        self.state, self.link = state_for(debugger, self.process)

    def execute(self, command: str) -> str:
        result = self.lldb.SBCommandReturnObject()
        self.interpreter.HandleCommand(command, self.context, result, False)
        if not result.Succeeded():
            raise RuntimeError(f"{command}: {str(result.GetError()).strip()}")
        return str(result.GetOutput() or "")

    def timed(self, command: str) -> tuple[float, str]:
        gc.collect()
        start = time.perf_counter()
        out = self.execute(command)
        return time.perf_counter() - start, out

    def cold(self, command: str) -> tuple[float, str]:
        self.state.invalidate()
        return self.timed(command)

    def packet(self, text: str) -> str:
        m = _RESPONSE.search(self.execute(f"process plugin packet send {text}"))
        if m is None:
            raise RuntimeError(f"no reply to {text}")
        return m.group(1)

    def monitor(self, command: str) -> str:
        return self.execute(f"process plugin packet monitor {command}").replace("\r", "")

    def engine_pages(self) -> list[int]:
        """The pages a default ``pt-walk`` reads, in first-read order."""
        from gdbext import cli
        from gdbext_gdb.live import LiveOptions
        from gdbext_lldb.lldb_commands import installed

        front = installed(self.debugger)
        assert front is not None
        target = self.state.open(LiveOptions())
        recorder = RecordingMapper(target.mapper)
        recorded = dataclasses.replace(target, mapper=recorder)
        args = cli.parse_command(front.session.parser("pt-walk"), [])
        scope = recorded.command_scope
        assert scope is not None
        try:
            with scope():
                cli.execute(args, front.session.host, io.StringIO(), recorded)
        finally:
            self.link.end_bypass()
        return list(recorder.pages)

    def floor(self, pages: list[int]) -> float:
        """Seconds to read each page once in PhyMemMode, bracketed as the backend does."""
        lldb = self.lldb
        error = lldb.SBError()
        gc.collect()
        start = time.perf_counter()
        self.link.flush_cache()  # bypass LLDB's memory cache, as after the backend's switch
        previous = self.packet("qqemu.PhyMemMode")
        switched = previous != "1"
        try:
            if switched and self.packet("Qqemu.PhyMemMode:1") != "OK":
                raise RuntimeError("the gdbstub refused Qqemu.PhyMemMode:1")
            for page in pages:
                data = self.process.ReadMemory(page, PAGE, error)
                if error.Fail() or data is None or len(data) != PAGE:
                    raise RuntimeError(f"read 0x{page:x}: {error.GetCString()}")
        finally:
            if switched:
                self.packet(f"Qqemu.PhyMemMode:{previous}")
            self.link.end_bypass()
        return time.perf_counter() - start


def tlb_lines(text: str) -> list[str]:
    return _TLB_LINE.findall(text.replace("\r", ""))


def probe_address(tlb: list[str]) -> int:
    vas = [int(line.split(":", 1)[0], 16) for line in tlb]
    image = [va for va in vas if va >= KERNEL_IMAGE]
    return (image or vas)[0] + PROBE_OFFSET


def measure(bench: Bench, repeat: int) -> dict[str, Any]:
    results: dict[str, Any] = {"repeat": repeat}
    results["mode_before"] = bench.packet("qqemu.PhyMemMode")
    pages = bench.engine_pages()
    results["pages"] = len(pages)
    stats = bench.state.stats
    bench.state.invalidate()
    reads, size = stats.reads, stats.bytes
    bench.execute("pt-walk")
    results["fetched_walk"] = {"reads": stats.reads - reads, "pages": (stats.bytes - size) // PAGE}

    bench.state.invalidate()
    tlb = tlb_lines(bench.execute("pt-walk --format qemu-tlb"))
    qemu = tlb_lines(bench.monitor("info tlb"))
    results["tlb_lines"] = len(tlb)
    results["info_tlb_lines"] = len(qemu)
    results["tlb_equal"] = tlb == qemu
    vaddr = probe_address(tlb)
    results["translate_vaddr"] = f"0x{vaddr:x}"
    translate = f"pt-translate 0x{vaddr:x}"
    m = re.search(r"->\s*(0x[0-9a-f]+)", bench.execute(translate))
    results["translate_paddr"] = m.group(1) if m else None
    g = re.search(r"gpa:\s*(?:0x)?([0-9a-f]+)", bench.monitor(f"gva2gpa 0x{vaddr:x}"), re.I)
    results["gva2gpa"] = f"0x{int(g.group(1), 16):x}" if g else None

    measures: list[tuple[str, Callable[[], tuple[float, str]]]] = [
        ("floor", lambda: (bench.floor(pages), "")),
        ("walk_cold", lambda: bench.cold("pt-walk")),
        ("walk_warm", lambda: bench.timed("pt-walk")),
        ("tlb_cold", lambda: bench.cold("pt-walk --format qemu-tlb")),
        ("tlb_warm", lambda: bench.timed("pt-walk --format qemu-tlb")),
        ("translate_cold", lambda: bench.cold(translate)),
    ]
    rounds: dict[str, list[float]] = {name: [] for name, _ in measures}
    lines: dict[str, int] = {}
    for _ in range(repeat):
        for name, run in measures:
            seconds, text = run()
            rounds[name].append(seconds)
            if text:
                lines[name] = len(text.splitlines())
    results["seconds"] = rounds
    results["lines"] = lines
    results["mode_after"] = bench.packet("qqemu.PhyMemMode")
    results["memory_cache_after"] = bench.execute(
        "settings show target.process.disable-memory-cache"
    ).strip()
    return results


def run(debugger: Any, command: str, exe_ctx: Any, result: Any, internal_dict: Any) -> None:
    """``gdbext-bench-lldb``: measure, write the JSON results, detach."""
    config = json.loads(os.environ[CONFIG_ENV])
    try:
        results = measure(Bench(debugger), int(config["repeat"]))
    except Exception as exc:
        results = {
            "error": f"{type(exc).__name__}: {' '.join(str(exc).split())}",
            "traceback": traceback.format_exc(),
        }
    finally:
        process = debugger.GetSelectedTarget().GetProcess()
        if process.IsValid():
            process.Detach()
    with open(config["out"], "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)


def __lldb_init_module(debugger: Any, internal_dict: Any) -> None:
    debugger.HandleCommand(f"command script add -o -f {__name__}.run {COMMAND}")
