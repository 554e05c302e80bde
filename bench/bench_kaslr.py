"""Benchmark of ``kaslr --leaks``: the pointers into the kernel that user pages (or every page of
the kernel half) hold.

For each committed dump of ``fixtures/kernels`` (128 MiB guests, minimized, unpacked into a
temporary directory), or the dumps given with ``--dump``, in-process on an open dump, the stop
cache cleared before each run (a new page table, layout and KASLR report):

- **user**: ``gdbext kaslr DUMP --leaks`` (CPU 0's table, its user-accessible pages of the user
  half: the default);
- **kernel**: ``gdbext kaslr DUMP --leaks --kernel --all-pages --range HALF`` with ``HALF`` the
  kernel half (``0xffff800000000000-0xffffffffffffffff``, ``0xff00000000000000-...`` with 5
  levels): every page the kernel's table maps there, the direct map included, so every frame
  of RAM is read once and scanned;
- **report**: ``gdbext kaslr DUMP`` without ``--leaks`` (what both include).

Each row gives the pointers found (all of them: ``--max`` only bounds those kept), the bytes
read, the median time and the longest stretch without a read (where a debugger's progress
reports and LLDB's Ctrl-C wait: they come at reads).

Run: ``.venv/bin/python bench/bench_kaslr.py`` (``--repeat 5``, ``--dump FILE`` (repeatable),
``--json``, ``--profile``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_translate import unpack_fixtures
from benchlib import profiled, timed

from gdbext.addr import AddrRange
from gdbext.frontend.commands import RootOptions
from gdbext.frontend.kaslr import KaslrOptions, kaslr
from gdbext.linux.layout import params
from gdbext.plugin.target import Target


class Watched:
    """A mapper that counts the bytes read and the longest time between two reads."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.bytes = 0
        self.gap = 0.0
        self._last = time.perf_counter()

    def read(self, paddr: int, size: int) -> bytes:
        now = time.perf_counter()
        self.gap = max(self.gap, now - self._last)
        try:
            data: bytes = self.inner.read(paddr, size)
            self.bytes += len(data)
            return data
        finally:
            self._last = time.perf_counter()

    def done(self) -> None:
        self.gap = max(self.gap, time.perf_counter() - self._last)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def cases(target: Target) -> dict[str, KaslrOptions]:
    from gdbext.frontend.commands import open_page_table

    levels = open_page_table(target).levels
    half = AddrRange((1 << 64) - params(levels).user_end, 1 << 64)
    kernel = KaslrOptions(RootOptions(kernel=True), True, half, user_only=False)
    return {"report": KaslrOptions(), "user": KaslrOptions(leaks=True), "kernel": kernel}


def run(target: Target, options: KaslrOptions) -> int:
    if target.stop_cache is not None:
        target.stop_cache.clear()
    return kaslr(target, options).total_leaks


def measure(path: Path, repeat: int, profile: bool) -> dict[str, Any]:
    from gdbext_dump.dump import open_dump

    target = open_dump(str(path))
    row: dict[str, Any] = {"dump": path.name}
    for name, options in cases(target).items():
        watched = Watched(target.mapper)
        row[f"{name}_leaks"] = run(dataclasses.replace(target, mapper=watched), options)
        watched.done()
        row[f"{name}_bytes"] = watched.bytes
        row[f"{name}_gap_ms"] = watched.gap * 1e3
        row[f"{name}_ms"] = timed(lambda o=options: run(target, o), repeat) * 1e3  # type: ignore[misc]
        if profile and name != "report":
            print(profiled(lambda o=options: run(target, o), f"{name} {path.name}", 15))  # type: ignore[misc]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dump", action="append", type=Path, default=[])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        dumps = args.dump or unpack_fixtures(Path(tmp))
        rows = [measure(p, args.repeat, args.profile) for p in dumps]
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
        return
    print("| dump | report | user: pointers | read | time | gap | kernel half: pointers "
          "| read | time | gap |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        cells = [f"`{r['dump']}`", f"{r['report_ms']:.0f} ms"]
        for name in ("user", "kernel"):
            cells += [
                f"{r[f'{name}_leaks']:,}",
                f"{r[f'{name}_bytes'] / (1 << 20):.1f} MiB",
                f"**{r[f'{name}_ms']:.0f} ms**",
                f"{r[f'{name}_gap_ms']:.0f} ms",
            ]
        print("| " + " | ".join(cells) + " |")
    print(f"\n(medians of {args.repeat}; {time.perf_counter() - start:.0f} s in all)")


if __name__ == "__main__":
    main()
