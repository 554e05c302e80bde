"""Benchmark of ``map``'s page: its size, the time to make it, and Chromium's time to first paint.

For each committed dump (``fixtures/kernels``, unpacked into a temporary directory) and a
synthetic scenario of ``--leaves`` 4 KiB leaves (default 75,000) whose permissions alternate
page by page, so that none merge (the worst case: every leaf a range of its own):

- **html**: the page's size in bytes;
- **make**: ``gdbext map DUMP -o FILE`` run in-process (walk, merge, render), median of
  ``--repeat``;
- **paint**: Chromium's time from navigation start to the end of the page's first drawing
  (``performance.now()`` when it finished, which the page reports in ``#drawn``), median of
  ``--repeat`` loads with ``chromium --headless=new --dump-dom`` (the browser's own start-up
  is not counted).

Run: ``.venv/bin/python bench/bench_map.py`` (``--repeat 3``, ``--json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench_translate import unpack_fixtures
from benchlib import ROOT, BenchError, timed

sys.path.insert(0, str(ROOT / "tests"))

from support.cli import cli_lines
from support.mappage import drawn


def synthetic(path: Path, leaves: int) -> None:
    """A scenario of ``leaves`` 4 KiB pages in the vmalloc area, read-only and read-write in
    turn (so that no two merge), and a few user pages."""
    base = 0xFFFFC90000000000
    mappings = [
        {"vaddr": "0x400000", "paddr": "0x1000000", "size": "4K", "count": 4,
         "flags": ["USER_ACCESSIBLE"]},
    ]  # fmt: skip
    for i in range(leaves - 4):
        flags = ["NO_EXECUTE"] + (["WRITABLE"] if i % 2 else [])
        mappings.append(
            {"vaddr": hex(base + i * 4096), "paddr": hex(0x2000000 + 4096 * (i % 16384)),
             "size": "4K", "count": 1, "flags": flags}
        )  # fmt: skip
    doc = {"description": f"{leaves} leaves, none merged", "levels": 4, "ram": "512M",
           "nxe": True, "mappings": mappings}  # fmt: skip
    path.write_text(json.dumps(doc))


def measure(name: str, source: list[str], out: Path, repeat: int) -> dict[str, Any]:
    argv = ["map", *source, "-o", str(out)]

    def make() -> None:
        status, lines = cli_lines(argv)
        if status != 0:
            raise BenchError(f"gdbext {' '.join(argv)}: exit status {status}: {lines}")

    make_s = timed(make, repeat)
    paints = [drawn(out)["first_paint_ms"] for _ in range(repeat)]
    report = drawn(out)
    return {
        "page": name,
        "leaves": json.loads(
            out.read_text().split('type="application/json">', 1)[1].split("</script>", 1)[0]
        )["leaves"],
        "html_bytes": out.stat().st_size,
        "make_s": round(make_s, 3),
        "paint_ms": round(statistics.median(paints), 1),
        "draw_ms": round(report["draw_ms"], 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--leaves", type=int, default=75_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for dump in unpack_fixtures(work):
            rows.append(measure(dump.stem, [str(dump)], work / f"{dump.stem}.html", args.repeat))
        scenario = work / "synthetic.json"
        synthetic(scenario, args.leaves)
        rows.append(
            measure(
                f"synthetic ({args.leaves} leaves, none merged)",
                ["--backend", "sim", "--scenario", str(scenario)],
                work / "synthetic.html",
                args.repeat,
            )
        )
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'page':<38} {'leaves':>7} {'HTML':>10} {'make':>8} {'first paint':>12} {'draw':>8}")
    for r in rows:
        print(
            f"{r['page']:<38} {r['leaves']:>7} {r['html_bytes']:>10,} {r['make_s']:>7.3f}s "
            f"{r['paint_ms']:>10.1f}ms {r['draw_ms']:>6.1f}ms"
        )
    print(f"(medians of {args.repeat})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
