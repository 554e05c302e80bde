"""Instructions per fresh translation, counted by valgrind's callgrind: the before/after measure
of ``bench_translate.py`` that a busy machine does not sway.

For each dump it runs this script three times under ``valgrind --tool=callgrind`` (hash seed
fixed), each opening the dump and picking bench_translate's 20,000 addresses, then translating
with a fresh cached page table none of them, the first address of each 2 MiB region only, or
all of them, and exiting at once. The differences give the instructions per address, per walk
that starts a region and per translation inside a known region (the interpreter's included,
the kernel's not). ``--uncached`` counts the page table without caches.

Run: ``.venv/bin/python bench/bench_translate_instructions.py --mem 512M`` (``--dump PATH``,
``--fixtures`` as for bench_translate; about a minute per dump). Needs valgrind.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_dump import BenchError
from bench_translate import (
    ADDRESSES,
    add_dump_arguments,
    chosen_dumps,
    fresh_table,
    kernel_table,
    pick_addresses,
)

MODES = ("none", "first", "all")


def child(path: str, mode: str, cache: bool) -> None:
    """Translate ``mode``'s addresses of the dump at ``path``, then exit without clean-up."""
    from gdbext_dump.dump import open_dump

    pt, _ = kernel_table(open_dump(path))
    addrs = pick_addresses(pt, ADDRESSES)
    regions: dict[int, int] = {}
    for a in addrs:
        regions.setdefault(a >> 21, a)
    chosen = {"none": [], "first": list(regions.values()), "all": addrs}[mode]
    translate = fresh_table(pt, cache).translate
    for a in chosen:
        translate(a)
    print(len(regions), len(addrs), flush=True)
    os._exit(0)


def count(path: Path, mode: str, cache: bool) -> tuple[int, int, int]:
    """Instructions callgrind counts for one child run; the regions and addresses it saw."""
    argv = [sys.executable, __file__, "--child", str(path), mode, *([] if cache else ["-u"])]
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        check=False,
    )
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        raise BenchError(f"callgrind failed on {path} ({mode}): {proc.stderr[-300:]}")
    regions, addresses = proc.stdout.split()
    return int(found.group(1)), int(regions), int(addresses)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--child"]:
        child(args[1], args[2], "-u" not in args)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_dump_arguments(parser)
    parser.add_argument("--uncached", action="store_true", help="a page table without caches")
    opts = parser.parse_args(args)
    with tempfile.TemporaryDirectory(prefix="bench-translate-") as tmp:
        try:
            dumps = chosen_dumps(opts, Path(tmp))
            print(f"{'dump':<16} {'per address':>12} {'region walk':>12} {'in a region':>12}")
            for label, path in dumps:
                (none, _, _), (first, _, _), (every, regions, n) = (
                    count(path, m, not opts.uncached) for m in MODES
                )
                print(
                    f"{label:<16} {(every - none) // n:>12} {(first - none) // regions:>12} "
                    f"{(every - first) // (n - regions):>12}   (instructions)"
                )
        except BenchError as exc:
            print(f"bench_translate_instructions: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
