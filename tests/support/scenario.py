"""Elements of the simulator's scenario documents (``fixtures/scenarios/*.json``), built by the
tests that write their machines in place."""

from __future__ import annotations

from typing import Any


def mapping(vaddr: int, paddr: int, count: int, *flags: str, size: str = "4K") -> dict[str, Any]:
    """One ``mappings`` element: ``count`` pages of ``size`` from ``vaddr`` onto ``paddr``."""
    return {
        "vaddr": hex(vaddr),
        "paddr": hex(paddr),
        "size": size,
        "count": count,
        "flags": list(flags),
    }


def sized(vaddr: int, paddr: int, size: str, count: int, *flags: str) -> dict[str, Any]:
    """:func:`mapping` with the page size before the count."""
    return mapping(vaddr, paddr, count, *flags, size=size)
