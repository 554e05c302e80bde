"""Benchmark of the paging engine on the simulator.

Measures, in one run (figures are medians of ``--repeat`` runs):

- walk throughput in leaf entries per second over a simulated 8 GiB direct map in 4 KiB pages
  (2 M leaves) and in 2 MiB pages: the default text walk (merged ranges, streamed to a sink),
  the JSON walk, and per-leaf iteration (``iter_mappings``, one object per leaf);
- translation time per address, warm (the same addresses translated before);
- peak Python memory (tracemalloc) of a streaming default walk for growing direct maps, to show
  that memory grows with the number of tables, not the number of leaves.

Run: ``.venv/bin/python bench/bench_walk.py`` (``--quick`` for a smaller map, ``--json`` for
machine-readable output). Targets: >= 2 M leaves/s walked; <= 2 us per warm translation.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
import tracemalloc
from collections.abc import Iterable
from typing import Any

from benchlib import timed

from gdbext.flags import PageTableFlags
from gdbext.frontend.commands import WalkOptions, WalkResult
from gdbext.mapper import read_table, write_table
from gdbext.render import jsonout, qemu_tlb, text
from gdbext.x86.paging import X86PageTable
from gdbext_sim.memory import SparsePhysMemory, TopDownFrameAllocator

DIRECT_MAP = 0xFFFF_8880_0000_0000
GIB = 1 << 30


def build(map_bytes: int, page_size: int, scattered: bool = False) -> X86PageTable:
    """A 4-level table with a direct map of ``map_bytes`` at Linux's base.

    ``scattered`` sets DIRTY on every other leaf, as a used kernel's tables look: no two
    neighbouring leaves have equal entries, so no table takes the walker's uniform fast path.
    """
    tables = map_bytes // (page_size * 512) + map_bytes // GIB + 8
    ram = max(64 << 20, (tables + 64) * 4096)
    mem = SparsePhysMemory(ram)
    alloc = TopDownFrameAllocator(mem)
    root = alloc.allocate_frame()
    assert root is not None
    pt = X86PageTable(mem, root, 4, allow_writes=True)
    flags = PageTableFlags.WRITABLE | PageTableFlags.NO_EXECUTE | PageTableFlags.GLOBAL
    pt.map_range(DIRECT_MAP, 0, map_bytes, page_size, flags, alloc)
    if scattered:
        leaf_tables = {
            pt.translate(va).steps[-1].table
            for va in range(DIRECT_MAP, DIRECT_MAP + map_bytes, page_size * 512)
        }
        for table in leaf_tables:
            entries = list(read_table(mem, table))
            for i in range(1, 512, 2):
                entries[i] |= PageTableFlags.DIRTY
            write_table(mem, table, entries)
    return X86PageTable(mem, root, 4)


def sink(lines: Iterable[str]) -> int:
    n = 0
    for _ in lines:
        n += 1
    return n


def walk_figures(pt: X86PageTable, leaves: int, repeat: int) -> dict[str, float]:
    def text_walk() -> None:
        sink(text.render_walk(WalkResult(pt, WalkOptions())))

    def json_walk() -> None:
        sink(jsonout.render_walk(WalkResult(pt, WalkOptions())))

    def qemu() -> None:
        sink(qemu_tlb.render_walk(WalkResult(pt, WalkOptions())))

    def per_leaf() -> None:
        n = 0
        for _ in pt.iter_mappings():
            n += 1
        assert n == leaves, n

    walks = {"text": text_walk, "json": json_walk, "qemu-tlb": qemu, "iter_mappings": per_leaf}
    out = {}
    for name, fn in walks.items():
        seconds = timed(fn, repeat)
        out[f"{name}_s"] = seconds
        out[f"{name}_leaves_per_s"] = leaves / seconds
    return out


def translate_figures(pt: X86PageTable, map_bytes: int, repeat: int) -> dict[str, float]:
    """Per-address translation time: uncached, and warm with the table cache."""
    rng = random.Random(1)
    addrs = [DIRECT_MAP + rng.randrange(map_bytes) for _ in range(20000)]
    cold_pt = X86PageTable(pt.mapper, pt.root, pt.levels)
    warm_pt = X86PageTable(pt.mapper, pt.root, pt.levels, cache=True)
    for a in addrs:
        warm_pt.translate(a)  # warm the cache
    cold = timed(lambda: [cold_pt.translate(a) for a in addrs], repeat)
    warm = timed(lambda: [warm_pt.translate(a) for a in addrs], repeat)
    return {
        "translate_us": warm / len(addrs) * 1e6,
        "translate_uncached_us": cold / len(addrs) * 1e6,
    }


def memory_figures(sizes_gib: list[int], scattered: bool) -> list[dict[str, float]]:
    """Peak traced memory of a streaming walk: text for uniform tables, JSON for scattered."""
    rows = []
    render = jsonout.render_walk if scattered else text.render_walk
    for gib in sizes_gib:
        pt = build(gib * GIB, 4096, scattered=scattered)
        gc.collect()
        tracemalloc.start()
        lines = sink(render(WalkResult(pt, WalkOptions())))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        tables = gib * 512 + gib + 2
        rows.append(
            {
                "map_gib": gib,
                "leaves": gib * 512 * 512,
                "tables": tables,
                "peak_bytes": peak,
                "bytes_per_table": peak / tables,
                "bytes_per_leaf": peak / (gib * 512 * 512),
                "lines": lines,
            }
        )
        del pt
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 GiB map, 3 repeats")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    gib = 1 if args.quick else 8
    repeat = 3 if args.quick else args.repeat
    report: dict[str, Any] = {"map_gib": gib, "repeat": repeat, "python": sys.version.split()[0]}

    start = time.perf_counter()
    pt4k = build(gib * GIB, 4096)
    report["build_4k_s"] = time.perf_counter() - start
    leaves_4k = gib * GIB // 4096
    report["walk_4k"] = walk_figures(pt4k, leaves_4k, repeat)
    del pt4k
    pt4k = build(gib * GIB, 4096, scattered=True)
    report["walk_4k_scattered"] = walk_figures(pt4k, leaves_4k, max(1, repeat // 2))
    report["translate_4k"] = translate_figures(pt4k, gib * GIB, repeat)
    del pt4k
    pt2m = build(gib * GIB, 1 << 21)
    report["walk_2m"] = walk_figures(pt2m, gib * GIB >> 21, repeat)
    report["translate_2m"] = translate_figures(pt2m, gib * GIB, repeat)
    del pt2m
    sizes = [1, 2] if args.quick else [1, 2, 4, 8]
    report["memory"] = memory_figures(sizes, scattered=False)
    report["memory_scattered"] = memory_figures(sizes, scattered=True)

    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"gdbext paging benchmark: {gib} GiB direct map, median of {repeat} runs")
    print(f"  build 4K tables via map_range: {report['build_4k_s']:.2f} s")
    for key, label in (
        ("walk_4k", "4 KiB pages, uniform tables"),
        ("walk_4k_scattered", "4 KiB pages, DIRTY on every other leaf"),
        ("walk_2m", "2 MiB pages"),
    ):
        w = report[key]
        print(f"  walk, {label}:")
        for name in ("text", "json", "qemu-tlb", "iter_mappings"):
            print(
                f"    {name:<14} {w[name + '_s'] * 1e3:9.1f} ms "
                f"{w[name + '_leaves_per_s'] / 1e6:9.2f} M leaves/s"
            )
    for key in ("translate_4k", "translate_2m"):
        t = report[key]
        print(
            f"  {key}: {t['translate_us']:.2f} us/address warm (table cache), "
            f"{t['translate_uncached_us']:.2f} us uncached"
        )
    for key, label in (
        ("memory", "text walk, uniform tables"),
        ("memory_scattered", "JSON walk, scattered tables (one record per leaf)"),
    ):
        print(f"  peak memory of a streaming {label} (tracemalloc):")
        for row in report[key]:
            print(
                f"    {row['map_gib']:2} GiB: {row['leaves']:>8} leaves {row['tables']:>5} tables"
                f" peak {row['peak_bytes'] / 1024:8.0f} KiB = {row['bytes_per_table']:6.0f} "
                f"B/table {row['bytes_per_leaf']:6.2f} B/leaf"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
