"""Benchmark of ``search --string`` over every mapping of a dump, and of ``--phys``.

For each committed dump of ``fixtures/kernels`` (128 MiB guests, unpacked into a temporary
directory), or the dumps given with ``--dump``, in-process on an open dump:

- **virtual**: ``gdbext search DUMP --string TEXT`` (CPU 0's table, default options), a
  string that is nowhere, so every mapped frame range is read and searched (each once however
  many addresses map it) and every boundary of two virtually consecutive runs is looked across;
  the stop cache is cleared before each run (a new page table and layout);
- **physical**: the same with ``--phys`` (every RAM range);
- **one process**: ``gdbext search DUMP --string TEXT`` as a command, start-up included.

Run: ``.venv/bin/python bench/bench_search.py`` (``--repeat 5``, ``--dump FILE`` (repeatable),
``--json``, ``--profile``). Target: a virtual search of a 512 MiB guest's dump <= 1 s.
``bench/bench_search_live.py`` times a search with hits on one guest's dump, live, and with
gdb-pt-dump beside it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_translate import unpack_fixtures
from benchlib import ROOT, profiled, timed

from gdbext.frontend.memsearch import Pattern, SearchOptions, search_memory
from gdbext.plugin.target import Target

TEXT = "gdbext: a string that is nowhere"
TARGET_S = 1.0


def search(target: Target, physical: bool) -> int:
    if target.stop_cache is not None:
        target.stop_cache.clear()
    result = search_memory(
        target, SearchOptions(Pattern(TEXT.encode(), "string"), physical=physical)
    )
    found = sum(1 for _ in result.hits())
    assert found == 0
    return result.bytes_read


def measure(path: Path, repeat: int, profile: bool) -> dict[str, Any]:
    from gdbext_dump.dump import open_dump

    target = open_dump(str(path))
    row: dict[str, Any] = {"dump": path.name}
    row["virtual_bytes"] = search(target, False)
    row["physical_bytes"] = search(target, True)
    row["virtual_ms"] = timed(lambda: search(target, False), repeat) * 1e3
    row["physical_ms"] = timed(lambda: search(target, True), repeat) * 1e3
    gdbext = ROOT / ".venv" / "bin" / "gdbext"

    def process() -> None:
        subprocess.run([str(gdbext), "search", str(path), "--string", TEXT], capture_output=True)

    row["process_ms"] = timed(process, repeat) * 1e3
    if profile:
        print(profiled(lambda: search(target, False), f"search {path.name}", 15))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dump", action="append", type=Path, default=[])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dumps = args.dump or unpack_fixtures(Path(tmp))
        start = time.perf_counter()
        rows = [measure(p, args.repeat, args.profile) for p in dumps]
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
        return
    print("| dump | mapped frames read | virtual search | RAM read | --phys | one process |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| `{r['dump']}` | {r['virtual_bytes'] >> 20} MiB | **{r['virtual_ms']:.0f} ms** "
            f"| {r['physical_bytes'] >> 20} MiB | {r['physical_ms']:.0f} ms "
            f"| {r['process_ms']:.0f} ms |"
        )
    print(
        f"\n(target: virtual <= {TARGET_S * 1e3:.0f} ms on a 512 MiB guest; "
        f"{time.perf_counter() - start:.0f} s in all)"
    )


if __name__ == "__main__":
    main()
