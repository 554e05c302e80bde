"""Benchmark of ``roots`` on the dump of a real guest: every page of RAM read once and its
address spaces found.

Boots Debian's kernel under QEMU (TCG, ``-cpu qemu64``, KASLR, ``pti=on``; ``--memory``,
default 1G) with an ``/init`` that starts a few processes and fills about ``--fill`` of the RAM
with random bytes (a tmpfs file from ``/dev/urandom``: RAM that is not zero, as a used
machine's is), stops it and writes an ELF dump (kept in ``--workdir`` for the next run); or
measures the dumps given with ``--dump``. Then, in-process on the open dump, ``roots`` (the
whole scan, the user walks and the identities) and, as a command, ``gdbext roots DUMP``.

With ``--live``: the guest is left stopped and ``gdbext roots --backend gdbstub HOST:PORT`` is
timed as a command (the host read path: QEMU's RAM from ``/proc/PID/mem``).

Run: ``.venv/bin/python bench/bench_roots.py`` (``--repeat 5``, ``--memory 1G``,
``--dump FILE`` (repeatable), ``--live``, ``--json``, ``--profile``). Targets: <= 2 s per GiB
of RAM on a dump, <= 3 s live.
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

INIT_BODY = r"""/bin/busybox mkdir -p /fill
/bin/busybox dd if=/dev/urandom of=/fill/bytes bs=1M count=FILL_MIB 2>/dev/null
for n in 1 2 3 4 5 6; do /bin/busybox sleep 10000$n & done
/bin/busybox sleep 1
echo "GDBEXT-READY"
while :; do wait; done
"""


def guest_config(memory: str, fill: float) -> Any:
    qg = guest_module()
    fill_mib = int(qg.GuestConfig(memory=memory).memory_bytes * fill) >> 20
    return qg.GuestConfig(
        cpu="qemu64",
        kaslr=True,
        pti=True,
        memory=memory,
        init=qg.INIT_PROLOGUE + INIT_BODY.replace("FILL_MIB", str(fill_mib)),
        boot_timeout=900.0,
    )


def make_dump(workdir: Path, memory: str, fill: float) -> Path:
    qg = guest_module()
    directory = workdir / f"mem-{memory}-fill-{fill:g}"
    dump = directory / "dump.elf"
    if dump.is_file():
        return dump
    directory.mkdir(parents=True, exist_ok=True)
    print(f"booting a {memory} guest, {fill:g} of it filled...", file=sys.stderr)
    with qg.QemuGuest(guest_config(memory, fill)) as guest:
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


def measure_live(memory: str, fill: float, repeat: int) -> dict[str, Any]:
    qg = guest_module()
    gdbext = ROOT / ".venv" / "bin" / "gdbext"
    print(f"booting a {memory} guest, {fill:g} of it filled...", file=sys.stderr)
    with qg.QemuGuest(guest_config(memory, fill)) as guest:
        guest.stop()
        argv = [str(gdbext), "roots", "--backend", "gdbstub", f"127.0.0.1:{guest.gdb_port}"]
        first = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        seconds = timed(lambda: subprocess.run(argv, capture_output=True, check=True), repeat)
    return {"memory": memory, "live_ms": seconds * 1e3, "header": first.splitlines()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--memory", default="1G")
    parser.add_argument("--fill", type=float, default=0.5)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/gdbext-bench-roots"))
    parser.add_argument("--dump", action="append", type=Path, default=[])
    parser.add_argument("--live", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    if args.live:
        live = measure_live(args.memory, args.fill, args.repeat)
        if args.json:
            json.dump(live, sys.stdout, indent=1)
            print()
        else:
            print(f"live {live['memory']}: **{live['live_ms']:.0f} ms** ({live['header']})")
        return
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
