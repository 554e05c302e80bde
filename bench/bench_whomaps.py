"""Benchmark of ``who-maps``'s reverse index: its build beside one walk, and lookups.

For each committed dump (``fixtures/kernels``, CPU 0's table) and a simulated 8 GiB direct map
in 4 KiB pages with DIRTY on every other leaf (``bench_walk.build``), in one run (medians of
``--repeat`` runs, each on a new page table, its table cache cold):

- ``walk``: one collapsed engine walk (``iter_runs(aliases="collapse")``, the walk the index is
  built from), materialised;
- ``build``: the reverse index from a new table (that walk, its aliases resolved into spans,
  the physical segments);
- ``lookup``: microseconds per ``lookup`` (5,000 in a loop, median of 5 loops) of one random
  mapped frame (4 KiB; frames of random distinct physical ranges the index holds), of a 2 MiB
  range, and of the frame the most spans map (ESPFIX's on Linux: every answer is built, so a
  lookup costs with its answer).

Run: ``.venv/bin/python bench/bench_whomaps.py`` (``--json`` for machine-readable output;
``--cpu``: lookups timed in this process's CPU time, not wall time, so that what other jobs on
a shared machine take is not counted). Targets: build <= 1.5x the walk; <= 50 us per lookup.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_translate import unpack_fixtures
from bench_walk import GIB, build
from benchlib import timed

from gdbext.api import open_target
from gdbext.audit.revindex import ReverseIndex
from gdbext.audit.views import WALK_IGNORE, TableWalk
from gdbext.x86.paging import X86PageTable


def measure(
    name: str, new_table: Callable[[], X86PageTable], repeat: int, cpu: bool = False
) -> dict[str, Any]:
    def walk() -> None:
        list(new_table().iter_runs(aliases="collapse", ignore=WALK_IGNORE))

    def make() -> ReverseIndex:
        return ReverseIndex(TableWalk(new_table()).spans)

    # Side by side: each round times a walk then a build, and the ratio is the median of the
    # rounds' ratios (a load that comes and goes shifts both of a round alike).
    walk_times, build_times, ratios = [], [], []
    for _ in range(repeat):
        walk_times.append(timed(walk, 1))
        build_times.append(timed(make, 1))
        ratios.append(build_times[-1] / walk_times[-1])
    walk_s, build_s = statistics.median(walk_times), statistics.median(build_times)
    index = make()
    # Random frames of random distinct physical ranges the index holds (its segments that some
    # span covers): each range counted once, however many spans map it.
    starts, covers = index.starts, index.covers
    mapped = [j for j in range(len(covers)) if covers[j]]
    rng = random.Random(1)
    frames = []
    for _ in range(5_000):
        j = mapped[rng.randrange(len(mapped))]
        frames.append(starts[j] + rng.randrange(starts[j + 1] - starts[j]) // 4096 * 4096)
    lookup = index.lookup
    found = sum(len(lookup(f, f + 4096)) for f in frames)

    def per_lookup(size: int, batch: list[int]) -> float:
        def run() -> None:
            for f in batch:
                lookup(f, f + size)

        if not cpu:
            return timed(run, 5) / len(batch)
        times = []
        for _ in range(5):
            start = time.process_time()
            run()
            times.append(time.process_time() - start)
        return statistics.median(times) / len(batch)

    per_4k = per_lookup(4096, frames)
    per_2m = per_lookup(2 << 20, frames[:1000])
    # The frame the most spans map (ESPFIX's on Linux): the worst case of one lookup.
    worst = max(mapped, key=lambda j: len(covers[j]))
    worst_us = per_lookup(1, [starts[worst]] * 200) * 1e6
    at = starts[worst]
    return {
        "case": name,
        "spans": len(index),
        "segments": len(index.starts),
        "walk_ms": walk_s * 1e3,
        "build_ms": build_s * 1e3,
        "ratio": statistics.median(ratios),
        "lookup_4k_us": per_4k * 1e6,
        "lookup_2m_us": per_2m * 1e6,
        "mappings_per_lookup": found / len(frames),
        "worst_frame": hex(at),
        "worst_mappings": len(lookup(at, at + 1)),
        "worst_us": worst_us,
    }


def dump_table(path: Path) -> Callable[[], X86PageTable]:
    opened = open_target(str(path))
    target = opened.target
    cpu = target.cpu(0)
    return lambda: X86PageTable.from_cpu(target.mapper, cpu, cache=True)


def sim_table() -> Callable[[], X86PageTable]:
    pt = build(8 * GIB, 4096, scattered=True)
    return lambda: X86PageTable(pt.mapper, pt.root, 4, cache=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--cpu", action="store_true", help="lookups in CPU time, not wall time")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-whomaps-") as tmp:
        rows = [
            measure(p.stem, dump_table(p), args.repeat, args.cpu)
            for p in unpack_fixtures(Path(tmp))
        ]
        sim = sim_table()
        rows.append(measure("sim 8 GiB 4K dirty", sim, max(3, args.repeat // 2), args.cpu))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    units = "ms, CPU us" if args.cpu else "ms, us"
    print(
        f"{'case':<20} {'spans':>6} {'walk':>8} {'build':>8} {'ratio':>5} "
        f"{'4K lookup':>9} {'2M lookup':>9} {'most-mapped frame':>24}   ({units}; medians)"
    )
    for r in rows:
        print(
            f"{r['case']:<20} {r['spans']:>6} {r['walk_ms']:>8.1f} {r['build_ms']:>8.1f} "
            f"{r['ratio']:>5.2f} {r['lookup_4k_us']:>9.1f} {r['lookup_2m_us']:>9.1f} "
            f"{r['worst_us']:>9.1f} ({r['worst_mappings']:>3} spans)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
