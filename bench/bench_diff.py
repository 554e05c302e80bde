"""Benchmark of ``diff``: two dumps compared, against a walk of one.

For each dump of ``fixtures/kernels`` (unpacked into a temporary directory), with the stop
caches cleared before every run (new page tables, as two dumps opened afresh):

- **walk**: the text walk ``gdbext walk DUMP`` prints, rendered to a sink (``commands.walk``);
- **diff, self**: ``gdbext diff DUMP DUMP`` (text, to a sink): two walks of the same tables
  and the merge of their run streams (no change);
- **diff, other**: ``gdbext diff DUMP OTHER`` against the other 4-level dump (another boot,
  KASLR on one: hundreds of changes, the unrelated-address-space warning; ``la57`` has none);
- **diff, PTI pair** (``kaslr-pti`` only): its kernel PGD against its user PGD.

Run: ``.venv/bin/python bench/bench_diff.py`` (``--repeat 15``, ``--json``, ``--profile``;
``--dump A --dump B`` for other dumps, e.g. a 512 MiB guest's). Each round times the walk and
the diffs one after the other; the ratios are the medians of the rounds' ratios.
Target: a diff <= 2x a walk of one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench_translate import unpack_fixtures
from benchlib import profiled, timed

from gdbext.frontend.commands import RootOptions, WalkOptions, walk
from gdbext.frontend.diff import DiffOptions, diff
from gdbext.plugin.target import Target
from gdbext.render import diff as render_diff
from gdbext.render import text

TARGET_RATIO = 2.0


def sink(lines: Iterable[str]) -> int:
    return sum(1 for _ in lines)


def new_stop(*targets: Target) -> None:
    for target in targets:
        assert target.stop_cache is not None
        target.stop_cache.clear()


def text_walk(target: Target) -> int:
    new_stop(target)
    return sink(text.render_walk(walk(target, WalkOptions())))


def text_diff(old: Target, new: Target, options: DiffOptions | None = None) -> int:
    new_stop(old, new)
    return sink(render_diff.render_text(diff(old, new, options or DiffOptions())))


def measure(path: Path, other: Path | None, repeat: int, profile: bool) -> dict[str, Any]:
    from gdbext_dump.dump import open_dump

    a, a2 = open_dump(str(path)), open_dump(str(path))
    b = None if other is None else open_dump(str(other))
    # Side by side: each round times the walk, then each diff; a ratio is the median of the
    # rounds' ratios (a load that comes and goes shifts a round's figures alike).
    walks, selfs, others = [], [], []
    for _ in range(repeat):
        walks.append(timed(lambda: text_walk(a), 1))
        selfs.append(timed(lambda: text_diff(a, a2), 1))
        if b is not None:
            others.append(timed(lambda: text_diff(a, b), 1))
    walk_s = statistics.median(walks)
    row: dict[str, Any] = {
        "dump": path.name,
        "walk_ms": walk_s * 1e3,
        "self_ms": statistics.median(selfs) * 1e3,
        "self_ratio": statistics.median(s / w for s, w in zip(selfs, walks, strict=True)),
    }
    if b is not None and other is not None:
        row |= {
            "other": other.name,
            "other_ms": statistics.median(others) * 1e3,
            "other_lines": text_diff(a, b),
            "other_ratio": statistics.median(o / w for o, w in zip(others, walks, strict=True)),
        }
    if path.name.startswith("kaslr-pti"):
        pair = DiffOptions(new=RootOptions(user_pgd=True))
        row["pti_ms"] = timed(lambda: text_diff(a, a, pair), repeat) * 1e3
    if profile:
        row["profile"] = profiled(lambda: text_diff(a, a2), f"diff {path.name} itself", 15)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--dump",
        action="append",
        type=Path,
        help="these dumps instead of the committed ones (each diffed with itself, and with "
        "the next one given; bench_search_live.py and bench_roots.py leave big ones in /tmp)",
    )
    args = parser.parse_args(argv)
    if args.dump:
        given = args.dump
        rows = [
            measure(p, given[i + 1] if i + 1 < len(given) else None, args.repeat, args.profile)
            for i, p in enumerate(given)
        ]
    else:
        with tempfile.TemporaryDirectory(prefix="bench-diff-") as tmp:
            paths = {p.stem: p for p in unpack_fixtures(Path(tmp))}
            others = {"4level": "kaslr-pti", "kaslr-pti": "4level"}
            rows = [
                measure(path, paths.get(others.get(name, "")), args.repeat, args.profile)
                for name, path in paths.items()
            ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"{'dump':<16} {'walk':>7} {'diff self':>9} {'ratio':>5} {'diff other':>10} "
        f"{'ratio':>5} {'lines':>5} {'PTI pair':>8}   (ms, medians)"
    )
    for row in rows:
        pti = f"{row['pti_ms']:>8.1f}" if "pti_ms" in row else f"{'':>8}"
        other = (
            f"{row['other_ms']:>10.1f} {row['other_ratio']:>5.2f} {row['other_lines']:>5}"
            if "other_ms" in row
            else f"{'-':>10} {'':>5} {'':>5}"
        )
        print(
            f"{row['dump']:<16} {row['walk_ms']:>7.1f} {row['self_ms']:>9.1f} "
            f"{row['self_ratio']:>5.2f} {other} {pti}"
        )
        if "profile" in row:
            print(row["profile"])
    print(f"target: diff <= {TARGET_RATIO}x a walk")
    return 0


if __name__ == "__main__":
    sys.exit(main())
