"""Benchmark of what the relay ``pt-connect`` puts between LLDB and QEMU costs per command.

The script boots Debian's kernel under QEMU (TCG, ``fixtures/qemu_guest.py``; 128 MiB by
default, ``--mem``) and stops the VM. On that same stopped state, ``--pairs`` pairs of
``scripts/lldb --batch`` processes run ``bench/_lldb_side.py``'s ``gdbext-bench-relay``: one
connects with ``pt-connect`` (through the relay), the other with plain ``gdb-remote`` (directly;
the VM is stopped, so LLDB 14's handshake works), in turns (the order swapped every pair). Each
takes ``--repeat`` rounds of: one packet's round trip (``process plugin packet send qC``),
``pt-walk`` and ``pt-translate`` of one kernel-image address, cold (the backend's per-stop cache
dropped) and warm, timed inside LLDB's Python around ``HandleCommand``. Each LLDB leaves without
a packet (it and its relay are killed), so the VM stays stopped: the script checks that it is
still paused with the same CR3 after each, and that both connections gave the same bytes.

Reported: the medians over every round of each connection, the difference and the ratio, and
the reads of a cold command (a read is one packet exchange; the backend's other packets per
command are a handful).

Run: ``.venv/bin/python bench/bench_relay.py`` (``--repeat 11 --pairs 3`` by default;
``--config``, ``--mem``, ``--json`` as in ``bench/bench_lldb.py``). Exit status 2 when the
benchmark could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

from bench_gdb import cpu_sample, other_cpus
from benchlib import BenchError, check_live_arguments, live_arguments, live_guest, run_side

ROOT = Path(__file__).resolve().parent.parent
LLDB_SIDE = ROOT / "bench" / "_lldb_side.py"
LLDB_WRAPPER = ROOT / "scripts" / "lldb"
CONFIG_ENV = "GDBEXT_BENCH_RELAY"
MEASURES = ("packet", "walk_cold", "walk_warm", "translate_cold", "translate_warm")
CONNECTIONS = ("direct", "relay")


def lldb_argv() -> list[str]:
    return [
        str(LLDB_WRAPPER), "--batch", "-Q",
        "-o", f"command script import {LLDB_SIDE}",
        "-o", "gdbext-bench-relay",
    ]  # fmt: skip


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1e3


def measure(args: argparse.Namespace, log: Any) -> dict[str, Any]:
    qg, config, report = live_guest(args)
    log(f"booting Debian's kernel with {args.mem} under QEMU (TCG)...")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CONNECTIONS}
    try:
        with qg.QemuGuest(config) as guest:
            guest.stop()
            report["boot_s"] = guest.boot_seconds
            cr3 = guest.cr3()
            before = cpu_sample(guest.pid)
            address = f"127.0.0.1:{guest.gdb_port}"
            for pair in range(args.pairs):
                order = CONNECTIONS if pair % 2 == 0 else CONNECTIONS[::-1]
                for name in order:
                    log(f"pair {pair + 1}/{args.pairs}: {name}, {args.repeat} rounds...")
                    settings = {"repeat": args.repeat, "relay": name == "relay", "address": address}
                    side = run_side(lldb_argv(), CONFIG_ENV, settings, "LLDB")
                    runs[name].append(side)
                    status = guest.hmp("info status").strip()
                    if status != "VM status: paused" or guest.cr3() != cr3:
                        raise BenchError(f"after LLDB ({name}): {status}, not the same stop")
            report["other_cpus"] = other_cpus(before, cpu_sample(guest.pid))
    except qg.GuestError as exc:
        raise BenchError(f"guest: {exc}") from None
    outputs = {json.dumps(r["outputs"], sort_keys=True) for rs in runs.values() for r in rs}
    if len(outputs) != 1:
        raise BenchError(f"the connections' outputs differ: {sorted(outputs)}")
    if [r["relays"] for r in runs["relay"]] != [1] * args.pairs or any(
        r["relays"] for r in runs["direct"]
    ):
        raise BenchError("a relay where there should be none, or none where there should be one")
    report["runs"] = runs
    report["outputs"] = runs["relay"][0]["outputs"]
    report["reads"] = runs["relay"][0]["reads"]
    report["translate"] = runs["relay"][0]["translate"]
    return report


def medians(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per connection, per measure: the median over every round of every process (ms)."""
    return {
        name: {
            m: median_ms([s for run in report["runs"][name] for s in run["seconds"][m]])
            for m in MEASURES
        }
        for name in CONNECTIONS
    }


def table(report: dict[str, Any]) -> list[str]:
    med = medians(report)
    reads = report["reads"]
    names = {
        "packet": "one packet (`process plugin packet send qC`)",
        "walk_cold": f"`pt-walk`, cold ({reads['walk_cold']['reads']} reads)",
        "walk_warm": "`pt-walk`, warm (same stop)",
        "translate_cold": f"`{report['translate']}`, cold ({reads['translate_cold']['reads']} "
        "reads)",
        "translate_warm": f"`{report['translate']}`, warm",
    }
    rows = [
        ("measure", "direct (`gdb-remote`)", "relay (`pt-connect`)", "relay - direct", "ratio"),
        ("---", "---", "---", "---", "---"),
    ]
    for m in MEASURES:
        d, r = med["direct"][m], med["relay"][m]
        rows.append((names[m], f"{d:.2f} ms", f"{r:.2f} ms", f"{r - d:+.2f} ms", f"{r / d:.2f}x"))
    return ["| " + " | ".join(row) + " |" for row in rows]


def print_report(report: dict[str, Any]) -> None:
    runs = report["runs"]["relay"]
    rounds = len(runs) * runs[0]["repeat"]
    print(
        f"gdbext relay cost: {report['guest']}; medians of {rounds} rounds per connection "
        f"({len(runs)} LLDB processes each, taking turns, the same stopped VM)"
    )
    print()
    print("\n".join(table(report)))
    out = report["outputs"]
    print(f"- both connections printed the same: pt-walk {out['walk_cold']}; translate "
          f"{out['translate_cold']}")  # fmt: skip
    busy = report["other_cpus"]
    busy_text = "unknown" if busy is None else f"{busy:.1f} of {report['cpus']} CPUs"
    print(
        f"- boot to the marker: {report['boot_s']:.1f} s; QEMU: {report['qemu']}; other "
        f"processes (the relay's own CPU time included) kept {busy_text} busy on average"
    )
    print(f"- command: `{report['command']}`")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    live_arguments(parser)
    parser.add_argument(
        "--pairs", type=int, default=3, help="pairs of LLDB processes (direct, relay); default 3"
    )
    args = parser.parse_args(argv)
    check_live_arguments(parser, args)
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    given = sys.argv[1:] if argv is None else argv
    try:
        report = measure(args, lambda line: print(line, file=sys.stderr, flush=True))
    except BenchError as exc:
        print(f"bench_relay: {exc}", file=sys.stderr)
        return 2
    report["command"] = shlex.join([".venv/bin/python", "bench/bench_relay.py", *given])
    report["cpus"] = os.cpu_count()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
