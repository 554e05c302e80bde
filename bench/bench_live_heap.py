"""Benchmark of live ``pt-heap --memmap e820`` in GDB on a real Debian kernel under QEMU.

The script boots Debian's kernel under QEMU (TCG, ``fixtures/qemu_guest.py``; 256 MiB by
default, ``--mem``; ``--config kaslr-pti`` for KASLR), stops it, and runs one ``gdb -nx -batch``
that connects to the gdbstub and runs ``bench/_heap_side.py``, which times the command inside
GDB's Python, ``--repeat`` rounds, medians:

- fresh: as on a new connection (the backend's state for it forgotten): probes, the search for
  VMCOREINFO (it names the kernel's own page table), the kernel image from the page tables,
  then boot_params searched in the image's ``.bss`` first;
- cold: as after a resume (the per-stop cache dropped), with the bytes read.

Target: at most 2 s on a 256 MiB guest. For reference, and as the check of the
answer, the full scan of RAM (what the command did before, and still does when the kernel image
holds no copy) is timed once; its choice (``choose_boot_params``) must be the command's.
``--no-full-scan`` skips it (it reads all of RAM through the stub: half a minute for 256 MiB).

Run: ``.venv/bin/python bench/bench_live_heap.py`` (``--repeat 11`` by default; ``--json``).
Exit status 1 when the target is missed or the answers differ, 2 when it could not run.
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
GDBINIT = ROOT / "gdbext" / "gdbinit.py"
SIDE = ROOT / "bench" / "_heap_side.py"
CONFIG_ENV = "GDBEXT_BENCH_HEAP"
#: The target.
TARGET_SECONDS = 2.0


def measure(args: argparse.Namespace) -> dict[str, Any]:
    qg, config, report = live_guest(args)
    print(f"booting Debian's kernel with {args.mem} under QEMU (TCG)...", file=sys.stderr)
    try:
        with qg.QemuGuest(config) as guest:
            guest.stop()
            report["boot_s"] = guest.boot_seconds
            print(f"measuring in gdb -nx -batch ({args.repeat} rounds)...", file=sys.stderr)
            argv = [
                "gdb", "-nx", "-batch",
                "-ex", "set pagination off",
                "-ex", f"target remote 127.0.0.1:{guest.gdb_port}",
                "-x", str(SIDE),
            ]  # fmt: skip
            side = {"repeat": args.repeat, "gdbinit": str(GDBINIT), "full_scan": args.full_scan}
            before = cpu_sample(guest.pid)
            report["gdb"] = run_side(argv, CONFIG_ENV, side, "GDB")
            report["other_cpus"] = other_cpus(before, cpu_sample(guest.pid))
    except qg.GuestError as exc:
        raise BenchError(f"guest: {exc}") from None
    return report


def verdicts(report: dict[str, Any]) -> tuple[float, float, bool]:
    g = report["gdb"]
    fresh, cold = statistics.median(g["fresh"]), statistics.median(g["cold"])
    same = g.get("full_scan_choice", g["boot_params"]) == g["boot_params"]
    return fresh, cold, same


def print_report(report: dict[str, Any]) -> None:
    g = report["gdb"]
    fresh, cold, same = verdicts(report)

    def verdict(seconds: float) -> str:
        return "met" if seconds <= TARGET_SECONDS else "**missed**"

    print(f"gdbext live heap benchmark: {report['guest']}, median of {g['repeat']} rounds")
    print()
    print("| measure | median | target | |")
    print("| --- | --- | --- | --- |")
    print(
        f"| `pt-heap --memmap e820`, fresh connection (probes, VMCOREINFO, image, boot_params) "
        f"| {fresh * 1e3:.0f} ms | <= {TARGET_SECONDS:.0f} s | {verdict(fresh)} |"
    )
    cold_kib = statistics.median(g["cold_bytes"]) / 1024
    print(
        f"| `pt-heap --memmap e820`, cold (per-stop cache dropped; {cold_kib:.0f} KiB read) "
        f"| {cold * 1e3:.0f} ms | <= {TARGET_SECONDS:.0f} s | {verdict(cold)} |"
    )
    if "full_scan_s" in g:
        print(
            f"| the full scan of RAM ({g['full_scan_mib']} MiB; the fallback, and the only way "
            f"before) | {g['full_scan_s']:.1f} s | | |"
        )
    print()
    print(f"- output: `{g['output']}`")
    if "full_scan_choice" in g:
        found = ", ".join(hex(a) for a in g["full_scan_found"])
        print(
            f"- the full scan found {found} and chose 0x{g['full_scan_choice']:x}: "
            + ("the same copy" if same else "**a different copy**")
        )
    print(f"- VMCOREINFO: {g['vmcoreinfo']}")
    other = report["other_cpus"]
    busy = "unknown" if other is None else f"{other:.1f} of {os.cpu_count()} CPUs"
    print(
        f"- boot to the marker: {report['boot_s']:.1f} s; QEMU: {report['qemu']}; other "
        f"processes kept {busy} busy on average while the measuring GDB ran (the full scan "
        "included)"
    )
    print(f"- command: `{report['command']}`")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    live_arguments(parser)
    parser.set_defaults(mem="256M")
    parser.add_argument(
        "--no-full-scan",
        dest="full_scan",
        action="store_false",
        help="skip the timed full scan of RAM (and the check of the answer against it)",
    )
    args = parser.parse_args(argv)
    check_live_arguments(parser, args)
    given = sys.argv[1:] if argv is None else argv
    try:
        report = measure(args)
    except BenchError as exc:
        print(f"bench_live_heap: {exc}", file=sys.stderr)
        return 2
    report["command"] = shlex.join([".venv/bin/python", "bench/bench_live_heap.py", *given])
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    fresh, cold, same = verdicts(report)
    return 0 if max(fresh, cold) <= TARGET_SECONDS and same else 1


if __name__ == "__main__":
    sys.exit(main())
