"""Benchmark of a whole walk of the committed kernel dumps: the engine and the text renderer.

For each dump of ``fixtures/kernels`` (QEMU ``dump-guest-memory`` ELF cores, unpacked into a
temporary directory), the walk ``gdbext walk DUMP`` prints (CPU 0's table, default options),
rendered to a sink in-process:

- **first**: the first walk after the dump is opened (its pages come from the file);
- **new table**: the same walk again on the same open dump (median of ``--repeat`` runs),
  through ``commands.walk`` with the target's stop cache cleared first (a new page table and
  layout per walk);
- **same stop**: the walk again through ``commands.walk`` with the stop cache kept, as every
  command at one stop gets it (the page table's table cache and walk memo, the layout);
- **engine**: the records alone of a new page table's walk (``iter_runs`` as the text
  renderer asks for them), without rendering;
- **json**: ``gdbext walk DUMP --format json`` at the same stop: every leaf with all its flags,
  shared tables expanded (ESPFIX's one page table, linked 2,048 times, makes most of a
  kernel's records).

Run: ``.venv/bin/python bench/bench_fixture_walk.py`` (``--repeat 15``, ``--json``,
``--profile`` for cProfile of one walk at the same stop). Target: a walk at the same stop
<= 10 ms.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench_translate import unpack_fixtures
from benchlib import profiled, timed

from gdbext.flags import ACCESSED_DIRTY
from gdbext.frontend.commands import WalkOptions, walk
from gdbext.plugin.target import Target
from gdbext.render import jsonout, text

TARGET_WARM_MS = 10.0


def sink(lines: Iterable[str]) -> int:
    n = 0
    for _ in lines:
        n += 1
    return n


def text_walk(target: Target) -> int:
    return sink(text.render_walk(walk(target, WalkOptions())))


def json_walk(target: Target) -> int:
    return sink(jsonout.render_walk(walk(target, WalkOptions())))


def new_stop(target: Target) -> None:
    """Forget what the dump's target keeps for its stop (a dump's target has a stop cache)."""
    assert target.stop_cache is not None
    target.stop_cache.clear()


def new_table_walk(target: Target) -> int:
    new_stop(target)
    return text_walk(target)


def engine_walk(target: Target) -> int:
    new_stop(target)
    pt = walk(target, WalkOptions()).page_table
    return sum(1 for _ in pt.iter_runs(aliases="collapse", ignore=ACCESSED_DIRTY))


def measure(path: Path, repeat: int, profile: bool) -> dict[str, Any]:
    from gdbext_dump.dump import open_dump

    target = open_dump(str(path))
    start = time.perf_counter()
    lines = text_walk(target)
    first = time.perf_counter() - start
    row: dict[str, Any] = {
        "dump": path.name,
        "levels": walk(target, WalkOptions()).page_table.levels,
        "lines": lines,
        "first_ms": first * 1e3,
        "warm_ms": timed(lambda: new_table_walk(target), repeat) * 1e3,
        "engine_ms": timed(lambda: engine_walk(target), repeat) * 1e3,
    }
    text_walk(target)
    row |= {"same_stop_ms": timed(lambda: text_walk(target), repeat) * 1e3}
    row |= {
        "json_lines": json_walk(target),
        "json_ms": timed(lambda: json_walk(target), repeat) * 1e3,
    }
    if profile:
        row["profile"] = profiled(lambda: text_walk(target), f"warm walk of {path.name}", 15)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-walk-") as tmp:
        rows = [measure(path, args.repeat, args.profile) for path in unpack_fixtures(Path(tmp))]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"{'dump':<16} {'lv':>2} {'lines':>6} {'first':>8} {'new table':>9} {'same stop':>9} "
        f"{'engine':>8} {'json':>8} {'lines':>6}   (ms, medians)"
    )
    for row in rows:
        print(
            f"{row['dump']:<16} {row['levels']:>2} {row['lines']:>6} {row['first_ms']:>8.1f} "
            f"{row['warm_ms']:>9.1f} {row['same_stop_ms']:>9.1f} {row['engine_ms']:>8.1f} "
            f"{row['json_ms']:>8.1f} {row['json_lines']:>6}"
        )
        if "profile" in row:
            print(row["profile"])
    print(f"target: same stop <= {TARGET_WARM_MS} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
