"""What the benchmark scripts share: timing, and the QEMU guest library of ``fixtures/``."""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``fn`` over ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def guest_module() -> Any:
    """``fixtures/qemu_guest.py``, the library that boots Debian's kernel under QEMU."""
    if str(ROOT / "fixtures") not in sys.path:
        sys.path.insert(0, str(ROOT / "fixtures"))
    import qemu_guest

    return qemu_guest


class RecordingMapper:
    """A read-only mapper that records the pages read through it and offers no ``prefetch``,
    so that the engine asks page by page for exactly the tables it walks (the benchmarks' floor:
    those pages, read once each)."""

    read_only = True
    PAGE = 4096

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.pages: dict[int, None] = {}

    def read(self, paddr: int, size: int) -> bytes:
        for page in range(paddr & ~(self.PAGE - 1), paddr + max(size, 1), self.PAGE):
            self.pages.setdefault(page, None)
        data: bytes = self._inner.read(paddr, size)
        return data

    def write(self, paddr: int, data: bytes) -> None:
        self._inner.write(paddr, data)
