"""Inside GDB: how long a full walk's table pages take to read, one by one and prefetched.

Run against a stopped guest (GDB attached to QEMU's gdbstub)::

    PYTHONPATH=.venv/lib/python3.11/site-packages:.:backends \\
        gdb -nx -batch -ex 'target remote :PORT' -x backends/gdbext_gdb/gdb_readbench.py

It finds the table pages a full default walk reads, then reports medians of ``REPEAT`` runs
(each from an empty cache, inside one command scope): reading those pages one 4 KiB read each
(the floor a live walk can approach), reading them with :meth:`LiveMapper.prefetch` (adjacent
pages in one read), a full walk with the engine's prefetch hook and one without it, and a
repeated walk at the same stop (all pages cached).
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
import time
from collections.abc import Callable
from typing import Any

import gdb  # noqa: F401  (this script runs only inside GDB)

from gdbext.frontend.commands import walk
from gdbext.plugin.host import Host
from gdbext.plugin.target import OpenRequest, Target
from gdbext_gdbstub.mapper import LiveMapper

REPEAT = 7


class _NoPrefetch:
    """The live mapper without its ``prefetch``: the walk reads table by table."""

    read_only = True

    def __init__(self, inner: LiveMapper) -> None:
        self._inner = inner

    def read(self, paddr: int, size: int) -> bytes:
        return self._inner.read(paddr, size)

    def write(self, paddr: int, data: bytes) -> None:
        self._inner.write(paddr, data)


def _median_ms(fn: Callable[[], object], before: Callable[[], object]) -> float:
    times = []
    for _ in range(REPEAT):
        before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def measure(target: Target) -> dict[str, Any]:
    """The figures, for a target of the ``gdb`` backend."""
    mapper = target.mapper
    assert isinstance(mapper, LiveMapper) and target.command_scope is not None
    scope = target.command_scope

    def full_walk(t: Target) -> None:
        with scope():
            for _ in walk(t).runs():
                pass

    mapper.clear()
    full_walk(target)
    pages = list(mapper.cache)
    ordered = sorted(pages)
    runs = 1 + sum(1 for a, b in itertools.pairwise(ordered) if b != a + 4096)

    def one_by_one() -> None:
        with scope():
            for page in pages:
                mapper.read(page, 4096)

    def batched() -> None:
        with scope():
            mapper.prefetch(pages)

    plain = dataclasses.replace(target, mapper=_NoPrefetch(mapper))
    return {
        "read path": target.read_path,
        "table pages": len(pages),
        "runs of adjacent pages": runs,
        "one by one (ms)": _median_ms(one_by_one, mapper.clear),
        "prefetched (ms)": _median_ms(batched, mapper.clear),
        "walk, prefetch hook (ms)": _median_ms(lambda: full_walk(target), mapper.clear),
        "walk, no prefetch (ms)": _median_ms(lambda: full_walk(plain), mapper.clear),
        "walk, cached (ms)": _median_ms(lambda: full_walk(target), lambda: None),
    }


def main() -> None:
    host = Host.create()
    for options in ({}, {"read_via": "xp"}):
        target = host.backend("gdb").open(OpenRequest(None, options))
        for name, value in measure(target).items():
            shown = f"{value:.1f}" if isinstance(value, float) else str(value)
            print(f"{name:<26} {shown}")
        print()


if __name__ == "__main__":
    main()
