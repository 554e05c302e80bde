"""Benchmark of the host read path (QEMU's guest RAM read from ``/proc/PID/mem``) side by side
with the stub path, in one GDB on one stopped guest.

The script boots Debian's kernel under QEMU (``fixtures/qemu_guest.py``; ``--mem``, 128 MiB by
default; a bulk read needs RAM above 16 MiB + ``--bulk``), stops the VM and runs one ``gdb -nx
-batch`` with ``bench/_hostread_side.py``, which times each measurement inside GDB's Python; the
figures are medians of ``--repeat`` rounds, every round taking all measurements in turn:

1. the stub's read floor: the pages a default ``pt-walk`` reads, one 4 KiB PhyMemMode read each
   (as ``bench/bench_gdb.py``);
2. ``pt-walk`` cold through the host path (target: at most 0.5x the floor) and through the stub;
3. a bulk read of ``--bulk`` bytes (64 MiB) through the host path (target: at least 1 GB/s),
   and of ``--stub-bulk`` bytes (4 MiB) through the stub, as GB/s; beside them a copy of
   ``--bulk`` bytes into new memory in the same Python, this machine's memory bandwidth (the
   host path's bulk read is one such copy, from QEMU's memory);
4. ``pt-heap --memmap e820`` cold both ways (the issue's target, at most 0.5 s, is for a 1 GiB
   guest: ``--mem 1G``).

Checked once: the host path's ``qemu-tlb`` walk equals ``monitor info tlb``; the bulk bytes
equal the stub's in 64 KiB samples.

Run: ``.venv/bin/python bench/bench_hostread.py`` (``--repeat 11``, ``--mem 1G``, ``--json``).
Exit status 1 when a target is missed, 2 when the benchmark could not run.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

from benchlib import BenchError, check_live_arguments, live_arguments, live_guest, run_side

ROOT = Path(__file__).resolve().parent.parent
GDBINIT = ROOT / "gdbext" / "gdbinit.py"
SIDE = ROOT / "bench" / "_hostread_side.py"
CONFIG_ENV = "GDBEXT_BENCH_HOSTREAD"
#: The targets.
FLOOR_RATIO = 0.5
BULK_GBPS = 1.0
HEAP_SECONDS = 0.5


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1e3


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def table(report: dict[str, Any]) -> list[str]:
    g = report["gdb"]
    s = {name: median_ms(values) for name, values in g["seconds"].items()}
    floor = s["floor"]
    bulk, stub_bulk = report["bulk"], report["stub_bulk"]
    host_gbps = bulk / (s["bulk_host"] / 1e3) / 1e9
    stub_gbps = stub_bulk / (s["bulk_stub"] / 1e3) / 1e9
    tlb = "= `monitor info tlb`" if g["tlb_equal"] else "**differs from `monitor info tlb`**"
    same = "= the stub's bytes" if g["bulk_equal"] else "**differs from the stub's bytes**"
    big = report["mem_bytes"] >= 1 << 30
    rows = [
        ("measure", "median", "target", ""),
        ("---", "---", "---", "---"),
        (
            f"stub read floor: the {g['pages']} pages a default `pt-walk` reads "
            "(4 KiB PhyMemMode reads, bracketed)",
            f"{floor:.1f} ms",
            "",
            "",
        ),
        (
            f"`pt-walk` cold, host path ({g['tlb_lines']:,} qemu-tlb lines {tlb})",
            f"{s['walk_host']:.1f} ms = {s['walk_host'] / floor:.2f}x floor",
            f"<= {FLOOR_RATIO}x floor",
            verdict(s["walk_host"] / floor <= FLOOR_RATIO and g["tlb_equal"]),
        ),
        ("`pt-walk` cold, stub path", f"{s['walk_stub']:.1f} ms", "", ""),
        (
            f"bulk read of {bulk >> 20} MiB, host path ({same})",
            f"{s['bulk_host']:.1f} ms = {host_gbps:.2f} GB/s",
            f">= {BULK_GBPS:g} GB/s",
            verdict(host_gbps >= BULK_GBPS and g["bulk_equal"]),
        ),
        (
            f"reference: a {bulk >> 20} MiB copy into new memory in GDB's Python "
            "(`mmap[:]`, this machine's memory bandwidth)",
            f"{s['copy']:.1f} ms = {bulk / (s['copy'] / 1e3) / 1e9:.2f} GB/s",
            "",
            "",
        ),
        (
            f"bulk read of {stub_bulk >> 20} MiB, stub path",
            f"{s['bulk_stub']:.1f} ms = {stub_gbps * 1e3:.1f} MB/s",
            "",
            "",
        ),
        (
            f"`pt-heap --memmap e820` cold, host path ({report['mem']} guest)",
            f"{s['heap_host']:.1f} ms",
            f"<= {HEAP_SECONDS * 1e3:.0f} ms (1 GiB guest)" if big else "",
            verdict(s["heap_host"] <= HEAP_SECONDS * 1e3) if big else "",
        ),
        ("`pt-heap --memmap e820` cold, stub path", f"{s['heap_stub']:.1f} ms", "", ""),
    ]
    return ["| " + " | ".join(row) + " |" for row in rows]


def print_report(report: dict[str, Any]) -> None:
    g = report["gdb"]
    print(
        f"gdbext host read path benchmark: {report['guest']}, median of {g['repeat']} rounds "
        "(one gdb -nx -batch process)"
    )
    print()
    print("\n".join(table(report)))
    print()
    print(f"- host path: {g['host_path']}: {g['host_detail']}")
    print(f"- stub path: {g['stub_path']}; PhyMemMode after: {g['mode_after']}")
    print(f"- QEMU: {report['qemu']}; boot: {report['boot_s']:.1f} s")
    print(f"- command: `{report['command']}`")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    live_arguments(parser)
    parser.add_argument("--bulk", type=int, default=64, help="host bulk read, MiB (64)")
    parser.add_argument("--stub-bulk", type=int, default=4, help="stub bulk read, MiB (4)")
    args = parser.parse_args(argv)
    check_live_arguments(parser, args)
    given = sys.argv[1:] if argv is None else argv
    qg, config, report = live_guest(args)
    report["command"] = shlex.join([".venv/bin/python", "bench/bench_hostread.py", *given])
    report.update(bulk=args.bulk << 20, stub_bulk=args.stub_bulk << 20, mem=args.mem)
    report["mem_bytes"] = config.memory_bytes
    if config.memory_bytes < (16 + args.bulk) << 20:
        parser.error(f"--mem {args.mem} has no {args.bulk} MiB above 16 MiB")
    print(f"booting Debian's kernel with {args.mem} under QEMU (TCG)...", file=sys.stderr)
    try:
        with qg.QemuGuest(config) as guest:
            guest.stop()
            report["boot_s"] = guest.boot_seconds
            argv_gdb = [
                "gdb", "-nx", "-batch", "-ex", "set pagination off",
                "-ex", f"target remote 127.0.0.1:{guest.gdb_port}", "-x", str(SIDE),
            ]  # fmt: skip
            settings = {
                "repeat": args.repeat,
                "gdbinit": str(GDBINIT),
                "bulk": report["bulk"],
                "stub_bulk": report["stub_bulk"],
            }
            report["gdb"] = run_side(argv_gdb, CONFIG_ENV, settings, "GDB")
    except (BenchError, qg.GuestError) as exc:
        print(f"bench_hostread: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 1 if "**missed**" in "\n".join(table(report)) else 0


if __name__ == "__main__":
    sys.exit(main())
