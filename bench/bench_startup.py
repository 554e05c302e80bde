"""Benchmark of the command line's start-up: whole ``gdbext`` processes, beside bare Python.

Each round runs, taking turns, ``python -c pass`` (the interpreter's own start-up, with the
virtual environment's ``site``), ``gdbext --version``, ``gdbext backends`` and ``gdbext walk``
of the demo dump (the README's first command: ``build/demo/kaslr-pti.elf``, unpacked by
``scripts/demo.sh``; a walk of the simulator's ``fixtures/scenarios/demo.json`` when it is not
there). The figures are medians of ``--repeat`` rounds of wall time, and of the processes' CPU
time (user + system, less disturbed by other processes on a shared machine). Targets: 100 ms for
``--version`` and ``backends``, 150 ms for the walk. One unmeasured round first writes Python's
bytecode caches where they are missing (the processes run without ``PYTHONDONTWRITEBYTECODE``,
as a user's shell does: without the caches every module is compiled at every start).

With ``--against DIR`` (another checkout of gdbext, e.g. the main branch's) each round also runs
the same commands with ``DIR`` first on the path, taking turns with this one, so that both are
measured side by side under the same load; its medians are printed beside.

What keeps start-up cheap is checked deterministically by ``tests/frontend/test_startup.py``
(what ``--version`` and ``backends`` import); the time is measured here, since a wall-clock bound
in a test fails at random on a loaded machine.

Run: ``.venv/bin/python bench/bench_startup.py`` (``--repeat 21`` by default; ``--json`` for
machine-readable output). Exit status 1 when a target is missed, 2 when the benchmark could not
run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import ROOT, BenchError

#: The demo dump ``scripts/demo.sh`` unpacks.
DEMO_DUMP = ROOT / "build" / "demo" / "kaslr-pti.elf"
#: Wall-time targets, seconds.
TARGETS = {"version": 0.100, "backends": 0.100, "walk": 0.150}


def commands(python: Path) -> dict[str, list[str]]:
    """The measured command lines, by name."""
    gdbext = [str(python), "-m", "gdbext.cli"]
    script = python.parent / "gdbext"
    if script.exists():
        gdbext = [str(script)]
    if DEMO_DUMP.exists():
        walk = [*gdbext, "walk", str(DEMO_DUMP)]
    else:
        scenario = ROOT / "fixtures" / "scenarios" / "demo.json"
        walk = [*gdbext, "walk", "--backend", "sim", "--scenario", str(scenario)]
    return {
        "python": [str(python), "-c", "pass"],
        "version": [*gdbext, "--version"],
        "backends": [*gdbext, "backends"],
        "walk": walk,
    }


#: The environment of the measured processes: this one, with bytecode caches written.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def checkout_env(directory: Path) -> dict[str, str]:
    """:data:`ENV` with the checkout ``directory`` (its packages and its backends) first on the
    path."""
    path = [str(directory), str(directory / "backends")]
    if ENV.get("PYTHONPATH"):
        path.append(ENV["PYTHONPATH"])
    return {**ENV, "PYTHONPATH": os.pathsep.join(path)}


def _run(argv: list[str], env: dict[str, str] = ENV) -> tuple[float, float]:
    """Wall and CPU seconds of one process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0 or proc.stderr.strip():
        raise BenchError(f"{shlex.join(argv)}: {proc.stderr.strip() or proc.returncode}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def measure(repeat: int, python: Path, against: Path | None = None) -> dict[str, Any]:
    """Medians of ``repeat`` rounds, after one warm-up round; with ``against``, that
    checkout's too, measured in the same rounds (under ``"against"``)."""
    argvs = commands(python)
    envs = {"this": ENV} if against is None else {"this": ENV, "against": checkout_env(against)}
    wall: dict[str, dict[str, list[float]]] = {side: {name: [] for name in argvs} for side in envs}
    cpu: dict[str, dict[str, list[float]]] = {side: {name: [] for name in argvs} for side in envs}
    for env in envs.values():
        for argv in argvs.values():
            _run(argv, env)
    for _ in range(repeat):
        for name, argv in argvs.items():
            for side, env in envs.items():
                w, c = _run(argv, env)
                wall[side][name].append(w)
                cpu[side][name].append(c)

    def medians(samples: dict[str, list[float]]) -> dict[str, float]:
        return {name: statistics.median(v) for name, v in samples.items()}

    report: dict[str, Any] = {
        "repeat": repeat,
        "commands": {name: shlex.join(argv) for name, argv in argvs.items()},
        "wall_s": medians(wall["this"]),
        "cpu_s": medians(cpu["this"]),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg()[0],
    }
    if against is not None:
        report["against"] = {
            "dir": str(against),
            "wall_s": medians(wall["against"]),
            "cpu_s": medians(cpu["against"]),
        }
    return report


def met(report: dict[str, Any]) -> bool:
    return all(report["wall_s"][name] <= target for name, target in TARGETS.items())


def lines(report: dict[str, Any]) -> list[str]:
    against = report.get("against")
    out = [
        f"medians of {report['repeat']} rounds, {report['cpus']} CPUs, "
        f"load average {report['loadavg']:.2f} at the end",
    ]
    if against is not None:
        out.append(f"beside (wall, cpu): the same commands with {against['dir']} first on the path")
    out.append(f"{'':<10} {'wall ms':>8} {'cpu ms':>8}  target")
    for name, argv in report["commands"].items():
        wall_ms = report["wall_s"][name] * 1000
        cpu_ms = report["cpu_s"][name] * 1000
        target = TARGETS.get(name)
        verdict = ""
        if target is not None:
            ok = report["wall_s"][name] <= target
            verdict = f"{target * 1000:.0f} ms: {'met' if ok else '**missed**'}"
        beside = ""
        if against is not None:
            ms = (against["wall_s"][name] * 1000, against["cpu_s"][name] * 1000)
            beside = f"  beside {ms[0]:.1f}, {ms[1]:.1f}"
        out.append(f"{name:<10} {wall_ms:8.1f} {cpu_ms:8.1f}  {verdict}{beside}  ({argv})")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=21, help="rounds (medians); default 21")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--python",
        type=Path,
        default=Path(sys.executable),
        help="the interpreter of the environment gdbext is installed in (default: this one)",
    )
    parser.add_argument(
        "--against",
        type=Path,
        metavar="DIR",
        help="another checkout of gdbext, measured in the same rounds, taking turns",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.against is not None and not (args.against / "gdbext" / "__init__.py").is_file():
        parser.error(f"--against {args.against}: not a checkout of gdbext")
    try:
        report = measure(args.repeat, args.python, args.against)
    except BenchError as exc:
        print(f"bench_startup: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else "\n".join(lines(report)))
    return 0 if met(report) else 1


if __name__ == "__main__":
    sys.exit(main())
