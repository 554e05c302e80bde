"""How much memory the boot_params scans read: only what can be read, the kernel image first.

- A kdump that describes 64 GiB and holds 63 pages (``makedumpfile -d 31`` on a big machine,
  written here with the simulator's kdump writer) costs a read per captured run, not 16 million
  page reads; the simulator's petabyte of RAM costs its written frames.
- :func:`~gdbext.linux.e820.kernel_boot_params` (the kernel image searched from its top down) picks
  the copy that :func:`~gdbext.linux.e820.choose_boot_params` picks from a scan of all memory, on
  random layouts checked against that full scan.

The boot_params here are built at the reference offsets by ``test_e820.boot_params``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.e820 import QEMU_E820

from gdbext.addr import AddrRange
from gdbext.frontend.commands import RootOptions
from gdbext.frontend.heap import HeapOptions, heap
from gdbext.linux.e820 import (
    BOOT_PARAMS_SIZE,
    SCAN_CHUNK,
    choose_boot_params,
    kernel_boot_params,
    scan_boot_params,
)
from gdbext.mapper import readable_ranges
from gdbext.plugin.host import Host
from gdbext.plugin.target import OpenRequest
from gdbext_dump.kdump import KdumpMapper
from gdbext_sim.bootparams import boot_params
from gdbext_sim.kdump import write_kdump
from gdbext_sim.memory import SparsePhysMemory
from gdbext_sim.scenario import build_machine

GiB = 1 << 30
DIRECT = 0xFFFF_8880_0000_0000
#: The e820 map of the big machines: 64 GiB of RAM above 1 MiB.
BIG_E820 = [(0x0, 0x9FC00, 1), (0x9FC00, 0x400, 2), (0x100000, 64 * GiB - 0x100000, 1)]


def count_calls(monkeypatch: pytest.MonkeyPatch, obj: Any, name: str) -> list[int]:
    """Wrap ``obj.name`` (until the test ends) to count its calls: the list's length."""
    calls: list[int] = []
    inner: Callable[..., Any] = getattr(obj, name)

    def counted(*args: Any) -> Any:
        calls.append(0)
        return inner(*args)

    monkeypatch.setattr(obj, name, counted)
    return calls


def test_a_kdump_of_64g_holding_63_pages_reads_only_those(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(11)
    at = 37 * GiB + 0x5000  # the boot_params page, one of the 63
    pages = {at >> 12: boot_params(BIG_E820)}
    while len(pages) < 63:
        pfn = rng.randrange(0x100, (64 * GiB) >> 12)
        pages.setdefault(pfn, rng.randbytes(4096).replace(b"HdrS", b"hdrs"))
    path = tmp_path / "big.kdump"
    ram = [AddrRange(0, 0xA0000), AddrRange(0x100000, 64 * GiB)]
    write_kdump(path, pages, max_mapnr=(64 * GiB) >> 12, flattened=False, ram=ram,
                exclude_rest=True)  # fmt: skip
    reads = count_calls(monkeypatch, KdumpMapper, "read")  # from the open: it seeks VMCOREINFO
    target = Host.create().backend("core").open(OpenRequest(str(path)))
    assert target.ram == ram
    assert sum(r.size for r in readable_ranges(target.mapper, target.ram)) == 63 * 4096
    assert target.details["VMCOREINFO"] == "none (no note; not found in RAM)"
    assert len(reads) <= 63  # the VMCOREINFO search: one read per run of captured pages
    reads.clear()
    result = heap(target, HeapOptions(memmap="e820", phys_offset=DIRECT))
    assert (result.range.start, result.range.end) == (DIRECT + 0x100000, DIRECT + 64 * GiB)
    assert f"boot_params at 0x{at:x}" in result.source
    # One read per run of captured pages (at most 63), and the copy's 4 KiB came with its run.
    assert len(reads) <= 63


def test_the_simulators_petabyte_costs_its_written_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = {
        "levels": 4,
        "ram": "1P",
        "mappings": [
            {"vaddr": "0xffffffff81000000", "paddr": "0x1000000", "size": "2M", "count": 2,
             "flags": ["WRITABLE", "GLOBAL"]},
        ],
    }  # fmt: skip
    machine = build_machine(doc, "<1P>")
    memory = machine.memory
    assert memory.ram_ranges == (AddrRange(0, 1 << 50),)
    high = (1 << 49) + 0x880  # outside the kernel image, higher than the kernel's copy
    kernel_copy = 0x1234880  # inside the image (0x1000000-0x1400000)
    memory.write(high, boot_params(QEMU_E820[:4]))
    memory.write(kernel_copy, boot_params(QEMU_E820))
    reads = count_calls(monkeypatch, memory, "read")
    finds = count_calls(monkeypatch, memory, "find")
    result = heap(machine.to_target(), HeapOptions(memmap="e820", phys_offset=DIRECT))
    assert f"boot_params at 0x{kernel_copy:x} (the kernel's copy, in its image)" in result.source
    assert (result.range.start, result.range.end) == (DIRECT + 0x100000, DIRECT + 0x7FE0000)
    # The image's 4 MiB top down (4 chunks) plus the page-table walk's tables.
    assert len(reads) <= 4 + 16 and not finds

    # Without the image (the root maps nothing there): the full scan, through find.
    reads.clear()
    options = HeapOptions(memmap="e820", phys_offset=DIRECT, root=RootOptions(cr3=0x7000))
    result = heap(machine.to_target(), options)
    assert f"boot_params at 0x{high:x} (the highest of 2 found)" in result.source
    assert len(finds) == 3 and len(reads) <= 2 + 4  # two candidates' 4 KiB, the root table


def _layout(rng: random.Random) -> tuple[SparsePhysMemory, list[AddrRange]]:
    """64 MiB with boot_params copies at random 8-byte-aligned places, some in the image, some
    straddling chunks or the image's edges, some broken; and the image's (1 to 3) ranges."""
    memory = SparsePhysMemory(64 << 20, ram=[AddrRange(0, 0xA0000), AddrRange(0x100000, 64 << 20)])
    image: list[AddrRange] = []
    start = 0x1000000
    for _ in range(rng.randint(1, 3)):
        size = rng.randint(1, 6) * 0x200000
        image.append(AddrRange(start, start + size))
        start += size + rng.choice([0, 0x200000])
    edges = [r.start for r in image] + [r.end for r in image]
    for _ in range(rng.randint(0, 6)):
        if rng.random() < 0.4:  # near an image edge or a chunk boundary
            base = rng.choice([*edges, SCAN_CHUNK * rng.randint(1, 60)])
            paddr = base + rng.randrange(-BOOT_PARAMS_SIZE, BOOT_PARAMS_SIZE, 8)
        else:
            paddr = rng.randrange(0x100000, (64 << 20) - BOOT_PARAMS_SIZE, 8)
        paddr = min(max(paddr, 0x100000), (64 << 20) - BOOT_PARAMS_SIZE)
        count = rng.choice([None, None, None, 0])  # 0: the magic, but no e820 map
        memory.write(paddr, boot_params(QEMU_E820[: rng.randint(1, 6)], count=count))
    return memory, image


def test_the_kernel_image_first_picks_what_the_full_scan_picks() -> None:
    seen = {"image": 0, "fallback": 0}
    for seed in range(120):
        rng = random.Random(seed)
        memory, image = _layout(rng)
        quick = kernel_boot_params(memory, image, memory.ram_ranges)
        found, scanned = scan_boot_params(memory, memory.ram_ranges)
        inside = [
            bp for bp in found
            if any(r.start <= bp.paddr and bp.paddr + BOOT_PARAMS_SIZE <= r.end for r in image)
        ]  # fmt: skip
        if quick is None:
            assert not inside, seed
            seen["fallback"] += 1
        else:
            assert quick == choose_boot_params(found, image, scanned), seed
            seen["image"] += 1
    assert min(seen.values()) > 15, seen
