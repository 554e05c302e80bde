"""Benchmark of ``audit`` against a full ``walk`` of a real 512 MiB Debian guest dump.

The dumps are ``bench/bench_dump.py``'s (made under QEMU on first use, cached in ``--workdir``,
not committed). Measures, in one run (medians of ``--repeat`` runs, the contenders taking turns
in each round so that the machine's noise falls on all alike):

- in-process, on the ELF dump (``--format kdump`` for the kdump-zlib one): open + walk + render
  (the ``walk`` command's default text output, as ``bench_dump.py`` measures it) against open +
  audit (every rule, default options) + render (text), and their ratio;
- where the audit's time goes: the shared context (the one collapsed walk, spans, PTI
  detection...) and each rule in turn on one context, so that a lazy cache a rule builds first
  (the frame index, the table list) is charged to that rule;
- one process each: ``gdbext walk DUMP`` against ``gdbext audit DUMP``, output to /dev/null;
- for information, the audit with ``--memmap e820`` as well (``heap-contract`` runs only with
  the heap command's options; finding boot_params scans the dump).

Target: auditing adds at most 50 % to a full walk (ratio <= 1.5).

Run: ``.venv/bin/python bench/bench_audit.py`` (``--mem 512M --repeat 5``; ``--json``;
``--profile N`` for cProfile's top N functions of one in-process audit).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench_dump import (
    FILE_NAMES,
    FORMAT_LABELS,
    VENV_BIN,
    BenchError,
    add_dump_bench_arguments,
    clock,
    close_target,
    ensure_dumps,
    gdbext_walk_argv,
    log,
    ms,
    open_target,
    open_walk,
    parse_dump_bench_arguments,
    print_report,
    process_figures,
    report_dumps,
    sink,
)
from benchlib import profiled

#: The target: audit time / walk time.
TARGET_RATIO = 1.5


def _rules() -> dict[str, Any]:
    from gdbext.audit.registry import audit_rules
    from gdbext.plugin.host import Host

    return audit_rules(Host.create())


def audit_options(heap: bool = False) -> Any:
    """The default audit, or with ``--memmap e820`` (the heap command's options), which
    ``heap-contract`` needs to run."""
    from gdbext.audit.engine import AuditOptions
    from gdbext.frontend.commands import HeapOptions

    return AuditOptions(heap=HeapOptions(memmap="e820") if heap else None)


def audit_text(target: Any, rules: dict[str, Any], heap: bool = False) -> tuple[int, int]:
    """Every rule on an opened target, rendered as text: (lines, findings)."""
    from gdbext.audit.engine import run_audit
    from gdbext.render.audit import render_audit_text

    result = run_audit(target, audit_options(heap), rules)
    return sink(render_audit_text(result)), len(result.findings)


def open_audit(path: Path, rules: dict[str, Any], heap: bool = False) -> tuple[int, int]:
    target = open_target(path)
    try:
        return audit_text(target, rules, heap)
    finally:
        close_target(target)


def in_process(path: Path, repeat: int) -> dict[str, Any]:
    """Open + walk + render against open + audit + render, taking turns in each round."""
    rules = _rules()
    lines, leaves = open_walk(path)  # page cache warm; counts
    audit_lines, findings = open_audit(path, rules)
    _, heap_findings = open_audit(path, rules, heap=True)
    walk_s, audit_s, heap_s = [], [], []
    for _ in range(repeat):
        walk_s.append(clock(lambda: open_walk(path)))
        audit_s.append(clock(lambda: open_audit(path, rules)))
        heap_s.append(clock(lambda: open_audit(path, rules, heap=True)))
    walk, audit = statistics.median(walk_s), statistics.median(audit_s)
    return {
        "walk_lines": lines,
        "leaves": leaves,
        "audit_lines": audit_lines,
        "findings": findings,
        "rules": list(rules),
        "open_walk_s": walk,
        "open_audit_s": audit,
        "ratio": audit / walk,
        "heap_findings": heap_findings,
        "open_audit_heap_s": statistics.median(heap_s),
    }


def breakdown(path: Path, repeat: int) -> dict[str, float]:
    """Median seconds of: open, the shared context (main walk, spans, PTI pair), then each rule
    in the engine's order on that one context (what the engine's loop does, piece by piece)."""
    from gdbext.audit.context import AuditContext
    from gdbext.audit.engine import AuditOptions, select_rules
    from gdbext.audit.model import RuleSkipped

    rules = _rules()
    options = AuditOptions()
    selected = select_rules(rules, options.rules, options.skip)
    times: dict[str, list[float]] = {"open": [], "context": []}
    times |= {rule.id: [] for rule in selected}
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        target = open_target(path)
        times["open"].append(time.perf_counter() - start)
        try:
            ctx = AuditContext(target, options)

            def context(ctx: AuditContext = ctx) -> None:
                main = ctx.main
                _ = main.spans
                _ = ctx.pti

            times["context"].append(clock(context))
            for rule in selected:
                start = time.perf_counter()
                with contextlib.suppress(RuleSkipped):
                    sink(rule.check(ctx))
                times[rule.id].append(time.perf_counter() - start)
        finally:
            close_target(target)
    return {name: statistics.median(t) for name, t in times.items()}


def profile(path: Path, top: int) -> str:
    rules = _rules()
    return profiled(lambda: open_audit(path, rules), f"open + audit + render, {path}", top)


def render_markdown(report: dict[str, Any]) -> list[str]:
    lines = [
        f"Command: `{report['command']}`",
        "",
        f"Python {report['python']}, {report['qemu']}, kernel {report['kernel']}; "
        f"medians of {report['repeat']} runs, all figures from this one run.",
    ]
    for g in report["guests"]:
        ip, pr, bd = g["in_process"], g["process"], g["breakdown"]
        ratio_p = pr["audit"]["seconds"] / pr["walk"]["seconds"]
        met = "met" if ip["ratio"] <= TARGET_RATIO else "MISSED"
        lines += [
            "",
            f"#### {g['memory']} guest, {g['label']} dump: {ip['leaves']:,} leaves; "
            f"{len(ip['rules'])} rules, {ip['findings']} findings",
            "",
            "| measurement | walk | audit (all rules) | audit / walk |",
            "| --- | --- | --- | --- |",
            f"| in-process: open + walk/audit + render (text) | {ms(ip['open_walk_s'])} "
            f"| {ms(ip['open_audit_s'])} | {ip['ratio']:.2f} (target <= {TARGET_RATIO:g}: "
            f"{met}) |",
            f"| one process: `gdbext walk DUMP` / `gdbext audit DUMP` "
            f"| {ms(pr['walk']['seconds'])} | {ms(pr['audit']['seconds'])} | {ratio_p:.2f} |",
            f"| in-process, `--memmap e820` too (heap-contract runs: the heap command's "
            f"e820 scan; {ip['heap_findings']} findings) | | {ms(ip['open_audit_heap_s'])} "
            f"| {ip['open_audit_heap_s'] / ip['open_walk_s']:.2f} |",
            "",
            "Where the audit's time goes (in-process, one context, rules in the engine's order):",
            "",
            "| part | median |",
            "| --- | --- |",
        ]
        lines += [f"| {name} | {ms(seconds)} |" for name, seconds in bd.items()]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_dump_bench_arguments(parser, "512M")
    parser.add_argument(
        "--format", default="elf", help="dump formats, comma-separated: elf, kdump (elf)"
    )
    args, memories, report = parse_dump_bench_arguments(parser, argv, __file__)
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    for fmt in formats:
        if fmt not in FILE_NAMES:
            parser.error(f"--format {fmt!r}: one of {', '.join(FILE_NAMES)}")
    report["guests"] = []
    profiles = []
    try:
        for memory in memories:
            dumps = ensure_dumps(args.workdir, memory, args.fresh, log)
            report_dumps(report, dumps)
            for fmt in formats:
                path = dumps.path(fmt)
                log(f"measuring {memory} {FORMAT_LABELS[fmt]}...")
                guest: dict[str, Any] = {"memory": memory, "format": fmt}
                guest["label"] = FORMAT_LABELS[fmt]
                guest["in_process"] = in_process(path, args.repeat)
                guest["breakdown"] = breakdown(path, args.repeat)
                guest["process"] = process_figures(
                    {
                        "walk": gdbext_walk_argv(path),
                        "audit": [str(VENV_BIN / "gdbext"), "audit", str(path)],
                    },
                    args.repeat,
                )
                report["guests"].append(guest)
                if args.profile:
                    profiles.append(profile(path, args.profile))
    except BenchError as exc:
        print(f"bench_audit: {exc}", file=sys.stderr)
        return 2
    print_report(report, args.json, render_markdown, profiles)
    return 0


if __name__ == "__main__":
    sys.exit(main())
