"""Benchmark of loading gdbext into GDB and LLDB, without a target (no QEMU).

Fresh debugger processes, with and without gdbext, taking turns (:func:`benchlib.load_figures`):

- GDB: ``gdb -nx -batch`` against ``gdb -nx -batch -ex 'source gdbext/gdbinit.py'`` (the
  target: the difference at most 0.3 s);
- LLDB, when installed: ``lldb --batch -o 'script pass'`` against ``scripts/lldb --batch -o
  'script pass'`` (the wrapper imports ``gdbext/lldbinit.py``), for reference.

One unmeasured run of each loads first, as a user's first run does: it writes Python's bytecode
caches where they are missing. The figures are medians of ``--repeat`` rounds. The tests check
what keeps loading cheap, deterministically: what it imports
(``test_loading_imports_only_gdbext_and_pluggy`` in ``tests/test_gdb_frontend.py`` and
``tests/test_lldb_frontend.py``). The time is measured here, not there, because a loaded machine
makes any wall-clock bound in a test fail at random.

Run: ``.venv/bin/python bench/bench_load.py`` (``--repeat 11`` by default; ``--json`` for
machine-readable output). Exit status 1 when GDB's target is missed, 2 when the benchmark could
not run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import Any

from bench_gdb import LOAD_SECONDS, gdb_load_figures
from bench_lldb import lldb_load_figures
from benchlib import BenchError


def measure(repeat: int) -> dict[str, Any]:
    """The load figures of GDB and (when installed) LLDB, after one warm-up round each."""
    if shutil.which("gdb") is None:
        raise BenchError("no gdb on PATH (apt-get install gdb)")
    gdb_load_figures(1)
    report: dict[str, Any] = {"repeat": repeat, "gdb": gdb_load_figures(repeat)}
    if shutil.which("lldb") is not None:
        lldb_load_figures(1)
        report["lldb"] = lldb_load_figures(repeat)
    report["cpus"] = os.cpu_count()
    report["loadavg"] = os.getloadavg()[0]
    return report


def lines(report: dict[str, Any]) -> list[str]:
    ms = {k: {f: v * 1000 for f, v in report[k].items()} for k in ("gdb", "lldb") if k in report}
    out = [
        f"medians of {report['repeat']} rounds, {report['cpus']} CPUs, "
        f"load average {report['loadavg']:.2f} at the end",
        f"GDB:  gdb -nx -batch {ms['gdb']['empty_s']:.0f} ms, with source gdbext/gdbinit.py "
        f"{ms['gdb']['loaded_s']:.0f} ms: load {ms['gdb']['load_s']:.0f} ms "
        f"(target {LOAD_SECONDS * 1000:.0f} ms: "
        f"{'met' if report['gdb']['load_s'] <= LOAD_SECONDS else '**missed**'})",
    ]
    if "lldb" in ms:
        out.append(
            f"LLDB: lldb --batch {ms['lldb']['empty_s']:.0f} ms, scripts/lldb --batch "
            f"{ms['lldb']['loaded_s']:.0f} ms: load {ms['lldb']['load_s']:.0f} ms"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=11, help="rounds (medians); default 11")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    try:
        report = measure(args.repeat)
    except BenchError as exc:
        print(f"bench_load: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else "\n".join(lines(report)))
    return 0 if report["gdb"]["load_s"] <= LOAD_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
