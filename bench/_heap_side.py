"""The GDB side of ``bench/bench_live_heap.py`` (``gdb -nx -batch -x bench/_heap_side.py``).

GDB is already connected to the stopped guest's gdbstub. The script reads its settings as JSON
from :data:`CONFIG_ENV`, sources ``gdbext/gdbinit.py`` and times ``pt-heap --memmap e820``
(``gdb.execute(..., to_string=True)`` inside GDB's Python) in two states, taking turns:

- fresh: the connection's backend state forgotten (``gdb_link.forget``), as on a new connection:
  the probes (PhyMemMode, RAM), the search for VMCOREINFO, the kernel image, boot_params;
- cold: the per-stop cache dropped (``LiveState.invalidate``, as on resume), the connection's
  probes and VMCOREINFO's place kept (it is read again to check it).

Then, unless told not to, the full scan of RAM for boot_params (what the command did before the
kernel image was searched first, and still does when the image has no copy), timed once, and
its choice (``choose_boot_params``) compared with the command's. Results go as JSON to the file
the settings name; an error becomes ``{"error": "..."}`` there.

Debugger-side script: it imports ``gdb``, and gdbext only after ``gdbinit.py`` has set the path.
"""

from __future__ import annotations

import gc
import os
import re
import sys
import time
from typing import Any

import gdb

# GDB runs this file by its path: its directory is not on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(sys._getframe().f_code.co_filename)))

import sidelib

CONFIG_ENV = "GDBEXT_BENCH_HEAP"
COMMAND = "pt-heap --memmap e820"
_AT = re.compile(r"boot_params at (0x[0-9a-f]+)")


def execute(command: str) -> str:
    return gdb.execute(command, to_string=True) or ""


def timed(command: str) -> tuple[float, str]:
    gc.collect()
    start = time.perf_counter()
    out = execute(command)
    return time.perf_counter() - start, out


def boot_params_at(out: str) -> int:
    m = _AT.search(out)
    if m is None:
        raise RuntimeError(f"no boot_params in {out!r}")
    return int(m.group(1), 16)


def run(config: dict[str, Any]) -> dict[str, Any]:
    execute(f"source {config['gdbinit']}")
    from gdbext_gdb import gdb_link
    from gdbext_gdbstub.options import LiveOptions

    inferior = gdb.selected_inferior()
    fresh: list[float] = []
    cold: list[float] = []
    outputs: set[str] = set()
    reads: list[int] = []
    for _ in range(int(config["repeat"])):
        gdb_link.forget(inferior.connection)
        seconds, out = timed(COMMAND)
        fresh.append(seconds)
        outputs.add(out)
        state = gdb_link.state_for(inferior)
        state.invalidate()
        before = state.stats.bytes
        seconds, out = timed(COMMAND)
        cold.append(seconds)
        reads.append(state.stats.bytes - before)
        outputs.add(out)
    if len(outputs) != 1:
        raise RuntimeError(f"pt-heap said different things: {sorted(outputs)}")
    (out,) = outputs
    results: dict[str, Any] = {
        "repeat": config["repeat"],
        "fresh": fresh,
        "cold": cold,
        "cold_bytes": reads,
        "output": out.strip(),
        "boot_params": boot_params_at(out),
        "vmcoreinfo": state.vmcoreinfo.origin,
    }
    if config.get("full_scan"):
        from gdbext.frontend.commands import RootOptions, _kernel_image
        from gdbext.linux.e820 import choose_boot_params, scan_boot_params

        target = state.open(LiveOptions())
        assert target.command_scope is not None and target.ram is not None
        with target.command_scope():
            gc.collect()
            start = time.perf_counter()
            found, scanned = scan_boot_params(target.mapper, target.ram)
            results["full_scan_s"] = time.perf_counter() - start
            image = _kernel_image(target, RootOptions())
        results["full_scan_mib"] = scanned >> 20
        results["full_scan_found"] = [bp.paddr for bp in found]
        results["full_scan_choice"] = choose_boot_params(found, image, scanned).paddr
    return results


def main() -> None:
    sidelib.run_and_write(CONFIG_ENV, run)


if __name__ == "__main__":
    main()
