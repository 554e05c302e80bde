"""Benchmark of ``search --string`` over every mapping of one stopped guest: on its dump, live
through the host read path, and gdb-pt-dump's ``pt -ss`` beside them, in one run.

The script boots Debian's kernel under QEMU (``fixtures/qemu_guest.py``; ``--mem``, 512 MiB by
default), stops the VM, writes an ELF dump of that stop (``dump-guest-memory``, into a
temporary directory) and times, as medians of ``--repeat`` runs, a search for ``--string``
(default ``Linux version``: in the kernel image's banner, which the direct map maps again, and
in the kernel's log):

1. on the dump: ``gdbext search DUMP --string TEXT`` as one process, and the same search
   in-process on the open dump, the stop cache cleared before each run;
2. live: ``gdbext search --backend gdbstub HOST:PORT --string TEXT`` as one process (the
   default read path: QEMU's memory, ``/proc/PID/mem``), and in-process on one open
   connection, the stop cache cleared before each run; for reference, the same command with
   ``--read-via stub`` (QEMU's ``m`` packets) over ``--stub-range`` only (all of a 512 MiB
   guest's mappings through the stub would take minutes; by default the 2 MiB of the kernel
   image around its first hit there), beside the host path over that range;
3. in one ``gdb -nx -batch`` (``bench/_search_side.py``) connected to the same stop: gdbext's
   ``pt-search --string TEXT`` cold, and, with ``--gdb-pt-dump DIR`` (the directory of its
   ``pt.py``), gdb-pt-dump's ``pt -ss TEXT`` (loaded with ``-ex 'source DIR/pt.py'`` on GDB's
   command line, as its README says; it needs no package beyond Python's own). Without that
   directory its column is skipped, with a note.

Each figure is a median wall time and, in brackets, the median CPU time (user and system) of
the measuring process and the ``gdbext`` processes it ran, or of GDB's process for the GDB rows
(QEMU's own work answering packets and monitor commands is not in it): on a machine shared with
other jobs the wall time grows with the load, the CPU time much less. Each tool's hits are
counted (gdbext: ``--json`` output with ``--max`` high enough for all; gdb-pt-dump: its
``Found at ADDR`` lines), and the addresses compared with the dump's: the addresses only one
tool reports are listed with the Linux region gdbext gives them.

Run: ``.venv/bin/python bench/bench_search_live.py --gdb-pt-dump DIR`` (``--repeat 5``,
``--string TEXT``, ``--json``). Targets for a 512 MiB guest: <= 1 s on its dump, <= 1.5 s live
over the host read path (both as one ``gdbext search`` process). Exit status 1 when a target is
missed, 2 when the benchmark could not run.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchlib import (
    BenchError,
    check_live_arguments,
    guest_module,
    live_arguments,
    live_guest,
    run_side,
)

ROOT = Path(__file__).resolve().parent.parent
GDBEXT = ROOT / ".venv" / "bin" / "gdbext"
GDBINIT = ROOT / "gdbext" / "gdbinit.py"
SIDE = ROOT / "bench" / "_search_side.py"
CONFIG_ENV = "GDBEXT_BENCH_SEARCH"
TEXT = "Linux version"
#: More hits than any search here finds, so that every tool reports all of them.
MAX_HITS = 100_000
#: The targets (one ``gdbext search`` process, 512 MiB guest).
DUMP_SECONDS = 1.0
LIVE_SECONDS = 1.5
#: The stub path's range, ``auto``: the 2 MiB of the kernel image (else of the first hit)
#: around the dump's first hit there.
STUB_RANGE = "auto"
STUB_SPAN = 2 << 20
KERNEL_IMAGE = 0xFFFF_FFFF_8000_0000


def cpu_seconds() -> float:
    """User and system time of this process and its finished children so far."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class Clock:
    """Wall and CPU seconds of each run of each measurement, by name. On a machine shared
    with other jobs the wall time grows with the load; the CPU time (this process's and its
    children's, user and system: the kernel's copies out of QEMU's memory included) much less."""

    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}

    def series(self, name: str, fn: Callable[[], object], repeat: int) -> None:
        for _ in range(repeat):
            cpu, start = cpu_seconds(), time.perf_counter()
            fn()
            self.wall.setdefault(name, []).append(time.perf_counter() - start)
            self.cpu.setdefault(name, []).append(cpu_seconds() - cpu)


def cli_search(clock: Clock, name: str, argv: list[str], repeat: int) -> dict[str, Any]:
    """``repeat`` runs of ``gdbext search ARGV --json`` timed as ``name``; the last one's JSON."""
    command = [str(GDBEXT), "search", *argv, "--json", "--max", str(MAX_HITS)]
    outputs: list[str] = []

    def run() -> None:
        proc = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
        if proc.returncode not in (0, 1):  # 1: not found
            raise BenchError(f"{shlex.join(command)}: {proc.stderr.strip() or proc.returncode}")
        outputs.append(proc.stdout)

    clock.series(name, run, repeat)
    result: dict[str, Any] = json.loads(outputs[-1])
    return result


def in_process(clock: Clock, name: str, target: Any, text: str, repeat: int) -> int:
    """``repeat`` searches on an open target (stop cache cleared first) timed as ``name``;
    the hits."""
    from gdbext.frontend.memsearch import Pattern, SearchOptions, search_memory

    options = SearchOptions(Pattern(text.encode(), "string"), max_hits=MAX_HITS)
    found: list[int] = []

    def search() -> None:
        if target.stop_cache is not None:
            target.stop_cache.clear()
        scope = target.command_scope
        if scope is None:
            found.append(sum(1 for _ in search_memory(target, options).hits()))
            return
        with scope():
            found.append(sum(1 for _ in search_memory(target, options).hits()))

    clock.series(name, search, repeat)
    return found[-1]


def floor(clock: Clock, dump: Path, text: str, repeat: int) -> None:
    """Times (as ``floor``) one ``find`` of ``text`` over the whole dump file, mapped
    (``mmap``): what reading and searching each byte of the guest's RAM once costs this Python
    now, the floor of any search of it (the next ``find`` starts after each hit, so that
    every hit is found in one pass)."""
    needle = text.encode()
    with dump.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:

        def scan() -> None:
            at = mm.find(needle)
            while at != -1:
                at = mm.find(needle, at + 1)

        clock.series("floor", scan, repeat)


def stub_range(given: str, hits: list[int]) -> str:
    """``--stub-range``, ``auto`` made a range from the dump's hits (see :data:`STUB_RANGE`)."""
    if given != "auto":
        return given
    image = [a for a in hits if a >= KERNEL_IMAGE] or hits or [KERNEL_IMAGE + (16 << 20)]
    return f"0x{image[0] & ~(STUB_SPAN - 1):x}+0x{STUB_SPAN:x}"


def addresses(result: dict[str, Any]) -> list[int]:
    return [int(hit["address"], 16) for hit in result["hits"]]


def measure(args: argparse.Namespace, report: dict[str, Any], qg: Any, config: Any) -> None:
    import gdbext
    from gdbext_dump.dump import open_dump

    text, repeat = args.string, args.repeat
    clock = Clock()
    hits: dict[str, list[int]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="gdbext-bench-search-") as tmp,
        qg.QemuGuest(config) as guest,
    ):
        guest.stop()
        report["boot_s"] = guest.boot_seconds
        dump = Path(tmp) / "dump.elf"
        guest.dump_elf(dump)
        report["dump_bytes"] = dump.stat().st_size
        address = f"127.0.0.1:{guest.gdb_port}"

        result = cli_search(clock, "dump_cli", [str(dump), "--string", text], repeat)
        hits["dump"] = addresses(result)
        regions = {int(h["address"], 16): h["region"] or "" for h in result["hits"]}
        report["regions"] = {f"0x{a:x}": r for a, r in regions.items()}
        report["dump_in_hits"] = in_process(clock, "dump_in", open_dump(str(dump)), text, repeat)
        floor(clock, dump, text, repeat)

        live = ["--backend", "gdbstub", address, "--string", text]
        result = cli_search(clock, "live_cli", live, repeat)
        hits["live"] = addresses(result)
        with gdbext.open(address, backend="gdbstub") as opened:
            report["live_read_path"] = opened.target.read_path
            target = opened.target
            report["live_in_hits"] = in_process(clock, "live_in", target, text, repeat)
        report["stub_range"] = stub_range(args.stub_range, hits["dump"])
        if report["stub_range"]:
            ranged = [*live, "--range", report["stub_range"]]
            few = min(repeat, 3)
            hits["range_host"] = addresses(cli_search(clock, "range_host", ranged, few))
            stub = [*ranged, "--read-via", "stub"]
            hits["range_stub"] = addresses(cli_search(clock, "range_stub", stub, few))

        argv_gdb = [
            "gdb", "-nx", "-batch", "-ex", "set pagination off",
            "-ex", f"target remote {address}",
        ]  # fmt: skip
        if args.gdb_pt_dump:
            argv_gdb += ["-ex", f"source {args.gdb_pt_dump.resolve() / 'pt.py'}"]
        argv_gdb += ["-x", str(SIDE)]
        settings = {
            "repeat": repeat,
            "gdbinit": str(GDBINIT),
            "text": text,
            "max": MAX_HITS,
            "ptdump": str(args.gdb_pt_dump) if args.gdb_pt_dump else None,
        }
        side = run_side(argv_gdb, CONFIG_ENV, settings, "GDB")
    report["gdb_read_path"] = side["read_path"]
    report["gdb_mode_after"] = side["mode_after"]
    for name, mine in (("gdbext", "gdb_search"), ("ptdump", "ptdump")):
        if name in side["seconds"]:
            clock.wall[mine] = side["seconds"][name]
            clock.cpu[mine] = side["cpu"][name]
            hits[mine] = side["hits"][name]
    report["seconds"] = clock.wall
    report["cpu_seconds"] = clock.cpu
    report["hits"] = {name: [f"0x{a:x}" for a in found] for name, found in hits.items()}


def median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e3:.0f} ms"


def cell(report: dict[str, Any], name: str, bold: bool = False) -> str:
    """A measurement's median wall time, then its median CPU time."""
    wall = median_ms(report["seconds"][name])
    if bold:
        wall = f"**{wall}**"
    return f"{wall} ({median_ms(report['cpu_seconds'][name])})"


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def by_region(found: set[int], regions: dict[str, str]) -> str:
    counts = Counter(regions.get(f"0x{a:x}", "?") or "unlabelled" for a in found)
    return "; ".join(f"{n} {region}" for region, n in sorted(counts.items())) or "none"


def table(report: dict[str, Any]) -> list[str]:
    s, h = report["seconds"], report["hits"]
    big = report["mem_bytes"] >= 512 << 20
    dump_set = set(h["dump"])
    same = "= the dump's" if set(h["live"]) == dump_set else "**differ from the dump's**"
    gdb_same = "= the dump's" if set(h["gdb_search"]) == dump_set else "**differ**"
    dump_s = statistics.median(s["dump_cli"])
    live_s = statistics.median(s["live_cli"])
    rows = [
        ("measure", "wall (CPU)", "hits", "target", ""),
        ("---", "---", "---", "---", "---"),
        (
            "`gdbext search DUMP --string` (one process)",
            cell(report, "dump_cli", True),
            str(len(h["dump"])),
            f"<= {DUMP_SECONDS:g} s" if big else "",
            verdict(dump_s <= DUMP_SECONDS) if big else "",
        ),
        (
            "the same search in-process on the open dump",
            cell(report, "dump_in"),
            str(report["dump_in_hits"]),
            "",
            "",
        ),
        (
            f"reference: `find` over the whole {report['dump_bytes'] >> 20} MiB dump file "
            "(mmap), in-process",
            cell(report, "floor"),
            "",
            "",
            "",
        ),
        (
            f"`gdbext search --backend gdbstub HOST:PORT --string` (one process, "
            f"{report['live_read_path'] or 'default read path'})",
            cell(report, "live_cli", True),
            f"{len(h['live'])} ({same})",
            f"<= {LIVE_SECONDS:g} s" if big else "",
            verdict(live_s <= LIVE_SECONDS and same.startswith("=")) if big else "",
        ),
        (
            "the same search in-process on the open connection",
            cell(report, "live_in"),
            str(report["live_in_hits"]),
            "",
            "",
        ),
    ]
    if "range_stub" in s:
        stub_same = "=" if h["range_stub"] == h["range_host"] else "**differs**"
        rows += [
            (
                f"live, `--range {report['stub_range']}`, host path (one process)",
                cell(report, "range_host"),
                str(len(h["range_host"])),
                "",
                "",
            ),
            (
                f"live, `--range {report['stub_range']}`, `--read-via stub` (one process)",
                cell(report, "range_stub"),
                f"{len(h['range_stub'])} ({stub_same} host path's)",
                "",
                "",
            ),
        ]
    rows.append(
        (
            f"GDB: `pt-search --string` cold ({report['gdb_read_path']})",
            cell(report, "gdb_search"),
            f"{len(h['gdb_search'])} ({gdb_same})",
            "",
            "",
        )
    )
    if "ptdump" in s:
        rows.append(
            (
                "GDB: gdb-pt-dump `pt -ss` (same GDB, same stop)",
                cell(report, "ptdump"),
                str(len(h["ptdump"])),
                "",
                "",
            )
        )
    else:
        rows.append(("GDB: gdb-pt-dump `pt -ss`", "skipped: no --gdb-pt-dump DIR", "", "", ""))
    return ["| " + " | ".join(row) + " |" for row in rows]


def comparison(report: dict[str, Any]) -> list[str]:
    h, regions = report["hits"], report["regions"]
    dump = {int(a, 16) for a in h["dump"]}
    lines = [f"- gdbext's hits by region: {by_region(dump, regions)}"]
    if "ptdump" in h:
        pt = {int(a, 16) for a in h["ptdump"]}
        missed, extra = dump - pt, pt - dump
        lines.append(f"- gdb-pt-dump missed {len(missed)}: {by_region(missed, regions)}")
        shown = ", ".join(f"0x{a:x}" for a in sorted(missed)[:8])
        if missed:
            lines.append(f"  (first: {shown})")
        lines.append(
            f"- gdb-pt-dump only: {len(extra)}"
            + (f" ({', '.join(f'0x{a:x}' for a in sorted(extra)[:8])})" if extra else "")
        )
    return lines


def print_report(report: dict[str, Any]) -> None:
    print(
        f"search benchmark: {report['guest']}, --string {report['string']!r}, median of "
        f"{report['repeat']} runs"
    )
    print()
    print("\n".join(table(report)))
    print()
    print("\n".join(comparison(report)))
    if report.get("ptdump_note"):
        print(f"- {report['ptdump_note']}")
    print(
        f"- load average (1 min) {report['load_before']:.1f} before, "
        f"{report['load_after']:.1f} after ({os.cpu_count()} CPUs)"
    )
    print(
        f"- dump: {report['dump_bytes'] >> 20} MiB ELF; QEMU: {report['qemu']}; "
        f"boot: {report['boot_s']:.1f} s; PhyMemMode after GDB: {report['gdb_mode_after']}"
    )
    print(f"- command: `{report['command']}`")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    live_arguments(parser)
    parser.set_defaults(mem="512M", repeat=5)
    parser.add_argument("--string", default=TEXT, help=f"the text to search for ({TEXT!r})")
    parser.add_argument(
        "--gdb-pt-dump",
        type=Path,
        metavar="DIR",
        help="gdb-pt-dump's directory (its pt.py); without it, its column is skipped",
    )
    parser.add_argument(
        "--stub-range",
        default=STUB_RANGE,
        metavar="START+SIZE",
        help="the range searched through the stub, for reference (auto: 2 MiB around the "
        "first hit in the kernel image; '' skips it)",
    )
    args = parser.parse_args(argv)
    check_live_arguments(parser, args)
    if not args.string.isascii():
        parser.error("--string: gdb-pt-dump's -ss takes ASCII text")
    given = sys.argv[1:] if argv is None else argv
    report: dict[str, Any] = {"string": args.string, "repeat": args.repeat}
    report["load_before"] = os.getloadavg()[0]
    if args.gdb_pt_dump is not None and not (args.gdb_pt_dump / "pt.py").is_file():
        parser.error(f"--gdb-pt-dump: no pt.py in {args.gdb_pt_dump}")
    if args.gdb_pt_dump is None:
        report["ptdump_note"] = (
            "gdb-pt-dump not timed: give --gdb-pt-dump DIR, a checkout of "
            "https://github.com/martinradev/gdb-pt-dump (the directory holding pt.py)"
        )
    qg = guest_module()
    try:
        qg, config, first = live_guest(args)
        report.update(first)
        report["command"] = shlex.join([".venv/bin/python", "bench/bench_search_live.py", *given])
        report["mem_bytes"] = config.memory_bytes
        print(f"booting Debian's kernel with {args.mem} under QEMU (TCG)...", file=sys.stderr)
        measure(args, report, qg, config)
        report["load_after"] = os.getloadavg()[0]
    except (BenchError, qg.GuestError) as exc:
        print(f"bench_search_live: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 1 if "**missed**" in "\n".join(table(report)) else 0


if __name__ == "__main__":
    sys.exit(main())
