"""Benchmark of ``roots`` on the dump of a real guest: every page of RAM read once and its
address spaces found.

Boots Debian's kernel under QEMU (TCG, ``-cpu qemu64``, KASLR, ``pti=on``; ``--memory``,
default 1G) with an ``/init`` that starts a few processes and fills about ``--fill`` of the RAM
with random bytes (a tmpfs file from ``/dev/urandom``: RAM that is not zero, as a used
machine's is), stops it and writes an ELF dump (kept in ``--workdir`` for the next run); or
measures the dumps given with ``--dump``. Then, in-process on the open dump, ``roots`` (the
whole scan, the user walks and the identities) and, as a command, ``gdbext roots DUMP``.

Run: ``.venv/bin/python bench/bench_roots.py`` (``--repeat 5``, ``--memory 1G``,
``--dump FILE`` (repeatable), ``--json``, ``--profile``). Target: <= 2 s per GiB of RAM.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import ROOT, guest_module, profiled, timed

from gdbext.frontend.roots import roots

TARGET_S_PER_GIB = 2.0

INIT = r"""#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in /lib/modules/*.ko; do insmod "$m" || echo "GDBEXT-INSMOD-FAILED $m"; done
/bin/busybox mkdir -p /fill
/bin/busybox dd if=/dev/urandom of=/fill/bytes bs=1M count=FILL_MIB 2>/dev/null
for n in 1 2 3 4 5 6; do /bin/busybox sleep 10000$n & done
/bin/busybox sleep 1
echo "GDBEXT-READY"
while :; do wait; done
"""


def make_dump(workdir: Path, memory: str, fill: float) -> Path:
    qg = guest_module()
    directory = workdir / f"mem-{memory}-fill-{fill:g}"
    dump = directory / "dump.elf"
    if dump.is_file():
        return dump
    directory.mkdir(parents=True, exist_ok=True)
    config = qg.GuestConfig(cpu="qemu64", kaslr=True, pti=True, memory=memory, init="")
    fill_mib = int(config.memory_bytes * fill) >> 20
    config = qg.GuestConfig(
        cpu="qemu64",
        kaslr=True,
        pti=True,
        memory=memory,
        init=INIT.replace("FILL_MIB", str(fill_mib)),
        boot_timeout=900.0,
    )
    print(f"booting a {memory} guest, {fill_mib} MiB of it filled...", file=sys.stderr)
    with qg.QemuGuest(config) as guest:
        guest.stop()
        part = directory / "dump.elf.part"
        guest.dump_elf(part)
        part.rename(dump)
    return dump


def measure(path: Path, repeat: int, profile: bool) -> dict[str, Any]:
    from gdbext_dump.dump import open_dump

    target = open_dump(str(path))
    result = roots(target)
    row: dict[str, Any] = {
        "dump": str(path),
        "ram_bytes": result.bytes_scanned,
        "spaces": len(result.spaces),
        "named": sum(1 for s in result.spaces if s.identity and s.identity.argv),
        "rejected": result.rejected_count,
    }
    row["roots_ms"] = timed(lambda: roots(target), repeat) * 1e3
    row["ms_per_gib"] = row["roots_ms"] / (result.bytes_scanned / (1 << 30))
    gdbext = ROOT / ".venv" / "bin" / "gdbext"

    def process() -> None:
        subprocess.run([str(gdbext), "roots", str(path)], capture_output=True, check=True)

    row["process_ms"] = timed(process, repeat) * 1e3
    if profile:
        print(profiled(lambda: roots(target), f"roots {path.name}", 15))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--memory", default="1G")
    parser.add_argument("--fill", type=float, default=0.5)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/gdbext-bench-roots"))
    parser.add_argument("--dump", action="append", type=Path, default=[])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    dumps = args.dump or [make_dump(args.workdir, args.memory, args.fill)]
    rows = [measure(p, args.repeat, args.profile) for p in dumps]
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
        return
    print("| dump | RAM scanned | address spaces (named) | roots | per GiB | one process |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| `{Path(r['dump']).name}` | {r['ram_bytes'] >> 20} MiB | {r['spaces']} "
            f"({r['named']}) | **{r['roots_ms']:.0f} ms** | {r['ms_per_gib']:.0f} ms "
            f"| {r['process_ms']:.0f} ms |"
        )
    print(
        f"\n(target: <= {TARGET_S_PER_GIB * 1e3:.0f} ms per GiB; "
        f"{time.perf_counter() - start:.0f} s in all)"
    )


if __name__ == "__main__":
    main()
