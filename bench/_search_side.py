"""The GDB side of ``bench/bench_search_live.py``: runs inside ``gdb -nx -batch -x
bench/_search_side.py``, connected to the stopped guest, settings as JSON in :data:`CONFIG_ENV`.

Each round times, in turn, gdbext's ``pt-search --string TEXT`` cold (the backend's per-stop
cache dropped, as after a resume; the default read path, QEMU's memory on this host) and, when
the settings name gdb-pt-dump's directory, its ``pt -ss TEXT`` (GDB loads it before this script
with ``-ex 'source DIR/pt.py'``, as its README says; each ``pt`` finds QEMU's process and walks
the table anew).
The hit addresses of each tool are kept from the first round: gdbext's from its JSON output,
gdb-pt-dump's from its ``Found at ADDR in ...`` lines.

Debugger-side script: it imports ``gdb``, and gdbext only after ``gdbinit.py`` has set the path.
"""

from __future__ import annotations

import gc
import json
import os
import re
import sys
import time
from typing import Any

import gdb

sys.path.insert(0, os.path.dirname(os.path.abspath(sys._getframe().f_code.co_filename)))

import sidelib

CONFIG_ENV = "GDBEXT_BENCH_SEARCH"
_FOUND = re.compile(r"^Found at (0x[0-9a-f]+) in ", re.M)


def execute(command: str) -> str:
    return gdb.execute(command, to_string=True) or ""


def timed(command: str) -> tuple[float, float, str]:
    """Wall and CPU seconds of ``command`` (GDB's CPU: its own Python, not QEMU's work for
    its monitor commands and packets), and its output."""
    gc.collect()
    cpu, start = time.process_time(), time.perf_counter()
    out = execute(command)
    return time.perf_counter() - start, time.process_time() - cpu, out


def gdbext_hits(text: str) -> list[int]:
    return [int(hit["address"], 16) for hit in json.loads(text)["hits"]]


def ptdump_hits(text: str) -> list[int]:
    if "Exception:" in text or "Cannot get qemu-system pid" in text:
        raise RuntimeError(f"gdb-pt-dump: {' '.join(text.split())[:300]}")
    return [int(m.group(1), 16) for m in _FOUND.finditer(text)]


def run(config: dict[str, Any]) -> dict[str, Any]:
    execute(f"source {config['gdbinit']}")
    from _gdb_side import GdbSide

    side = GdbSide()
    text = config["text"]
    quoted = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    search = f"pt-search --string {quoted} --max {int(config['max'])} --format json"
    commands = {"gdbext": search}
    if config.get("ptdump"):
        # GDB sourced its pt.py before this script (``-ex 'source DIR/pt.py'``, as its README
        # says: sourced from a Python script, pt.py finds not its own directory but ours).
        if "GDB pt-dump" not in execute("help pt"):
            raise RuntimeError(f"source {config['ptdump']}/pt.py did not define its pt command")
        commands["ptdump"] = f"pt -ss {quoted}"
    results: dict[str, Any] = {"repeat": config["repeat"], "commands": commands}
    results["read_path"] = side.target().read_path
    parse = {"gdbext": gdbext_hits, "ptdump": ptdump_hits}
    seconds: dict[str, list[float]] = {name: [] for name in commands}
    cpu: dict[str, list[float]] = {name: [] for name in commands}
    hits: dict[str, list[int]] = {}
    for _ in range(int(config["repeat"])):
        for name, command in commands.items():
            if name == "gdbext":
                side.state.invalidate()
            took, used, out = timed(command)
            seconds[name].append(took)
            cpu[name].append(used)
            if name not in hits:
                hits[name] = parse[name](out)
    results["seconds"] = seconds
    results["cpu"] = cpu
    results["hits"] = hits
    results["mode_after"] = side.packet(sidelib.QUERY)
    return results


def main() -> None:
    sidelib.run_and_write(CONFIG_ENV, run)


if __name__ == "__main__":
    main()
