"""The GDB side of ``bench/bench_hostread.py``: runs inside ``gdb -nx -batch -x
bench/_hostread_side.py``, connected to the stopped guest, settings as JSON in
:data:`CONFIG_ENV`.

Each round times, in turn: the stub's read floor (the pages a default ``pt-walk`` reads, one
4 KiB PhyMemMode read each, bracketed: :meth:`_gdb_side.GdbSide.floor`); ``pt-walk`` cold
through the host path (``pt-backend gdb --read-via host``) and through the stub
(``--read-via stub``); a bulk read of ``bulk`` bytes of RAM through the host path, and of
``stub_bulk`` bytes through the stub; a copy of ``bulk`` bytes in this process into new
memory (the machine's memory bandwidth, for reference); ``pt-heap --memmap e820`` cold both
ways. Correctness once: the host walk's ``qemu-tlb`` lines against ``monitor info tlb``, and
the bulk bytes against the stub's in 64 KiB samples.

Debugger-side script: it imports ``gdb``, and gdbext only after ``gdbinit.py`` has set the path.
"""

from __future__ import annotations

import gc
import mmap
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import gdb

sys.path.insert(0, os.path.dirname(os.path.abspath(sys._getframe().f_code.co_filename)))

import sidelib

CONFIG_ENV = "GDBEXT_BENCH_HOSTREAD"
#: Where the bulk reads start (above the kernel's first MiBs, inside any guest's RAM).
BULK_AT = 0x1000000
SAMPLE = 0x10000


def execute(command: str) -> str:
    return gdb.execute(command, to_string=True) or ""


def seconds(fn: Any) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(config: dict[str, Any]) -> dict[str, Any]:
    execute(f"source {config['gdbinit']}")
    from _gdb_side import GdbSide

    from gdbext_gdbstub.options import LiveOptions

    side = GdbSide()
    state = side.state
    host = state.open(LiveOptions(read_via="host"))
    stub = state.open(LiveOptions(read_via="stub"))
    results: dict[str, Any] = {
        "repeat": config["repeat"],
        "host_path": host.read_path,
        "stub_path": stub.read_path,
        "host_detail": str(host.details["host memory"]),
    }
    execute("pt-backend gdb --read-via stub")
    pages = sidelib.engine_pages(side)
    results["pages"] = len(pages)
    bulk, stub_bulk = int(config["bulk"]), int(config["stub_bulk"])

    def read_via(via: str, size: int) -> None:
        target = state.open(LiveOptions(read_via=via))
        assert target.command_scope is not None
        with target.command_scope():
            target.mapper.read(BULK_AT, size)

    # Correctness, once.
    execute("pt-backend gdb --read-via host")
    state.invalidate()
    tlb = sidelib.tlb_lines(execute("pt-walk --format qemu-tlb"))
    results["tlb_equal"] = tlb == sidelib.tlb_lines(side.monitor("info tlb"))
    results["tlb_lines"] = len(tlb)
    data = host.mapper.read(BULK_AT, bulk)
    offsets = range(0, bulk, max(SAMPLE, bulk // 16))
    with stub.command_scope():  # type: ignore[misc]
        results["bulk_equal"] = all(
            stub.mapper.read(BULK_AT + o, SAMPLE) == data[o : o + SAMPLE] for o in offsets
        )
    del data

    def cold(via: str, command: str) -> float:
        execute(f"pt-backend gdb --read-via {via}")
        state.invalidate()
        return seconds(lambda: execute(command))

    reference = mmap.mmap(-1, bulk)
    reference.write(b"\x5a" * bulk)

    def copy() -> None:
        reference[:]  # a copy of the same size into new memory: the machine's bandwidth

    measures: dict[str, Callable[[], float]] = {
        "copy": lambda: seconds(copy),
        "floor": lambda: side.floor(pages),
        "walk_host": lambda: cold("host", "pt-walk"),
        "walk_stub": lambda: cold("stub", "pt-walk"),
        "bulk_host": lambda: seconds(lambda: read_via("host", bulk)),
        "bulk_stub": lambda: seconds(lambda: read_via("stub", stub_bulk)),
        "heap_host": lambda: cold("host", "pt-heap --memmap e820"),
        "heap_stub": lambda: cold("stub", "pt-heap --memmap e820"),
    }
    rounds: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(int(config["repeat"])):
        for name, fn in measures.items():
            rounds[name].append(fn())
    execute("pt-backend gdb")
    results["seconds"] = rounds
    results["mode_after"] = side.packet(sidelib.QUERY)
    return results


def main() -> None:
    sidelib.run_and_write(CONFIG_ENV, run)


if __name__ == "__main__":
    main()
