"""The GDB side of ``bench/bench_gdb.py``: runs inside ``gdb -nx -batch -x bench/_gdb_side.py``.

GDB is already connected to the stopped guest's gdbstub (``-ex 'target remote ...'``). The
script reads its settings as JSON from the environment variable :data:`CONFIG_ENV`, sources
``gdbext/gdbinit.py`` (timed), times the first ``pt-walk`` after connecting, then takes the
measurements of :mod:`sidelib` through :class:`GdbSide` (commands through
``gdb.execute(COMMAND, to_string=True)``). The results (raw times, page counts, correctness
checks, optional profiles) go as JSON to the file the settings name; an error becomes
``{"error": "..."}`` there, never a traceback.

Cold measurements drop the backend's per-stop cache the way GDB's events do after a resume:
:meth:`gdbext_gdbstub.state.LiveState.invalidate` (the handler that ``gdb.events.cont``,
``memory_changed``, ``register_changed`` and ``inferior_call`` run). GDB's own register and
frame caches are left alone: after a real stop GDB has filled them before the prompt (to print
where it stopped), so a user's first command does not pay for them either.

Debugger-side script: it imports ``gdb``, and gdbext only after ``gdbinit.py`` has set the path.
"""

from __future__ import annotations

import cProfile
import gc
import io
import os
import pstats
import re
import sys
import time
from typing import Any

import gdb

# GDB runs this file by its path: its directory is not on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(sys._getframe().f_code.co_filename)))

import sidelib

CONFIG_ENV = "GDBEXT_BENCH_GDB"
PAGE = 4096
_RECEIVED = re.compile(r'received: "(.*)"\s*$', re.DOTALL)
#: Commands profiled with ``profile`` set (cold ones after a cache drop).
PROFILED = (
    ("pt-walk", True),
    ("pt-walk --format qemu-tlb", True),
    ("pt-walk", False),
    ("pt-translate", True),
)


def execute(command: str) -> str:
    return gdb.execute(command, to_string=True) or ""


class GdbSide:
    """The measuring GDB (:class:`sidelib.Side`): the live backend's state for its connection."""

    def __init__(self) -> None:
        from gdbext_gdb.gdb_link import state_for

        execute("pt-info")  # opens the backend: probes PhyMemMode and RAM once per connection
        self.state = state_for(gdb.selected_inferior())

    def execute(self, command: str) -> str:
        return execute(command)

    def packet(self, text: str) -> str:
        m = _RECEIVED.search(execute(f"maintenance packet {text}"))
        if m is None:
            raise RuntimeError(f"no reply to {text}")
        return m.group(1)

    def monitor(self, command: str) -> str:
        return execute(f"monitor {command}")

    def target(self) -> Any:
        from gdbext_gdbstub.options import LiveOptions

        return self.state.open(LiveOptions())

    def session(self) -> Any:
        from gdbext_gdb.gdb_commands import installed

        front = installed()
        assert front is not None
        return front.session

    def floor(self, pages: list[int]) -> float:
        """Query the mode, switch to 1 and flush GDB's cache, read, restore, flush again."""
        inferior = gdb.selected_inferior()
        gc.collect()
        start = time.perf_counter()
        previous = self.packet(sidelib.QUERY)
        switched = previous != "1"
        if switched:
            if self.packet("Qqemu.PhyMemMode:1") != "OK":
                raise RuntimeError("the gdbstub refused Qqemu.PhyMemMode:1")
            execute("maintenance flush dcache")
        try:
            for page in pages:
                inferior.read_memory(page, PAGE).tobytes()
        finally:
            if switched:
                self.packet(f"Qqemu.PhyMemMode:{previous}")
                execute("maintenance flush dcache")
        return time.perf_counter() - start


def profile(command: str, cold: bool, side: GdbSide, top: int) -> str:
    """cProfile of one run of ``command``, gc disabled (Python 3.11.2 crashes under cProfile
    with gc on, CPython gh-101975): the ``top`` functions by own time, then by cumulative."""
    if cold:
        side.state.invalidate()
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
    gc.collect()
    start = time.perf_counter()
    execute(f"source {config['gdbinit']}")
    source_s = time.perf_counter() - start
    import gdbext_gdb.gdb_commands

    if gdbext_gdb.gdb_commands.installed() is None:
        raise RuntimeError(f"source {config['gdbinit']} did not install the commands")

    if config.get("read_via"):
        execute(f"pt-backend gdb --read-via {config['read_via']}")
    gc.collect()
    start = time.perf_counter()
    execute("pt-walk")  # probes the connection, then walks
    first_walk_s = time.perf_counter() - start
    side = GdbSide()
    results = sidelib.measure(side, int(config["repeat"]))
    results["source_s"] = source_s
    results["first_walk_s"] = first_walk_s
    if config.get("profile"):
        results["profiles"] = {
            f"{command} ({'cold' if is_cold else 'warm'})": profile(
                results["translate"] if command == "pt-translate" else command, is_cold, side, 18
            )
            for command, is_cold in PROFILED
        }
    return results


def main() -> None:
    sidelib.run_and_write(CONFIG_ENV, run)


if __name__ == "__main__":
    main()
