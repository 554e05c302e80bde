"""The volatility3 side of the dump benchmark: its layer stack built by hand over an ELF dump.

volatility3 is installed only for the benchmark (``pip install -e '.[bench]'``); nothing in the
package or the tests imports it. The stack is what its automagic builds for a QEMU
``dump-guest-memory`` core, without the symbol search:

``FileLayer`` (the file) -> ``Elf64Layer`` (PT_LOAD segments by ``p_paddr``) -> ``Intel32e``
(4-level paging, ``page_map_offset`` = CR3).

Enumeration uses the layer's public ``mapping(offset, length, ignore_errors=True)`` over its
whole 48-bit space (``minimum_address`` to ``maximum_address``); upper-half addresses come out
in their non-canonical 48-bit form and :func:`leaves` sign-extends them. ``mapping`` merges
contiguous pages; the per-leaf view (:func:`leaves`) iterates ``_mapping``, which ``mapping``
wraps and which yields one tuple per leaf page.

What the layer leaves out, by its own code (``volatility3/framework/layers/intel.py``):

- a table whose 512 entries are all equal is treated as invalid (``_get_valid_table``), so the
  ESPFIX area, where one table is linked under every entry of the tables above it, disappears;
- a page whose physical address is not in the dump (``Elf64Layer.is_valid``), i.e. device memory
  such as the VGA hole, the IOAPIC, the HPET or the local APIC, is skipped by ``_mapping``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

#: volatility3's paging classes this benchmark can stack (no LA57 class exists in 2.x).
LAYER_CLASSES = ("Intel32e", "LinuxIntel32e")

_VA_BITS = 48
_SIGN = 1 << (_VA_BITS - 1)
_UPPER = ((1 << 64) - 1) ^ ((1 << _VA_BITS) - 1)


class Vol3Missing(RuntimeError):
    """volatility3 is not installed in this interpreter."""


@dataclass(frozen=True)
class Vol3Modules:
    """The volatility3 modules the stack needs, imported once (:func:`load`)."""

    version: str
    import_seconds: float
    contexts: Any
    physical: Any
    elf: Any
    intel: Any


def load() -> Vol3Modules:
    """Import volatility3; :class:`Vol3Missing` with an install hint if it is not there."""
    start = time.perf_counter()
    try:
        import volatility3
        from volatility3.framework import contexts
        from volatility3.framework.layers import elf, intel, physical
    except ImportError as exc:
        raise Vol3Missing(
            f"volatility3 is not installed ({exc}); run `.venv/bin/pip install volatility3` "
            "(or `pip install -e '.[bench]'`), or pass --no-vol3"
        ) from None
    seconds = time.perf_counter() - start
    try:
        version = metadata.version("volatility3")
    except metadata.PackageNotFoundError:
        version = str(getattr(volatility3, "__version__", "?"))
    return Vol3Modules(version, seconds, contexts, physical, elf, intel)


def build_layer(vol: Vol3Modules, path: Path, cr3: int, cls: str = "Intel32e") -> Any:
    """A fresh context with FileLayer -> Elf64Layer -> ``cls`` over ``path``; the paging layer.

    A fresh context each time: the layer's translation caches (``functools.lru_cache`` keyed by
    the layer object) must not carry over between timed runs.
    """
    if cls not in LAYER_CLASSES:
        raise ValueError(f"unknown volatility3 layer class {cls!r}")
    ctx = vol.contexts.Context()
    ctx.config["file.location"] = Path(path).resolve().as_uri()
    ctx.add_layer(vol.physical.FileLayer(ctx, "file", "file"))
    ctx.config["elf.base_layer"] = "file"
    ctx.add_layer(vol.elf.Elf64Layer(ctx, "elf", "elf"))
    ctx.config["virt.memory_layer"] = "elf"
    ctx.config["virt.page_map_offset"] = cr3 & ~0xFFF
    layer = getattr(vol.intel, cls)(ctx, "virt", "virt")
    ctx.add_layer(layer)
    return layer


def enumerate_mappings(layer: Any) -> int:
    """Iterate ``layer.mapping`` over the whole address space; the number of merged ranges."""
    n = 0
    for _ in layer.mapping(
        layer.minimum_address, layer.maximum_address - layer.minimum_address + 1, True
    ):
        n += 1
    return n


def canonical(va: int) -> int:
    """Sign-extend a 48-bit address as the CPU does."""
    return va | _UPPER if va & _SIGN else va


def leaves(layer: Any) -> Iterator[tuple[int, int, int]]:
    """One ``(canonical VA, PA, page size)`` per leaf page volatility3 reports."""
    for offset, size, mapped, _, _ in layer._mapping(
        layer.minimum_address, layer.maximum_address - layer.minimum_address + 1, True
    ):
        yield canonical(offset), mapped, size
