"""Benchmark of the kernel symbol table (``--system-map``): loading a kernel-sized map, and
lookups both ways.

A System.map as large as a distribution kernel's (``--lines``, default 150,000: Debian 6.1's
has about 140,000) is written to a temporary file, symbols 64 bytes apart with nm's types mixed;
then, medians of ``--repeat`` runs:

- **load**: :func:`~gdbext.linux.symbols.load_system_map` (read, parse, index);
- **slide**: :meth:`~gdbext.linux.symbols.SymbolTable.slid` by a KASLR slide;
- **describe**: an address to ``symbol+0xoff`` (per address, 100,000 addresses);
- **resolve**: ``NAME+0x10`` to an address (per name, 100,000 names).

Run: ``.venv/bin/python bench/bench_symbols.py`` (``--repeat 5``, ``--json``).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

from benchlib import timed

from gdbext.linux.symbols import load_system_map

BASE = 0xFFFFFFFF81000000
SLIDE = 0x1E000000
LOOKUPS = 100_000


def write_map(path: Path, lines: int) -> None:
    rng = random.Random(1)
    with path.open("w") as f:
        f.write(f"{BASE:016x} T _text\n")
        for i in range(lines - 1):
            f.write(f"{BASE + 64 * (i + 1):016x} {rng.choice('TtDdBbRr')} sym_{i}\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--lines", type=int, default=150_000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "System.map"
        write_map(path, args.lines)
        load = timed(lambda: load_system_map(path), args.repeat)
        table = load_system_map(path)
        slide = timed(lambda: table.slid(SLIDE), args.repeat)
        slid = table.slid(SLIDE)
        rng = random.Random(2)
        addrs = [BASE + SLIDE + rng.randrange(64 * args.lines) for _ in range(LOOKUPS)]
        names = [f"sym_{rng.randrange(args.lines - 1)}+0x10" for _ in range(LOOKUPS)]
        describe = timed(lambda: [slid.describe(a) for a in addrs], args.repeat) / LOOKUPS
        resolve = timed(lambda: [slid.resolve(n) for n in names], args.repeat) / LOOKUPS
    result = {
        "lines": args.lines,
        "load_s": round(load, 3),
        "slide_s": round(slide, 6),
        "describe_us": round(describe * 1e6, 2),
        "resolve_us": round(resolve * 1e6, 2),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"System.map of {args.lines:,} lines: load {load:.3f} s, slide {slide * 1e3:.3f} ms, "
            f"describe {describe * 1e6:.2f} us, resolve {resolve * 1e6:.2f} us "
            f"(medians of {args.repeat})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
