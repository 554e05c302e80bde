"""Benchmark of address translation on real kernel dumps, with drgn and volatility3 side by side.

For each dump (the committed QEMU ``dump-guest-memory`` ELF fixtures by default, unpacked into a
temporary directory; ``--dump PATH`` for others; ``--mem 512M`` for the ELF dump of a real Debian
guest of that size, which ``bench/bench_dump.py`` makes under QEMU on first use and keeps in
``--workdir``) it translates 20,000 distinct mapped addresses
of the kernel's page table (VMCOREINFO's ``init_top_pgt``), picked from the engine's walk: a
random leaf run each, a random page in it (no page twice), a random offset in the page. So that
the picks reach many tables, runs are drawn uniformly, not weighted by size. A kernel's ESPFIX
area links one table 65,536 times, so most runs, and most picks, are its aliases;
``--by-frames`` draws the runs that map the same frames as one, and the picks spread over the
direct map, the kernel image, modules and vmalloc.

Measures, in one run (medians of ``--repeat`` runs, per address):

- gdbext, **fresh**: a new :class:`~gdbext.x86.paging.X86PageTable` with its caches
  (``cache=True``) made for each run, so that every table is read from the dump once per run;
- gdbext, **warm**: the same addresses again through that page table (tables and pages cached);
- gdbext, **uncached**: ``cache=False`` (one 8-byte read per level);
- drgn's C ``follow_phys`` (``_linux_helper_follow_phys(prog, init_top_pgt, addr)``, what
  ``drgn.helpers.linux.mm.follow_phys`` calls), on a new ``drgn.Program`` per run;
- volatility3's ``Intel32e.translate`` (``--vol3``), on a new layer stack per run.

Every translation of drgn and volatility3 is checked against gdbext's (mismatches are counted
and reported). Targets: fresh <= 3 us, warm <= 1 us, and fresh at most drgn's time (the limit
was set on a 512 MiB guest's dump: ``--mem 512M``).

Run: ``.venv/bin/python bench/bench_translate.py`` (``--repeat 7``; ``--json`` for
machine-readable output; ``--profile`` for cProfile of one fresh run; ``--cpu-time`` to time
every side by this process's CPU time rather than wall time, on a busy machine). The load
average before and after is printed with the figures. drgn and volatility3 are optional (the
``bench`` extra: ``.venv/bin/pip install -e '.[bench]'``); without them their columns are left
out.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from bench_dump import BenchError, ensure_dumps, log
from benchlib import ROOT, profiled, timed

from gdbext.plugin.target import Target
from gdbext.x86.paging import X86PageTable
from gdbext.x86.records import LeafRun

KERNELS = ROOT / "fixtures" / "kernels"
FIXTURES = ("4level", "kaslr-pti", "la57")
ADDRESSES = 20_000
TARGET_FRESH_US = 3.0
TARGET_WARM_US = 1.0


def unpack_fixtures(workdir: Path) -> list[Path]:
    """The committed dumps, unpacked (sparse) into ``workdir``."""
    sys.path.insert(0, str(ROOT / "fixtures"))
    from minimize import unpack

    return [unpack(KERNELS / f"{name}.elf.xz", workdir / f"{name}.elf") for name in FIXTURES]


def kernel_table(target: Target) -> tuple[X86PageTable, int]:
    """The kernel's page table (``init_top_pgt``) and that symbol's virtual address."""
    from gdbext.frontend.commands import RootOptions, open_page_table

    info = target.facts.vmcoreinfo
    if info is None or "SYMBOL(init_top_pgt)" not in info.entries:
        raise SystemExit(f"{target.description}: no VMCOREINFO with SYMBOL(init_top_pgt)")
    return open_page_table(target, RootOptions(kernel=True)), int(
        info.entries["SYMBOL(init_top_pgt)"], 16
    )


def pick_addresses(
    pt: X86PageTable, count: int, seed: int = 1, by_frames: bool = False
) -> list[int]:
    """``count`` distinct mapped addresses, each in its own page (see the module docstring).
    ``by_frames``: runs that map the same frames (ESPFIX's 65,536 aliases of one table) are
    drawn as one, so that the picks spread over the whole address space."""
    runs = [r for r in pt.iter_runs() if type(r) is LeafRun]
    if by_frames:
        runs = list({(r.paddr, r.count, r.page_size): r for r in reversed(runs)}.values())
    rng = random.Random(seed)
    pages: set[int] = set()
    picks: list[int] = []
    while len(picks) < count:
        run = runs[rng.randrange(len(runs))]
        page = run.vaddr + rng.randrange(run.count * run.page_size) // 4096 * 4096
        if page not in pages:
            pages.add(page)
            picks.append(page + rng.randrange(4096))
    return picks


def fresh_table(pt: X86PageTable, cache: bool = True) -> X86PageTable:
    return X86PageTable(pt.mapper, pt.root, pt.levels, nxe=pt.nxe, cache=cache)


def measure(label: str, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The figures of one dump: gdbext, drgn and volatility3 runs interleaved, repetition by
    repetition, so that a change of the machine's load hits them alike."""
    from gdbext_dump.dump import open_dump

    target = open_dump(str(path))
    pt, pgd_va = kernel_table(target)
    addrs = pick_addresses(pt, args.addresses, by_frames=args.by_frames)
    expect = [fresh_table(pt).translate(a).paddr for a in addrs]
    n = len(addrs)
    clock = time.process_time if args.cpu_time else time.perf_counter
    sides: dict[str, Side] = {}
    if not args.no_drgn:
        sides["drgn"] = drgn_side(path, pgd_va, addrs, expect, clock)
    if args.vol3 and pt.levels == 4:  # volatility3 has no 5-level layer
        sides["vol3"] = vol3_side(path, pt.root, addrs, expect, clock)
    times: dict[str, list[float]] = {"fresh": [], "warm": [], "uncached": []}
    for name in sides:
        times[name] = []
    uncached = fresh_table(pt, cache=False)
    for _ in range(args.repeat):
        translate = fresh_table(pt).translate
        times["fresh"].append(timed(partial(_each, translate, addrs), 1, clock))
        times["warm"].append(timed(partial(_each, translate, addrs), 1, clock))
        times["uncached"].append(timed(partial(_each, uncached.translate, addrs), 1, clock))
        for name, side in sides.items():
            if side.run is not None:
                times[name].append(side.run())
    row: dict[str, Any] = {
        "dump": label,
        "path": str(path),
        "levels": pt.levels,
        "root": f"0x{pt.root:x}",
        "addresses": n,
        "tables": len(pt.tables()),
        "gdbext": {f"{k}_us": _median(times[k]) / n * 1e6 for k in ("fresh", "warm", "uncached")},
    }
    for name, side in sides.items():
        row[name] = side.info | (
            {"us": _median(times[name]) / side.count * 1e6} if side.run is not None else {}
        )
    if args.profile:

        def one_fresh() -> None:
            table = fresh_table(pt)
            for a in addrs:
                table.translate(a)

        row["profile"] = profiled(one_fresh, f"fresh translations of {path.name}", 15)
    return row


def _each(translate: Callable[[int], object], addrs: list[int]) -> None:
    for a in addrs:
        translate(a)


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


@dataclass
class Side:
    """Another tool: ``run()`` times one fresh pass over ``count`` addresses (``None`` when it
    cannot run: ``info`` says why)."""

    info: dict[str, Any]
    run: Callable[[], float] | None = None
    count: int = 0


def drgn_side(
    path: Path, pgd_va: int, addrs: list[int], expect: list[int], clock: Callable[[], float]
) -> Side:
    """drgn's ``follow_phys`` over ``addrs``, a new program per run (made outside the time)."""
    try:  # optional, untyped: imported by name
        drgn = importlib.import_module("drgn")
        follow_phys = importlib.import_module("_drgn")._linux_helper_follow_phys
    except ImportError as exc:
        return Side({"error": f"drgn is not installed ({exc})"})

    def new_program() -> Any:
        prog = drgn.Program()
        prog.set_core_dump(str(path))
        return prog

    try:
        check = new_program()
        got = [follow_phys(check, pgd_va, a) for a in addrs]
    except Exception as exc:  # drgn's own errors: report, do not fail the benchmark
        return Side({"error": f"{type(exc).__name__}: {exc}", "version": drgn.__version__})
    info = {
        "version": drgn.__version__,
        "mismatches": sum(g != e for g, e in zip(got, expect, strict=True)),
    }

    def run() -> float:
        prog = new_program()
        return timed(partial(_each, partial(follow_phys, prog, pgd_va), addrs), 1, clock)

    return Side(info, run, len(addrs))


def vol3_side(
    path: Path, cr3: int, addrs: list[int], expect: list[int], clock: Callable[[], float]
) -> Side:
    """volatility3's ``Intel32e.translate``, a new layer stack per run; the addresses it
    cannot translate are counted and left out."""
    import _vol3

    try:
        vol = _vol3.load()
    except _vol3.Vol3Missing as exc:
        return Side({"error": str(exc)})
    mask = (1 << 48) - 1  # the layer takes 48-bit addresses
    check = _vol3.build_layer(vol, path, cr3)
    ok: list[int] = []
    mismatches = failed = 0
    for a, e in zip(addrs, expect, strict=True):
        try:
            got = check.translate(a & mask)[0]
        except Exception:  # its page faults
            failed += 1
            continue
        ok.append(a & mask)
        mismatches += got != e
    info = {"version": vol.version, "mismatches": mismatches, "failed": failed}
    if not ok:
        return Side(info)

    def run() -> float:
        translate = _vol3.build_layer(vol, path, cr3).translate
        return timed(partial(_each, translate, ok), 1, clock)

    return Side(info, run, len(ok))


def report_text(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        f"{'dump':<16} {'lv':>2} {'fresh':>8} {'warm':>8} {'uncached':>9} {'drgn':>8} "
        f"{'drgn/fresh':>10} {'vol3':>8}   (us per address, medians)"
    ]
    for row in rows:
        g = row["gdbext"]
        drgn = row.get("drgn", {})
        vol3 = row.get("vol3", {})
        d_us = drgn.get("us")
        v_us = vol3.get("us")
        lines.append(
            f"{row['dump']:<16} {row['levels']:>2} {g['fresh_us']:>8.2f} {g['warm_us']:>8.2f} "
            f"{g['uncached_us']:>9.2f} {_num(d_us):>8} "
            f"{_num(None if d_us is None else d_us / g['fresh_us']):>10} {_num(v_us):>8}"
        )
        for name, side in (("drgn", drgn), ("vol3", vol3)):
            if "error" in side:
                lines.append(f"  {name}: {side['error']}")
            if side.get("mismatches"):
                lines.append(f"  {name}: {side['mismatches']} translations differ from gdbext's")
            if side.get("failed"):
                lines.append(f"  {name}: {side['failed']} addresses it cannot translate (left out)")
        if "profile" in row:
            lines.append(row["profile"])
    return lines


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def add_dump_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose the dumps (:func:`chosen_dumps`)."""
    parser.add_argument("--dump", action="append", type=Path, help="an ELF dump (repeatable)")
    parser.add_argument(
        "--mem",
        help="also the ELF dumps of Debian guests of these RAM sizes, comma-separated (512M): "
        "bench_dump.py's, made under QEMU on first use",
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path("/tmp/gdbext-bench"), help="--mem's dump cache"
    )
    parser.add_argument("--fresh", action="store_true", help="--mem: boot and dump again")
    parser.add_argument(
        "--fixtures", action="store_true", help="the committed dumps too (with --dump/--mem)"
    )


def chosen_dumps(args: argparse.Namespace, tmp: Path) -> list[tuple[str, Path]]:
    """The dumps the options name, each with its label: ``--dump``'s, ``--mem``'s (made under
    QEMU if not in ``--workdir``), the committed ones (unpacked into ``tmp``) with
    ``--fixtures`` or when no other is named.

    :raises BenchError: a ``--mem`` dump cannot be made.
    """
    dumps = [(path.name, path) for path in args.dump or ()]
    for memory in (m.strip() for m in (args.mem or "").split(",") if m.strip()):
        made = ensure_dumps(args.workdir, memory, args.fresh, log)
        dumps.append((f"{memory} guest", made.path("elf")))
    if args.fixtures or not dumps:
        dumps += [(path.name, path) for path in unpack_fixtures(tmp)]
    return dumps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_dump_arguments(parser)
    parser.add_argument("--cpu-time", action="store_true", help="time by CPU, not wall, time")
    parser.add_argument("--addresses", type=int, default=ADDRESSES)
    parser.add_argument(
        "--by-frames",
        action="store_true",
        help="draw runs that map the same frames (aliases) as one: picks over the whole space",
    )
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--no-drgn", action="store_true", help="leave drgn out")
    parser.add_argument("--vol3", action="store_true", help="add volatility3 (4-level dumps)")
    parser.add_argument("--profile", action="store_true", help="cProfile one fresh run")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-translate-") as tmp:
        try:
            dumps = chosen_dumps(args, Path(tmp))
        except BenchError as exc:
            print(f"bench_translate: {exc}", file=sys.stderr)
            return 2
        load = [os.getloadavg()[0]]
        started = time.perf_counter()
        rows = [measure(label, path, args) for label, path in dumps]
        seconds = time.perf_counter() - started
        load.append(os.getloadavg()[0])
    clock = "CPU" if args.cpu_time else "wall"
    if args.json:
        report = {"rows": rows, "seconds": seconds, "load": load, "clock": clock}
        print(json.dumps(report, indent=2))
        return 0
    for line in report_text(rows):
        print(line)
    print(f"{clock} time; load average (1 min) {load[0]:.2f} before, {load[1]:.2f} after")
    fresh = max(row["gdbext"]["fresh_us"] for row in rows)
    warm = max(row["gdbext"]["warm_us"] for row in rows)
    print(
        f"targets: fresh {fresh:.2f} us (<= {TARGET_FRESH_US}), warm {warm:.2f} us "
        f"(<= {TARGET_WARM_US}); {seconds:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
