"""Inside GDB: where a live walk's time goes, reads against the walk's own work.

Run against a stopped guest (GDB attached to QEMU's gdbstub)::

    gdb -nx -batch -ex 'target remote :PORT' -x bench/gdb_readbench.py

It sources ``gdbext/gdbinit.py``, finds the table pages a full walk reads, then reports medians
of :data:`REPEAT` runs, each as wall time and GDB's CPU time (``time.process_time``; the rest is
waiting for the stub). The runs from an empty cache, inside one command scope:

- the floor: those pages read one 4 KiB read each (what a live walk can approach);
- the same pages read with :meth:`LiveMapper.prefetch` (adjacent pages in one read);
- the engine's walk (``walk(target).runs("collapse")``, aliases collapsed as ``pt-walk`` walks,
  nothing rendered) with the engine's prefetch hook, and without it;

then the engine's walk again at the same stop (all pages cached), and the ``pt-walk`` command
itself (Linux labels, rendering, GDB's output) cold (the backend's per-stop cache dropped as a
resume drops it) and warm. With the cold command the pages it read are counted, and the
floor of those pages (one 4 KiB read each) is timed in the same rounds.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import gdb

REPEAT = 11
PAGE = 4096


class _NoPrefetch:
    """The live mapper without its ``prefetch``: the walk reads table by table."""

    read_only = True

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def read(self, paddr: int, size: int) -> bytes:
        data: bytes = self._inner.read(paddr, size)
        return data

    def write(self, paddr: int, data: bytes) -> None:
        self._inner.write(paddr, data)


def _medians(fn: Callable[[], object], before: Callable[[], object]) -> tuple[float, float]:
    """Median wall and CPU milliseconds of ``fn`` over :data:`REPEAT` runs."""
    walls, cpus = [], []
    for _ in range(REPEAT):
        before()
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return statistics.median(walls) * 1e3, statistics.median(cpus) * 1e3


def measure() -> dict[str, Any]:
    """The figures, for the ``gdb`` backend's target of the selected inferior."""
    from gdbext.frontend.commands import walk
    from gdbext_gdb.gdb_link import state_for
    from gdbext_gdbstub.mapper import LiveMapper
    from gdbext_gdbstub.options import LiveOptions

    gdb.execute("pt-info", to_string=True)  # probes once per connection
    state = state_for(gdb.selected_inferior())
    target = state.open(LiveOptions())
    mapper = target.mapper
    assert isinstance(mapper, LiveMapper) and target.command_scope is not None
    scope = target.command_scope

    def engine_walk(t: Any) -> None:
        with scope():
            for _ in walk(t).runs("collapse"):  # as pt-walk walks: aliases collapsed
                pass

    def read_each(pages: list[int]) -> Callable[[], None]:
        def run() -> None:
            with scope():
                for page in pages:
                    mapper.read(page, PAGE)

        return run

    def batched() -> None:
        with scope():
            mapper.prefetch(pages)

    def command() -> None:
        gdb.execute("pt-walk", to_string=True)

    mapper.clear()
    engine_walk(target)
    pages = list(mapper.cache)
    state.invalidate()
    command()
    command_pages = list(mapper.cache)
    ordered = sorted(pages)
    runs = 1 + sum(1 for a, b in itertools.pairwise(ordered) if b != a + PAGE)
    plain = dataclasses.replace(target, mapper=_NoPrefetch(mapper))
    figures: dict[str, Any] = {
        "read path": target.read_path,
        "table pages (engine walk)": len(pages),
        "runs of adjacent pages": runs,
        "pages (pt-walk, cold)": len(command_pages),
    }
    for name, fn, before in (
        ("floor: one read a page", read_each(pages), mapper.clear),
        ("prefetched", batched, mapper.clear),
        ("engine walk, prefetch hook", lambda: engine_walk(target), mapper.clear),
        ("engine walk, no prefetch", lambda: engine_walk(plain), mapper.clear),
        ("engine walk, cached", lambda: engine_walk(target), lambda: None),
        ("floor of pt-walk's pages", read_each(command_pages), state.invalidate),
        ("pt-walk, cold", command, state.invalidate),
        ("pt-walk, warm", command, lambda: None),
    ):
        figures[name] = _medians(fn, before)
    return figures


def main() -> None:
    gdb.execute(f"source {os.path.join(ROOT, 'gdbext', 'gdbinit.py')}")
    for name, value in measure().items():
        if isinstance(value, tuple):
            shown = f"{value[0]:7.1f} ms wall, {value[1]:6.1f} ms CPU"
        else:
            shown = str(value)
        print(f"{name:<28} {shown}")


# GDB runs this file by its path: the checkout is two directories up.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(sys._getframe().f_code.co_filename)))

if __name__ == "__main__":
    main()
