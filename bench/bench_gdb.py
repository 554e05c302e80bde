"""Benchmark of the live GDB commands on a real Debian kernel under QEMU.

The script boots Debian's kernel under QEMU (TCG, ``fixtures/qemu_guest.py``; 128 MiB by
default, ``--mem``), stops the VM, and runs ONE ``gdb -nx -batch`` process that connects to the
gdbstub and runs ``bench/_gdb_side.py``. That script sources ``gdbext/gdbinit.py`` and times
each measurement inside GDB's Python (``time.perf_counter`` around
``gdb.execute(COMMAND, to_string=True)``); every round takes all measurements in turn and the
figures are medians of ``--repeat`` rounds, all from one run:

1. the floor: reading, once each, the pages a default ``pt-walk`` reads (found by running the
   command once through a mapper that records its reads and offers no prefetch), one 4 KiB
   ``read_memory`` per page in PhyMemMode, bracketed as the backend brackets its reads (query
   the mode, switch, flush GDB's cache, read, restore, flush);
2. ``pt-walk`` with a cold cache (target: at most 1.3x the floor). Cold means the backend's
   per-stop cache was dropped the way a resume drops it (``LiveState.invalidate``, the handler
   of ``gdb.events.cont``): tables and control registers are read again. GDB's own register
   and frame caches are kept, as GDB fills them at a real stop before its prompt;
3. ``pt-walk --format qemu-tlb``, cold (at most 250 ms); its lines are compared once with
   ``monitor info tlb`` at the same stop; and warm, for reference;
4. ``pt-walk`` again at the same stop, warm cache (at most 10 ms);
5. ``pt-translate`` of one kernel-image address, cold (at most 5 ms), checked against
   ``monitor gva2gpa``;
6. the load time of ``source gdbext/gdbinit.py``: fresh ``gdb -nx -batch`` processes with and
   without it, median difference (below 0.3 s); also the one ``source`` timed inside the
   measuring GDB.

The report also says how busy the machine was: the CPUs that other processes kept busy while
the measuring GDB ran (from ``/proc/stat``, minus GDB's and QEMU's own CPU time). Every figure
here is a round trip to QEMU or Python work, so a loaded 2-core machine doubles them.

Run: ``.venv/bin/python bench/bench_gdb.py`` (``--repeat 11`` by default; ``--config la57``
for another guest of ``qemu_guest.CONFIGS``; ``--json`` for machine-readable output;
``--read-via stub`` to time the commands through the gdbstub rather than the default path (on
this host: QEMU's memory, ``bench/bench_hostread.py``); ``--profile`` for cProfile, inside GDB
with gc disabled, of the cold and warm walks and the cold translation). Exit status 1 when a
target is missed, 2 when the benchmark could not run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchlib import (
    BenchError,
    check_live_arguments,
    live_arguments,
    live_guest,
    load_figures,
    run_side,
)

ROOT = Path(__file__).resolve().parent.parent
GDBINIT = ROOT / "gdbext" / "gdbinit.py"
GDB_SIDE = ROOT / "bench" / "_gdb_side.py"
CONFIG_ENV = "GDBEXT_BENCH_GDB"
#: The targets.
FLOOR_RATIO = 1.3
TLB_SECONDS = 0.250
WARM_SECONDS = 0.010
TRANSLATE_SECONDS = 0.005
LOAD_SECONDS = 0.3
#: gdb-pt-dump's figures on the same kind of guest (not installed here).
PT_DUMP = (
    "gdb-pt-dump's `pt` on the same kind of guest, as quoted (not run here): "
    "60-93 ms while dropping 65,504 of the 65,536 ESPFIX aliases, 1.2-1.5 s when told not to "
    "drop them"
)


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1e3


# --- the measuring GDB -----------------------------------------------------------------------


def gdb_argv(port: int) -> list[str]:
    """The measuring GDB: connect, then run the GDB side (which sources gdbinit.py)."""
    return [
        "gdb", "-nx", "-batch",
        "-ex", "set pagination off",
        "-ex", f"target remote 127.0.0.1:{port}",
        "-x", str(GDB_SIDE),
    ]  # fmt: skip


def run_gdb_side(
    port: int,
    repeat: int,
    profile: bool,
    after: tuple[str, ...] = (),
    read_via: str | None = None,
) -> dict[str, Any]:
    """Run the GDB side against the gdbstub at ``port`` (then GDB's commands ``after``): its
    JSON results. ``read_via``: the backend's ``--read-via`` for the commands timed."""
    config = {"repeat": repeat, "gdbinit": str(GDBINIT), "profile": profile, "read_via": read_via}
    argv = [*gdb_argv(port), *(word for command in after for word in ("-ex", command))]
    return run_side(argv, CONFIG_ENV, config, "GDB")


def gdb_load_figures(repeat: int) -> dict[str, float]:
    """Median wall time of ``gdb -nx -batch`` with and without ``source gdbext/gdbinit.py``,
    taking turns (:func:`benchlib.load_figures`)."""
    empty = ["gdb", "-nx", "-batch"]
    return load_figures(empty, [*empty, "-ex", f"source {GDBINIT}"], repeat, quiet_empty=False)


# --- the report ------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def table(report: dict[str, Any]) -> list[str]:
    """The markdown table of figures, targets and verdicts."""
    g = report["gdb"]
    s = {name: median_ms(values) for name, values in g["seconds"].items()}
    floor = s["floor"]
    ratio = s["walk_cold"] / floor
    load = report["load"]
    lines_tlb = g["lines"].get("tlb_cold", 0)
    tlb_check = (
        f"= `monitor info tlb` ({g['info_tlb_lines']:,} lines)"
        if g["tlb_equal"]
        else f"**differs from** `monitor info tlb` ({g['info_tlb_lines']:,} lines)"
    )
    translated = g["translate_paddr"] == g["gva2gpa"] and g["gva2gpa"] is not None
    tr_check = "= `monitor gva2gpa`" if translated else f"**gva2gpa says {g['gva2gpa']}**"
    fetched = g["fetched_walk"]
    rows = [
        ("measure", "median", "target", ""),
        ("---", "---", "---", "---"),
        (
            f"floor: read the {g['pages']} pages a default `pt-walk` reads, once each "
            "(4 KiB `read_memory` in PhyMemMode, mode bracket included)",
            f"{floor:.1f} ms",
            "",
            "",
        ),
        (
            f"`pt-walk`, cold cache ({fetched['pages']} pages in {fetched['reads']} reads)",
            f"{s['walk_cold']:.1f} ms = {ratio:.2f}x floor",
            f"<= {FLOOR_RATIO}x floor",
            verdict(ratio <= FLOOR_RATIO),
        ),
        (
            f"`pt-walk --format qemu-tlb`, cold ({lines_tlb:,} lines {tlb_check})",
            f"{s['tlb_cold']:.1f} ms",
            f"<= {TLB_SECONDS * 1e3:.0f} ms",
            verdict(s["tlb_cold"] <= TLB_SECONDS * 1e3 and g["tlb_equal"]),
        ),
        ("`pt-walk --format qemu-tlb`, warm", f"{s['tlb_warm']:.1f} ms", "", ""),
        (
            "`pt-walk` again at the same stop (warm cache)",
            f"{s['walk_warm']:.1f} ms",
            f"<= {WARM_SECONDS * 1e3:.0f} ms",
            verdict(s["walk_warm"] <= WARM_SECONDS * 1e3),
        ),
        (
            f"`pt-translate {g['translate_vaddr']}`, cold ({tr_check})",
            f"{s['translate_cold']:.2f} ms",
            f"<= {TRANSLATE_SECONDS * 1e3:.0f} ms",
            verdict(s["translate_cold"] <= TRANSLATE_SECONDS * 1e3 and translated),
        ),
        (
            "`source gdbext/gdbinit.py`: fresh `gdb -nx -batch` with it minus without "
            f"({load['loaded_s'] * 1e3:.0f} - {load['empty_s'] * 1e3:.0f} ms)",
            f"{load['load_s'] * 1e3:.0f} ms",
            f"< {LOAD_SECONDS * 1e3:.0f} ms",
            verdict(load["load_s"] < LOAD_SECONDS),
        ),
        (
            "`source gdbext/gdbinit.py` inside the measuring GDB (one run)",
            f"{g['source_s'] * 1e3:.0f} ms",
            "",
            "",
        ),
        (
            "first `pt-walk` after connecting (probes PhyMemMode and RAM; one run)",
            f"{g['first_walk_s'] * 1e3:.1f} ms",
            "",
            "",
        ),
    ]
    return ["| " + " | ".join(row) + " |" for row in rows]


def targets_met(report: dict[str, Any]) -> bool:
    return "**missed**" not in "\n".join(table(report))


def print_report(report: dict[str, Any], command: str) -> None:
    g = report["gdb"]
    print(
        f"gdbext live GDB benchmark: {report['guest']}, median of {g['repeat']} rounds "
        f"(one gdb -nx -batch process; load time over {report['load_repeat']} process pairs)"
    )
    print()
    print("\n".join(table(report)))
    print()
    print(f"- {PT_DUMP}.")
    print(
        f"- PhyMemMode before/after the measurements: {g['mode_before']}/{g['mode_after']}; "
        "cold = the backend's per-stop cache dropped as on resume (LiveState.invalidate, the "
        "gdb.events.cont handler)."
    )
    other = report["other_cpus"]
    busy = "unknown" if other is None else f"{other:.1f} of {os.cpu_count()} CPUs"
    print(
        f"- boot to the marker: {report['boot_s']:.1f} s; QEMU: {report['qemu']}; other "
        f"processes kept {busy} busy on average while the measuring GDB ran"
    )
    print(f"- command: `{command}`")
    for name, text in g.get("profiles", {}).items():
        print(f"\n## cProfile (gc disabled): {name}\n")
        print(text.rstrip())


@dataclasses.dataclass(frozen=True)
class CpuSample:
    """CPU seconds so far: all CPUs busy, waited-for children (GDB), QEMU; and the clock."""

    busy: float
    children: float
    qemu: float
    wall: float


def cpu_sample(qemu_pid: int) -> CpuSample | None:
    """A :class:`CpuSample` from ``/proc`` and ``getrusage``; ``None`` where /proc is missing."""
    tick = os.sysconf("SC_CLK_TCK")
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        stat = Path(f"/proc/{qemu_pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return CpuSample(
        busy=(sum(fields[:8]) - idle) / tick,
        children=usage.ru_utime + usage.ru_stime,
        qemu=(int(stat[11]) + int(stat[12])) / tick,  # utime, stime (fields 14 and 15)
        wall=time.monotonic(),
    )


def other_cpus(before: CpuSample | None, after: CpuSample | None) -> float | None:
    """CPUs that processes other than the measuring GDB and the guest kept busy, on average."""
    if before is None or after is None or after.wall <= before.wall:
        return None
    ours = (after.children - before.children) + (after.qemu - before.qemu)
    return max(0.0, (after.busy - before.busy - ours) / (after.wall - before.wall))


def measure(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    qg, config, report = live_guest(args)
    report["load_repeat"] = args.repeat
    log(f"booting Debian's kernel with {args.mem} under QEMU (TCG)...")
    try:
        with qg.QemuGuest(config) as guest:
            guest.stop()
            report["boot_s"] = guest.boot_seconds
            log(f"measuring in gdb -nx -batch ({args.repeat} rounds)...")
            before = cpu_sample(guest.pid)
            report["gdb"] = run_gdb_side(
                guest.gdb_port, args.repeat, args.profile, read_via=args.read_via
            )
            report["other_cpus"] = other_cpus(before, cpu_sample(guest.pid))
    except qg.GuestError as exc:
        raise BenchError(f"guest: {exc}") from None
    log(f"load time: {args.repeat} pairs of gdb -nx -batch processes...")
    report["load"] = gdb_load_figures(args.repeat)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    live_arguments(parser)
    parser.add_argument(
        "--profile", action="store_true", help="cProfile of the walks inside GDB (gc disabled)"
    )
    parser.add_argument(
        "--read-via",
        help="the backend's --read-via for the commands timed (default: its own, auto: the "
        "host path for this QEMU; stub: through the gdbstub)",
    )
    args = parser.parse_args(argv)
    check_live_arguments(parser, args)
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join([".venv/bin/python", "bench/bench_gdb.py", *given])
    try:
        report = measure(args, lambda line: print(line, file=sys.stderr, flush=True))
    except BenchError as exc:
        print(f"bench_gdb: {exc}", file=sys.stderr)
        return 2
    report["command"] = command
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report, command)
    return 0 if targets_met(report) else 1


if __name__ == "__main__":
    sys.exit(main())
