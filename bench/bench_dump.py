"""Benchmark of the dump readers on a real Debian kernel, with volatility3 side by side.

The script makes its own dumps (not committed): for each ``--mem`` size it boots Debian's kernel
under QEMU (TCG, ``fixtures/qemu_guest.py``), stops the VM, saves QEMU's ``info tlb`` and writes
an ELF core (``dump-guest-memory``) and a kdump-zlib dump (``dump-guest-memory -z``) into
``--workdir``. Later runs reuse them (``--fresh`` dumps again).

Measures, in one run (medians of ``--repeat`` runs):

- ``gdbext walk DUMP`` as one process, default text output to /dev/null: from start-up, open and
  parse to the last line; and the start-up alone (``gdbext backends``: interpreter, imports,
  plugins); peak RSS of that process (``ru_maxrss``);
- the same walk in-process: open the dump, walk, render the text lines to a sink; peak Python
  memory (tracemalloc) of one such run;
- volatility3 in-process on the same ELF dump: FileLayer -> Elf64Layer -> Intel32e with
  ``page_map_offset`` = CR3 of the QEMU note, enumerating ``mapping()`` over the whole address
  space: the enumeration alone and open + enumeration. It also compares, leaf by leaf, what
  volatility3 reports with our walk (and our leaf count with QEMU's ``info tlb``): the ESPFIX
  aliases and the device pages it leaves out.

Run: ``.venv/bin/python bench/bench_dump.py`` (``--mem 512M,128M --repeat 5`` by default;
``--json`` for machine-readable output; ``--profile`` for cProfile of the in-process walks).
Targets for 512 MiB: one-process walk <= 0.5 s (ELF), <= 1 s (kdump-zlib); at least 5x faster
than volatility3.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from benchlib import guest_module, profiled, timed

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
FORMATS = ("elf", "kdump")
FILE_NAMES = {"elf": "dump.elf", "kdump": "dump.kdump"}
FORMAT_LABELS = {"elf": "ELF", "kdump": "kdump-zlib"}
#: The targets for a 512 MiB guest: one-process walk seconds per format; speed-up.
TARGET_SECONDS = {"elf": 0.5, "kdump": 1.0}
TARGET_RATIO = 5.0
TARGET_MEM = "512M"
#: Linux's ESPFIX area on x86-64 (4-level): 0xffffff0000000000-0xffffff7fffffffff.
ESPFIX = (0xFFFF_FF00_0000_0000, 0xFFFF_FF80_0000_0000)
META_VERSION = 1


class BenchError(RuntimeError):
    """A prerequisite is missing or a measured command failed: one line for the user."""


# --- dumps -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dumps:
    """The dumps of one guest in the work directory, and what was recorded when they were made."""

    memory: str
    directory: Path
    meta: dict[str, Any]

    def path(self, fmt: str) -> Path:
        return self.directory / FILE_NAMES[fmt]

    @property
    def tlb_path(self) -> Path:
        return self.directory / "info_tlb.txt"

    @property
    def cr3(self) -> int:
        return int(self.meta["cr3"], 16)


def ensure_dumps(workdir: Path, memory: str, fresh: bool, log: Callable[[str], None]) -> Dumps:
    """The cached dumps for ``memory``, or a boot under QEMU that makes them."""
    qg = guest_module()
    directory = workdir / f"mem-{memory}"
    meta_path = directory / "meta.json"
    files = [directory / name for name in (*FILE_NAMES.values(), "info_tlb.txt")]
    if not fresh and meta_path.is_file() and all(f.is_file() for f in files):
        meta = json.loads(meta_path.read_text())
        if meta.get("version") == META_VERSION and meta.get("memory") == memory:
            return Dumps(memory, directory, meta)
    try:
        qg.check_prerequisites()
    except qg.GuestError as exc:  # MissingPrerequisite, or GDBEXT_TEST_KERNEL not a file
        raise BenchError(f"cannot make the {memory} dumps: {exc}") from None
    directory.mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)
    config = qg.GuestConfig(memory=memory)
    log(f"booting Debian's kernel with {memory} under QEMU (TCG) to make the dumps...")
    try:
        with qg.QemuGuest(config) as guest:
            guest.stop()
            cr3 = guest.cr3()
            tlb = guest.info_tlb()
            (directory / "info_tlb.txt").write_text("\n".join(tlb) + "\n")
            seconds = {}
            for fmt, dump in (("elf", guest.dump_elf), ("kdump", guest.dump_kdump)):
                start = time.perf_counter()
                dump(directory / FILE_NAMES[fmt])
                seconds[fmt] = round(time.perf_counter() - start, 3)
            meta = {
                "version": META_VERSION,
                "memory": memory,
                "cpu": config.cpu,
                "kernel": str(config.kernel or qg.find_kernel()),
                "cmdline": config.cmdline(),
                "qemu": qg.qemu_version(),
                "boot_seconds": round(guest.boot_seconds, 2),
                "dump_seconds": seconds,
                "cr3": f"{cr3:x}",
                "tlb_lines": len(tlb),
            }
    except qg.GuestError as exc:
        raise BenchError(f"cannot make the {memory} dumps: {exc}") from None
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return Dumps(memory, directory, meta)


# --- timing ----------------------------------------------------------------------------------


#: Run by a fresh ``python -S``: spawn argv[1:] with stdout to /dev/null, wait, print the wall
#: time, the child's ru_maxrss (KiB) and its exit status. The detour keeps the peak RSS honest: a
#: child spawned straight from this (large) process inherits its high-water mark at exec
#: (Linux's vfork + exec accounting), while a child of the small helper inherits the helper's.
SPAWN_HELPER = """
import os, sys, time
fd = os.open(os.devnull, os.O_WRONLY)
start = time.perf_counter()
actions = [(os.POSIX_SPAWN_DUP2, fd, 1)]
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ, file_actions=actions)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
print(seconds, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def run_process(argv: list[str]) -> tuple[float, int]:
    """Run ``argv``, stdout to /dev/null: (wall seconds, peak RSS in bytes); raise on failure.

    The time runs from the spawn to the end of the wait, measured by the helper that spawns it.
    """
    proc = subprocess.run(
        [sys.executable, "-S", "-c", SPAWN_HELPER, *argv],
        capture_output=True,
        timeout=600,
        check=False,
    )
    try:
        seconds_text, rss_kib, status = proc.stdout.split()
        returncode = int(status)
    except ValueError:
        returncode = proc.returncode or -1
    if proc.returncode != 0 or returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise BenchError(f"{shlex.join(argv)} exited {returncode}: {msg[-1] if msg else ''}")
    return float(seconds_text), int(rss_kib) * 1024


def process_figures(commands: dict[str, list[str]], repeat: int) -> dict[str, dict[str, float]]:
    """Median wall time and largest peak RSS of each command over ``repeat`` runs.

    The commands take turns within each round, so that the machine's noise falls on all alike.
    """
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, argv in commands.items():
            runs[name].append(run_process(argv))
    return {
        name: {
            "seconds": statistics.median(s for s, _ in r),
            "peak_rss_bytes": max(m for _, m in r),
        }
        for name, r in runs.items()
    }


def gdbext_walk_argv(dump: Path) -> list[str]:
    """The one-process command: ``gdbext walk DUMP`` with the default (text) output."""
    return [str(VENV_BIN / "gdbext"), "walk", str(dump)]


# --- our side --------------------------------------------------------------------------------


def sink(lines: Iterable[object]) -> int:
    """Consume ``lines``; how many there were."""
    n = 0
    for _ in lines:
        n += 1
    return n


def open_target(path: Path) -> Any:
    """Open a dump with the dump backend's reader (a :class:`gdbext.plugin.target.Target`)."""
    from gdbext_dump.dump import open_dump

    return open_dump(str(path))


def close_target(target: Any) -> None:
    if target.close is not None:
        target.close()


def walk_text(target: Any) -> tuple[int, int]:
    """The default ``walk`` on an opened target, rendered as text: (lines, leaves)."""
    from gdbext.frontend import commands
    from gdbext.render import text

    result = commands.walk(target)
    lines = sink(text.render_walk(result))
    return lines, result.stats["leaves"]


def open_walk(path: Path) -> tuple[int, int]:
    target = open_target(path)
    try:
        return walk_text(target)
    finally:
        close_target(target)


def our_figures(dumps: Dumps, fmt: str, repeat: int) -> dict[str, Any]:
    import tracemalloc

    path = dumps.path(fmt)
    lines, leaves = open_walk(path)  # warm the page cache; the counts
    out: dict[str, Any] = {"lines": lines, "leaves": leaves, "file_bytes": path.stat().st_size}

    def opened() -> None:
        close_target(open_target(path))

    out["open_s"] = timed(opened, repeat)
    times = []
    for _ in range(repeat):  # each walk on a freshly opened dump: no decompressed page reused
        target = open_target(path)
        try:
            gc.collect()
            start = time.perf_counter()
            walk_text(target)
            times.append(time.perf_counter() - start)
        finally:
            close_target(target)
    out["walk_s"] = statistics.median(times)
    out["open_walk_s"] = timed(lambda: open_walk(path), repeat)
    gc.collect()
    tracemalloc.start()
    open_walk(path)
    out["tracemalloc_peak_bytes"] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out


def our_leaves(path: Path) -> dict[int, tuple[int, int]]:
    """Every leaf of our default walk: VA -> (PA, page size), aliases expanded."""
    from gdbext.frontend import commands

    target = open_target(path)
    try:
        return {m.vaddr: (m.paddr, m.page_size) for m in commands.walk(target).mappings()}
    finally:
        close_target(target)


def tlb_leaves(path: Path) -> dict[int, int]:
    """QEMU's ``info tlb``: VA -> PA."""
    out = {}
    for line in path.read_text().splitlines():
        va, sep, rest = line.partition(": ")
        if sep and len(va) == 16:
            out[int(va, 16)] = int(rest.split()[0], 16)
    return out


# --- volatility3 -----------------------------------------------------------------------------


def note_cr3(path: Path) -> int:
    """CPU 0's CR3 as the dump's ``QEMU`` note gives it (through our reader)."""
    target = open_target(path)
    try:
        cr3 = target.cpu(0).cr3
    finally:
        close_target(target)
    if cr3 is None:
        raise BenchError(f"{path}: no CR3 in the QEMU note")
    return int(cr3)


def clock(fn: Callable[[], object]) -> float:
    """Seconds of one run of ``fn``, after a garbage collection."""
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def vol3_figures(vol: Any, dumps: Dumps, cr3: int, cls: str, repeat: int) -> dict[str, Any]:
    """volatility3 and our ELF walk in-process, taking turns in each round (same noise for both).

    Enumeration alone runs on a stack built just before; our walk alone on a dump just opened.
    """
    import _vol3

    path = dumps.path("elf")
    ranges = _vol3.enumerate_mappings(_vol3.build_layer(vol, path, cr3, cls))  # page cache
    times: dict[str, list[float]] = {
        "enumerate_s": [],
        "open_enumerate_s": [],
        "ours_walk_s": [],
        "ours_open_walk_s": [],
    }
    for _ in range(repeat):
        layer = _vol3.build_layer(vol, path, cr3, cls)
        times["enumerate_s"].append(clock(lambda: _vol3.enumerate_mappings(layer)))  # noqa: B023
        times["open_enumerate_s"].append(
            clock(lambda: _vol3.enumerate_mappings(_vol3.build_layer(vol, path, cr3, cls)))
        )
        target = open_target(path)
        try:
            times["ours_walk_s"].append(clock(lambda: walk_text(target)))  # noqa: B023
        finally:
            close_target(target)
        times["ours_open_walk_s"].append(clock(lambda: open_walk(path)))
    layer = _vol3.build_layer(vol, path, cr3, cls)
    leaves = {va: (pa, size) for va, pa, size in _vol3.leaves(layer)}
    out: dict[str, Any] = {"class": cls, "ranges": ranges, "leaves": len(leaves)}
    out |= {name: statistics.median(t) for name, t in times.items()}
    out |= {"_leaves": leaves, "_layer": layer}
    return out


def _runs(paddrs: list[int]) -> list[str]:
    """4 KiB pages as merged physical ranges: ``0xa0000-0xc0000`` (end exclusive)."""
    runs: list[list[int]] = []
    for pa in sorted(set(paddrs)):
        if runs and runs[-1][1] == pa:
            runs[-1][1] = pa + 4096
        else:
            runs.append([pa, pa + 4096])
    return [f"{a:#x}-{b:#x}" for a, b in runs]


def compare(
    ours: dict[int, tuple[int, int]], theirs: dict[int, tuple[int, int]], elf_layer: Any
) -> dict[str, Any]:
    """What volatility3 leaves out of our walk, by cause; what it reports that we do not."""
    missing: Counter[str] = Counter()
    device: list[int] = []
    other: list[str] = []
    for va, (pa, _) in ours.items():
        if va in theirs:
            continue
        if ESPFIX[0] <= va < ESPFIX[1]:
            missing["espfix"] += 1
        elif not elf_layer.is_valid(pa):
            missing["device"] += 1
            device.append(pa)
        else:
            missing["other"] += 1
            other.append(f"{va:#x}->{pa:#x}")
    extra = [f"{va:#x}" for va in theirs if va not in ours]
    differ = [f"{va:#x}" for va, v in theirs.items() if va in ours and ours[va] != v]
    return {
        "ours": len(ours),
        "theirs": len(theirs),
        "missing_espfix": missing["espfix"],
        "missing_device": missing["device"],
        "missing_device_ranges": _runs(device),
        "missing_other": missing["other"],
        "missing_other_sample": other[:10],
        "extra": len(extra),
        "extra_sample": extra[:10],
        "differ": len(differ),
        "differ_sample": differ[:10],
    }


# --- profile ---------------------------------------------------------------------------------


def profile(dumps: Dumps, top: int) -> str:
    return "".join(
        profiled(
            partial(open_walk, dumps.path(fmt)),
            f"open + walk + render, {FORMAT_LABELS[fmt]} {dumps.memory}",
            top,
        )
        for fmt in FORMATS
    )


# --- report ----------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.0f} ms" if seconds >= 0.1 else f"{seconds * 1e3:,.1f} ms"


def per_s(leaves: int, seconds: float) -> str:
    return f"{leaves / seconds / 1e6:.2f} M leaves/s"


def mib(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def render_markdown(report: dict[str, Any]) -> list[str]:
    lines = [
        f"Command: `{report['command']}`",
        "",
        f"Python {report['python']}, {report['qemu']}, kernel {report['kernel']}; "
        f"medians of {report['repeat']} runs, all figures from this one run.",
    ]
    if report.get("vol3_version"):
        lines.append(
            f"volatility3 {report['vol3_version']} (import {ms(report['vol3_import_s'])}, "
            "not counted below)."
        )
    for guest in report["guests"]:
        lines += _guest_lines(guest)
    return lines


def _guest_lines(guest: dict[str, Any]) -> list[str]:
    """The tables of one guest size."""
    lines: list[str] = []
    mem = guest["memory"]
    ours = guest["ours"]
    e, k = ours["elf"], ours["kdump"]
    startup = guest["startup"]
    lines += [
        "",
        f"#### {mem} guest: {e['leaves']:,} leaves (QEMU's `info tlb`: {guest['tlb_lines']:,} "
        f"lines, {guest['tlb_mismatch']} differ from the ELF walk's leaves); "
        f"ELF {mib(e['file_bytes'])}, kdump-zlib {mib(k['file_bytes'])}",
        "",
        "| measurement | ELF | kdump-zlib |",
        "| --- | --- | --- |",
    ]

    def row(label: str, fn: Callable[[dict[str, Any]], str]) -> None:
        lines.append(f"| {label} | {fn(e)} | {fn(k)} |")

    row(
        "`gdbext walk DUMP`, one process, to the last line",
        lambda o: f"{ms(o['process']['seconds'])}, {per_s(o['leaves'], o['process']['seconds'])}",
    )
    lines.append(
        f"| of which start-up (`gdbext backends`: interpreter, imports, plugins) | "
        f"{ms(startup['seconds'])} | {ms(startup['seconds'])} |"
    )
    row("in-process: open", lambda o: ms(o["open_s"]))
    row(
        "in-process: walk + render (dump just opened)",
        lambda o: f"{ms(o['walk_s'])}, {per_s(o['leaves'], o['walk_s'])}",
    )
    row(
        "in-process: open + walk + render",
        lambda o: f"{ms(o['open_walk_s'])}, {per_s(o['leaves'], o['open_walk_s'])}",
    )
    row("peak RSS of the process", lambda o: mib(o["process"]["peak_rss_bytes"]))
    row("peak Python memory in-process (tracemalloc)", lambda o: mib(o["tracemalloc_peak_bytes"]))
    if mem == TARGET_MEM:
        row(
            "target (one process)",
            lambda o: (
                f"<= {TARGET_SECONDS[o['fmt']]:g} s: "
                f"{'met' if o['process']['seconds'] <= TARGET_SECONDS[o['fmt']] else 'MISSED'}"
            ),
        )
    for vol in guest.get("vol3", []):
        c = vol["compare"]
        lines += [
            "",
            f"volatility3 `{vol['class']}` and our walk, in-process on the ELF dump, taking "
            "turns in each round:",
            "",
            "| | median | leaves reported | leaves/s (its own) | ours faster by |",
            "| --- | --- | --- | --- | --- |",
            f"| volatility3: enumerate `mapping()` (layers built) | {ms(vol['enumerate_s'])} "
            f"| {vol['leaves']:,} | {per_s(vol['leaves'], vol['enumerate_s'])} "
            f"| {vol['enumerate_s'] / vol['ours_walk_s']:.1f}x (vs walk + render) |",
            f"| volatility3: open + enumerate | {ms(vol['open_enumerate_s'])} "
            f"| {vol['leaves']:,} | {per_s(vol['leaves'], vol['open_enumerate_s'])} "
            f"| {vol['open_enumerate_s'] / vol['ours_open_walk_s']:.1f}x "
            "(vs open + walk + render) |",
            f"| gdbext: walk + render (dump just opened) | {ms(vol['ours_walk_s'])} "
            f"| {e['leaves']:,} | {per_s(e['leaves'], vol['ours_walk_s'])} | |",
            f"| gdbext: open + walk + render | {ms(vol['ours_open_walk_s'])} | {e['leaves']:,} "
            f"| {per_s(e['leaves'], vol['ours_open_walk_s'])} | |",
            "",
            f"volatility3 leaves out {c['ours'] - c['theirs'] + c['extra']:,} of our "
            f"{c['ours']:,} leaves: {c['missing_espfix']:,} ESPFIX aliases "
            f"(0xffffff0000000000-0xffffff7fffffffff), {c['missing_device']} device pages "
            f"outside the dump's PT_LOAD segments "
            f"(physical {', '.join(c['missing_device_ranges'])})"
            f", {c['missing_other']} others; it reports {c['extra']} leaves we do not and "
            f"{c['differ']} with another physical address or size.",
        ]
    return lines


# --- what the dump benchmarks share (bench_dump, bench_audit) -------------------------------


def add_dump_bench_arguments(parser: argparse.ArgumentParser, mem: str) -> None:
    """The options of a benchmark on this module's dumps: ``--mem`` (default ``mem``),
    ``--repeat``, ``--workdir``, ``--fresh``, ``--json``, ``--profile``."""
    parser.add_argument("--mem", default=mem, help=f"guest RAM sizes, comma-separated ({mem})")
    parser.add_argument("--repeat", type=int, default=5, help="runs per figure (5)")
    parser.add_argument(
        "--workdir", type=Path, default=Path("/tmp/gdbext-bench"), help="dump cache directory"
    )
    parser.add_argument("--fresh", action="store_true", help="boot and dump again")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--profile", type=int, metavar="N", help="cProfile: top N functions")


def parse_dump_bench_arguments(
    parser: argparse.ArgumentParser, argv: list[str] | None, script: str
) -> tuple[argparse.Namespace, list[str], dict[str, Any]]:
    """The options, the guest sizes, and a report that starts with the command line as run
    (``script``: the benchmark's file), Python and the repeat count."""
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    memories = [m.strip() for m in args.mem.split(",") if m.strip()]
    shown = [os.path.relpath(sys.executable), os.path.relpath(script)]
    report: dict[str, Any] = {
        "command": shlex.join([*shown, *(sys.argv[1:] if argv is None else argv)]),
        "python": sys.version.split()[0],
        "repeat": args.repeat,
    }
    return args, memories, report


def log(msg: str) -> None:
    """Progress, on stderr."""
    print(msg, file=sys.stderr, flush=True)


def report_dumps(report: dict[str, Any], dumps: Dumps) -> None:
    """QEMU's version and the kernel the dumps were made with, into ``report``."""
    report["qemu"] = dumps.meta["qemu"]
    report["kernel"] = Path(dumps.meta["kernel"]).name.removeprefix("vmlinuz-")


def print_report(
    report: dict[str, Any],
    as_json: bool,
    markdown: Callable[[dict[str, Any]], list[str]],
    profiles: Iterable[str],
) -> None:
    """The report as JSON or as ``markdown`` renders it, then the profiles."""
    print(json.dumps(report, indent=2) if as_json else "\n".join(markdown(report)))
    for text in profiles:
        print(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Makes its dumps under QEMU on first use (about 10 s per size).",
    )
    add_dump_bench_arguments(parser, "512M,128M")
    parser.add_argument("--no-vol3", action="store_true", help="skip volatility3")
    parser.add_argument(
        "--vol3-class",
        default="Intel32e",
        help="volatility3 paging classes, comma-separated (Intel32e; also LinuxIntel32e)",
    )
    args, memories, report = parse_dump_bench_arguments(parser, argv, __file__)
    try:
        return _run(args, memories, report)
    except BenchError as exc:
        print(f"bench_dump: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, memories: list[str], report: dict[str, Any]) -> int:
    import _vol3

    vol = None
    if not args.no_vol3:
        try:
            vol = _vol3.load()
        except _vol3.Vol3Missing as exc:
            raise BenchError(str(exc)) from None
    report |= {
        "vol3_version": vol.version if vol else None,
        "vol3_import_s": vol.import_seconds if vol else None,
        "guests": [],
    }
    profiles = []
    for memory in memories:
        dumps = ensure_dumps(args.workdir, memory, args.fresh, log)
        report_dumps(report, dumps)
        log(f"measuring {memory}...")
        tlb = tlb_leaves(dumps.tlb_path)
        guest: dict[str, Any] = {
            "memory": memory,
            "tlb_lines": len(tlb),
            "cr3": dumps.meta["cr3"],
            "ours": {},
        }
        processes = process_figures(
            {
                "startup": [str(VENV_BIN / "gdbext"), "backends"],
                **{fmt: gdbext_walk_argv(dumps.path(fmt)) for fmt in FORMATS},
            },
            args.repeat,
        )
        guest["startup"] = processes["startup"]
        for fmt in FORMATS:
            figures = our_figures(dumps, fmt, args.repeat)
            figures["fmt"] = fmt
            figures["process"] = processes[fmt]
            guest["ours"][fmt] = figures
            if figures["leaves"] != len(tlb):
                log(
                    f"warning: {FORMAT_LABELS[fmt]} walk of {memory}: {figures['leaves']} leaves, "
                    f"QEMU's info tlb has {len(tlb)}"
                )
        ours = our_leaves(dumps.path("elf"))
        tlb_mismatch = sum(1 for va, pa in tlb.items() if ours.get(va, (None,))[0] != pa)
        guest["tlb_mismatch"] = tlb_mismatch + len(set(ours) - set(tlb))
        if vol is not None:
            cr3 = note_cr3(dumps.path("elf"))
            if cr3 & ~0xFFF != dumps.cr3 & ~0xFFF:
                log(f"warning: CR3 0x{cr3:x} in the QEMU note, 0x{dumps.cr3:x} in 'info registers'")
            guest["vol3"] = []
            for cls in (c.strip() for c in args.vol3_class.split(",") if c.strip()):
                if cls not in _vol3.LAYER_CLASSES:
                    raise BenchError(
                        f"--vol3-class {cls!r}: one of {', '.join(_vol3.LAYER_CLASSES)}"
                    )
                v = vol3_figures(vol, dumps, cr3, cls, args.repeat)
                layer = v.pop("_layer")
                v["compare"] = compare(ours, v.pop("_leaves"), layer.context.layers["elf"])
                guest["vol3"].append(v)
        report["guests"].append(guest)
        if args.profile:
            profiles.append(profile(dumps, args.profile))
    print_report(report, args.json, render_markdown, profiles)
    return 0


if __name__ == "__main__":
    sys.exit(main())
