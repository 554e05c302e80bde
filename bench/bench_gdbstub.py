"""Benchmark the ``gdbstub`` backend (no debugger) on a real kernel under QEMU.

The script boots Debian's kernel under QEMU (TCG, ``fixtures/qemu_guest.py``; 128 MiB by
default), stops it, and measures, as medians over ``--repeat`` rounds:

- ``walk_cli_s``: ``gdbext walk --backend gdbstub ADDR --format qemu-tlb`` as a process (start-up,
  connection, a cold walk, close), its output checked against QEMU's ``info tlb``;
- ``connect_s``: ``gdbext.open(backend="gdbstub")`` and its close;
- ``read_1mib_s``: 1 MiB of physical memory through ``m`` packets (PhyMemMode), and ``page_s``,
  one 4 KiB page.

Run: ``.venv/bin/python bench/bench_gdbstub.py [--repeat N] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from typing import Any

from benchlib import ROOT, BenchError, check_live_arguments, live_arguments, live_guest, timed


def measure(args: argparse.Namespace) -> dict[str, Any]:
    import gdbext

    qg, config, report = live_guest(args)
    print(f"booting Debian's kernel with {args.mem} under QEMU (TCG)...", file=sys.stderr)
    with qg.QemuGuest(config) as guest:
        guest.stop()
        address = f"127.0.0.1:{guest.gdb_port}"
        argv = [sys.executable, "-m", "gdbext.cli", "walk", "--backend", "gdbstub", address,
                "--format", "qemu-tlb"]  # fmt: skip
        outputs: list[str] = []

        def walk() -> None:
            proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=ROOT)
            if proc.returncode != 0:
                raise BenchError(f"gdbext walk failed: {proc.stderr.strip()}")
            outputs.append(proc.stdout)

        report["walk_cli_s"] = timed(walk, args.repeat)
        tlb = guest.info_tlb()
        if outputs[-1].splitlines() != tlb:
            raise BenchError("the walk's output is not QEMU's info tlb")
        report["leaves"] = len(tlb)
        report["connect_s"] = timed(
            lambda: gdbext.open(backend="gdbstub", address=address).close(), args.repeat
        )
        from gdbext_gdbstub.connection import open_connection

        conn = open_connection(address)
        try:
            conn.link.packet("Qqemu.PhyMemMode:1")
            report["read_1mib_s"] = timed(
                lambda: conn.link.read_memory(0x100000, 1 << 20), args.repeat
            )
            report["page_s"] = timed(lambda: conn.link.read_memory(0x200000, 4096), args.repeat)
        finally:
            conn.link.packet("Qqemu.PhyMemMode:0")
            conn.close()
        if guest.hmp("info status").strip() != "VM status: paused":
            raise BenchError("the paused VM did not stay paused")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    live_arguments(parser)
    parser.set_defaults(repeat=5)
    args = parser.parse_args(argv)
    check_live_arguments(parser, args)
    given = sys.argv[1:] if argv is None else argv
    try:
        report = measure(args)
    except BenchError as exc:
        print(f"bench_gdbstub: {exc}", file=sys.stderr)
        return 2
    report["command"] = shlex.join([".venv/bin/python", "bench/bench_gdbstub.py", *given])
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            shown = f"{value * 1000:.1f} ms" if key.endswith("_s") else value
            print(f"- {key}: {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
