"""What the benchmark scripts share: timing, the QEMU guest library of ``fixtures/``, and the
live benchmarks' runs of a debugger (its side script's JSON results, load times)."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class BenchError(RuntimeError):
    """A prerequisite is missing or a measured command failed: one line for the user."""


def timed(
    fn: Callable[[], object], repeat: int, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Median time of ``fn`` over ``repeat`` runs: wall time, or what ``clock`` counts (say
    ``time.process_time``, the CPU time of this process, less swayed by a busy machine)."""
    times = []
    for _ in range(repeat):
        gc.collect()
        start = clock()
        fn()
        times.append(clock() - start)
    return statistics.median(times)


def profiled(fn: Callable[[], object], title: str, top: int) -> str:
    """cProfile's ``tottime`` table (``top`` rows) of one call of ``fn``, under a heading.

    Python 3.11.2 (Debian 12's, the one GDB embeds) can crash in a garbage collection that runs
    while a profiler hook is set (CPython gh-101975, fixed in 3.11.3): no collection meanwhile.
    """
    import cProfile
    import io
    import pstats

    out = io.StringIO()
    prof = cProfile.Profile()
    gc.collect()
    gc.disable()
    try:
        prof.enable()
        fn()
        prof.disable()
    finally:
        gc.enable()
    out.write(f"\n### cProfile: {title}\n")
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


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


# --- the live benchmarks: a debugger and its side script -----------------------------------


def run_side(
    argv: Sequence[str], config_env: str, config: Mapping[str, Any], debugger: str
) -> dict[str, Any]:
    """Run a debugger (``argv``) whose side script reads ``config`` as JSON from the environment
    variable ``config_env`` (with ``out`` added: where it writes its JSON results); the results.

    :raises BenchError: no results, or the side's ``error``.
    """
    with tempfile.TemporaryDirectory(prefix="gdbext-bench-") as tmp:
        out = Path(tmp) / "results.json"
        env = {**os.environ, config_env: json.dumps({**config, "out": str(out)})}
        proc = subprocess.run(
            argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800, check=False
        )
        if not out.is_file():
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise BenchError(f"{shlex.join(argv)} exited {proc.returncode}: {tail}")
        results: dict[str, Any] = json.loads(out.read_text())
    if "error" in results:
        raise BenchError(f"inside {debugger}: {results['error']}\n{results.get('traceback', '')}")
    return results


def load_figures(
    empty: Sequence[str],
    loaded: Sequence[str],
    repeat: int,
    env: Mapping[str, str] | None = None,
    quiet_empty: bool = True,
) -> dict[str, float]:
    """Median wall time of a debugger without gdbext (``empty``) and with it (``loaded``), the
    two taking turns in each round; ``load_s`` is the difference. The loading run must print
    nothing on stderr (a load error is one line there); so must the empty one with
    ``quiet_empty``."""
    times: dict[str, list[float]] = {"empty": [], "loaded": []}
    for _ in range(repeat):
        for name, argv in (("empty", empty), ("loaded", loaded)):
            start = time.perf_counter()
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                env=None if env is None else dict(env),
                timeout=120,
                check=False,
            )
            times[name].append(time.perf_counter() - start)
            noisy = proc.stderr.strip() and (name == "loaded" or quiet_empty)
            if proc.returncode != 0 or noisy:
                raise BenchError(f"{shlex.join(argv)}: {proc.stderr.strip() or proc.returncode}")
    empty_s = statistics.median(times["empty"])
    loaded_s = statistics.median(times["loaded"])
    return {"empty_s": empty_s, "loaded_s": loaded_s, "load_s": loaded_s - empty_s}


def live_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the live benchmarks: ``--mem``, ``--config``, ``--smp``, ``--pti``,
    ``--repeat``, ``--json``."""
    parser.add_argument("--mem", default="128M", help="guest RAM (QEMU -m); default 128M")
    parser.add_argument(
        "--config",
        default="default",
        help="a configuration of fixtures/qemu_guest.py CONFIGS (4level, kaslr-pti, la57); "
        "default: GuestConfig() (qemu64, nokaslr, quiet)",
    )
    parser.add_argument("--smp", type=int, help="vCPUs (QEMU -smp); default: the configuration's")
    parser.add_argument(
        "--pti",
        choices=("on", "off"),
        help="the kernel's page-table isolation (pti=on|off); default: the configuration's",
    )
    parser.add_argument("--repeat", type=int, default=11, help="rounds (medians); default 11")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def check_live_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit through ``parser.error`` for a bad ``--repeat``, ``--smp`` or ``--config``."""
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.smp is not None and args.smp < 1:
        parser.error("--smp must be at least 1")
    if args.config != "default" and args.config not in guest_module().CONFIGS:
        parser.error(f"--config: no configuration {args.config!r}")


def live_guest(args: argparse.Namespace) -> tuple[Any, Any, dict[str, Any]]:
    """The guest library, the configuration ``--config``/``--mem`` name, and the report's
    first entries (``guest``, ``qemu``). :raises BenchError: QEMU or the kernel is missing."""
    qg = guest_module()
    try:
        qg.check_prerequisites()
    except qg.GuestError as exc:  # MissingPrerequisite, or GDBEXT_TEST_KERNEL not a file
        raise BenchError(str(exc)) from None
    config = dataclasses.replace(qg.CONFIGS.get(args.config, qg.GuestConfig()), memory=args.mem)
    if args.smp is not None:
        config = dataclasses.replace(config, smp=args.smp)
    if args.pti is not None:
        config = dataclasses.replace(config, pti=args.pti == "on")
    name = f"{args.config} guest" if args.config in qg.CONFIGS else "guest"
    report = {
        "guest": f"Debian's kernel, {name}, {args.mem}, -cpu {config.cpu}, -smp {config.smp}, "
        f"{config.cmdline()!r}",
        "qemu": qg.qemu_version(),
    }
    return qg, config, report
