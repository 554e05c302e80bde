"""Benchmark of the live commands in LLDB against the same commands in GDB, on one frozen guest.

The script boots Debian's kernel under QEMU (TCG, ``fixtures/qemu_guest.py``; 128 MiB by
default, ``--mem``) and stops the VM. Then, on that same stopped state:

1. one ``gdb -nx -batch`` runs ``bench/_gdb_side.py`` (``bench/bench_gdb.py``'s measurements)
   and leaves with ``disconnect``, which keeps the VM stopped;
2. one ``scripts/lldb --batch`` (``docs/lldb.md``'s start: LLDB with ``gdbext/lldbinit.py``)
   connects with ``pt-connect`` (through its relay: ``bench/bench_relay.py`` measures what that
   costs) and runs ``bench/_lldb_side.py``: the same measurements, timed inside LLDB's Python around
   ``HandleCommand``, then detaches.

Each side takes every measurement in turn in each of ``--repeat`` rounds; the figures are
medians. The target: a full cold ``pt-walk`` in LLDB takes at most 1.5x the GDB
figure. Also reported: the floor (the walk's table pages read once each, in each debugger),
warm walks, ``qemu-tlb`` (checked against ``monitor info tlb`` in both), one cold
``pt-translate`` (checked against ``gva2gpa``), and the load time of ``command script import
gdbext/lldbinit.py`` (``scripts/lldb --batch`` minus ``lldb --batch`` with the same
``PYTHONPATH``).

Run: ``.venv/bin/python bench/bench_lldb.py`` (``--repeat 11`` by default; ``--config la57``
for another guest of ``qemu_guest.CONFIGS``; ``--json`` for machine-readable output). Exit
status 1 when the target is missed, 2 when the benchmark could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench_gdb import cpu_sample, median_ms, other_cpus, run_gdb_side
from benchlib import (
    BenchError,
    check_live_arguments,
    live_arguments,
    live_guest,
    load_figures,
    run_side,
)
from sidelib import MEASURES

ROOT = Path(__file__).resolve().parent.parent
LLDB_SIDE = ROOT / "bench" / "_lldb_side.py"
LLDB_WRAPPER = ROOT / "scripts" / "lldb"
LLDB_CONFIG_ENV = "GDBEXT_BENCH_LLDB"
#: The target: a full cold pt-walk in LLDB at most this many times GDB's.
RATIO = 1.5


def lldb_argv(port: int) -> list[str]:
    return [
        str(LLDB_WRAPPER), "--batch", "-Q",
        "-o", f"command script import {LLDB_SIDE}",
        "-o", f"pt-connect 127.0.0.1:{port}",
        "-o", "gdbext-bench-lldb",
    ]  # fmt: skip


def lldb_python_path() -> str:
    """The directory ``scripts/lldb`` puts on LLDB's ``PYTHONPATH`` (the load-time baseline
    needs it too): the one holding the ``lldb`` package beside the lldb binary."""
    found = shutil.which("lldb")
    if found is None:
        raise BenchError("no lldb on PATH (apt-get install lldb python3-lldb)")
    prefix = Path(os.path.realpath(found)).parent.parent
    for candidate in sorted(prefix.glob("lib/python3*/*-packages")):
        if (candidate / "lldb" / "embedded_interpreter.py").is_file():
            return str(candidate)
    raise BenchError(f"no lldb Python package under {prefix}")


def lldb_load_figures(repeat: int) -> dict[str, float]:
    """Median wall time of ``lldb --batch`` without gdbext and ``scripts/lldb --batch`` (which
    imports ``gdbext/lldbinit.py``), taking turns (:func:`benchlib.load_figures`)."""
    env = {**os.environ, "PYTHONPATH": lldb_python_path()}
    empty = ["lldb", "--batch", "-o", "script pass"]
    loaded = [str(LLDB_WRAPPER), "--batch", "-o", "script pass"]
    return load_figures(empty, loaded, repeat, env)


# --- the report ------------------------------------------------------------------------------


def medians(side: dict[str, Any]) -> dict[str, float]:
    return {name: median_ms(side["seconds"][name]) for name in MEASURES}


def table(report: dict[str, Any]) -> list[str]:
    g, ll = report["gdb"], report["lldb"]
    gm, lm = medians(g), medians(ll)
    ratio = lm["walk_cold"] / gm["walk_cold"]
    verdict = "met" if ratio <= RATIO else "**missed**"

    def checked(side: dict[str, Any]) -> str:
        tlb = "= `info tlb`" if side["tlb_equal"] else "**differs from `info tlb`**"
        tr = side["translate_paddr"] == side["gva2gpa"] and side["gva2gpa"] is not None
        same = "=" if tr else "!="
        return f"qemu-tlb {side['tlb_lines']:,} lines {tlb}; translate {same} `gva2gpa`"

    names = {
        "floor": f"floor: the {ll['pages']} table pages of a default `pt-walk`, read once each",
        "walk_cold": "`pt-walk`, cold (full walk, default text)",
        "walk_warm": "`pt-walk` again at the same stop (warm cache)",
        "tlb_cold": f"`pt-walk --format qemu-tlb`, cold ({ll['lines'].get('tlb_cold', 0):,} lines)",
        "tlb_warm": "`pt-walk --format qemu-tlb`, warm",
        "translate_cold": f"`pt-translate {ll['translate_vaddr']}`, cold",
    }
    rows = [("measure", "GDB", "LLDB", "LLDB / GDB"), ("---", "---", "---", "---")]
    for name in MEASURES:
        rows.append(
            (names[name], f"{gm[name]:.1f} ms", f"{lm[name]:.1f} ms", f"{lm[name] / gm[name]:.2f}x")
        )
    rows[3] = (*rows[3][:3], f"**{ratio:.2f}x** (target <= {RATIO}x: {verdict})")
    load = report["load"]
    rows.append(
        (
            "load: `scripts/lldb --batch` minus `lldb --batch` "
            f"({load['loaded_s'] * 1e3:.0f} - {load['empty_s'] * 1e3:.0f} ms)",
            "",
            f"{load['load_s'] * 1e3:.0f} ms",
            "",
        )
    )
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.append("")
    lines.append(f"- GDB: {checked(g)}; LLDB: {checked(ll)}.")
    lines.append(
        f"- cold `pt-walk` reads: GDB {g['fetched_walk']['pages']} pages in "
        f"{g['fetched_walk']['reads']} reads, LLDB {ll['fetched_walk']['pages']} pages in "
        f"{ll['fetched_walk']['reads']} reads; PhyMemMode before/after: GDB "
        f"{g['mode_before']}/{g['mode_after']}, LLDB {ll['mode_before']}/{ll['mode_after']}; "
        f"LLDB's `{ll['memory_cache_after']}` afterwards."
    )
    return lines


def target_met(report: dict[str, Any]) -> bool:
    gm, lm = medians(report["gdb"]), medians(report["lldb"])
    return lm["walk_cold"] <= RATIO * gm["walk_cold"]


def print_report(report: dict[str, Any]) -> None:
    print(
        f"gdbext live LLDB vs GDB benchmark: {report['guest']}, median of "
        f"{report['lldb']['repeat']} rounds in each debugger (one process each, the same "
        "stopped VM)"
    )
    print()
    print("\n".join(table(report)))
    busy = report["other_cpus"]
    busy_text = "unknown" if busy is None else f"{busy:.1f} of {os.cpu_count()} CPUs"
    print(
        f"- boot to the marker: {report['boot_s']:.1f} s; QEMU: {report['qemu']}; LLDB: "
        f"{report['lldb_version']}; other processes kept {busy_text} busy on average while "
        "the debuggers ran"
    )
    print(f"- command: `{report['command']}`")


def measure(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    qg, config, report = live_guest(args)
    version = subprocess.run(["lldb", "--version"], capture_output=True, text=True, check=False)
    report["lldb_version"] = version.stdout.strip().splitlines()[0] if version.stdout else "unknown"
    log(f"booting Debian's kernel with {args.mem} under QEMU (TCG)...")
    try:
        with qg.QemuGuest(config) as guest:
            guest.stop()
            report["boot_s"] = guest.boot_seconds
            before = cpu_sample(guest.pid)
            log(f"measuring in gdb -nx -batch ({args.repeat} rounds)...")
            # GDB disconnects: the VM stays stopped for LLDB.
            report["gdb"] = run_gdb_side(guest.gdb_port, args.repeat, False, ("disconnect",))
            if guest.hmp("info status").strip() != "VM status: paused":
                raise BenchError("the VM runs after GDB disconnected: not the same state")
            log(f"measuring in scripts/lldb --batch ({args.repeat} rounds)...")
            config = {"repeat": args.repeat}
            report["lldb"] = run_side(lldb_argv(guest.gdb_port), LLDB_CONFIG_ENV, config, "LLDB")
            report["other_cpus"] = other_cpus(before, cpu_sample(guest.pid))
    except qg.GuestError as exc:
        raise BenchError(f"guest: {exc}") from None
    log(f"load time: {args.repeat} pairs of lldb --batch processes...")
    report["load"] = lldb_load_figures(args.repeat)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    live_arguments(parser)
    args = parser.parse_args(argv)
    check_live_arguments(parser, args)
    given = sys.argv[1:] if argv is None else argv
    try:
        report = measure(args, lambda line: print(line, file=sys.stderr, flush=True))
    except BenchError as exc:
        print(f"bench_lldb: {exc}", file=sys.stderr)
        return 2
    report["command"] = shlex.join([".venv/bin/python", "bench/bench_lldb.py", *given])
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0 if target_met(report) else 1


if __name__ == "__main__":
    sys.exit(main())
