"""Running the real ``lldb`` for the LLDB tests and benchmark.

:func:`run` starts ``scripts/lldb --batch -Q`` (``docs/lldb.md``'s one-line start: LLDB with
``gdbext/lldbinit.py`` imported), optionally connects it to a gdbstub with ``pt-connect``, and
runs a list of commands through ``tests/support/lldb_side.py``, which records each command's
output and error separately. A live process is detached at the end, whatever happened
(detaching resumes the VM; quitting LLDB would too, through ``pt-connect``'s relay, but a plain
``gdb-remote`` would be killed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.paths import ROOT

WRAPPER = ROOT / "scripts" / "lldb"
SIDE = ROOT / "tests" / "support" / "lldb_side.py"
LLDBINIT = ROOT / "gdbext" / "lldbinit.py"


def available() -> bool:
    return shutil.which("lldb") is not None


def lldb_python_dir() -> str:
    """The directory holding LLDB's Python package, beside the lldb binary (what
    ``scripts/lldb`` puts on ``PYTHONPATH``)."""
    found = shutil.which("lldb")
    assert found is not None
    prefix = Path(os.path.realpath(found)).parent.parent
    for candidate in sorted(prefix.glob("lib/python3*/*-packages")):
        if (candidate / "lldb" / "embedded_interpreter.py").is_file():
            return str(candidate)
    raise AssertionError(f"no lldb Python package under {prefix}")


@dataclass(frozen=True)
class Result:
    """One command's outcome in LLDB."""

    command: str
    ok: bool
    out: str
    err: str
    seconds: float
    #: LLDB's ``target.process.disable-memory-cache`` after the command.
    memory_cache: str


@dataclass(frozen=True)
class Run:
    """One LLDB process: each command's :class:`Result`, and the process's own output."""

    results: list[Result]
    report: dict[str, Any]
    proc: subprocess.CompletedProcess[str]

    def outputs(self) -> list[str]:
        return [r.out for r in self.results]

    def errors(self) -> list[str]:
        return [r.err for r in self.results]


def argv(*commands: str, wrapper: bool = True, quiet: bool = True) -> list[str]:
    """``scripts/lldb --batch [-Q] -o COMMAND...`` (or plain ``lldb`` without the wrapper)."""
    out = [str(WRAPPER) if wrapper else "lldb", "--batch"]
    if quiet:
        out.append("-Q")
    for command in commands:
        out += ["-o", command]
    return out


def driver_argv(
    commands: Sequence[str],
    tmp: Path,
    *,
    port: int | None = None,
    wrapper: bool = True,
    before: Sequence[str] = (),
) -> tuple[list[str], Path]:
    """The LLDB command line that runs ``commands`` through the driver, and where the driver
    writes its report (see :func:`run`)."""
    config = tmp / "config.json"
    out = tmp / "out.json"
    config.write_text(json.dumps({"commands": list(commands), "out": str(out), "detach": True}))
    pre = [f"command script import {SIDE}", *before]
    if port is not None:
        pre.append(f"pt-connect 127.0.0.1:{port}")
    return argv(*pre, f"gdbext-test-run {config}", wrapper=wrapper), out


def collect(out: Path, proc: subprocess.CompletedProcess[str]) -> Run:
    """The driver's report at ``out`` as a :class:`Run`."""
    if not out.is_file():
        raise AssertionError(
            f"lldb exited {proc.returncode} without results:\n{proc.stdout[-2000:]}\n"
            f"{proc.stderr[-2000:]}"
        )
    report: dict[str, Any] = json.loads(out.read_text())
    assert "error" not in report, report.get("traceback")
    results = [
        Result(r["command"], r["ok"], r["out"], r["err"], r["seconds"], r["memory_cache"])
        for r in report["results"]
    ]
    return Run(results, report, proc)


def run(
    commands: Sequence[str],
    *,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    wrapper: bool = True,
    before: Sequence[str] = (),
    timeout: float = 300,
) -> Run:
    """Run ``commands`` in one LLDB (connected to ``127.0.0.1:port`` with ``pt-connect`` first,
    when given); ``before`` are LLDB commands run before the connection, outside the driver."""
    with tempfile.TemporaryDirectory(prefix="gdbext-lldb-") as tmp:
        command, out = driver_argv(commands, Path(tmp), port=port, wrapper=wrapper, before=before)
        proc = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=None if env is None else dict(env),
            cwd=ROOT,
            timeout=timeout,
            check=False,
        )
        return collect(out, proc)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without a PYTHONPATH (a fresh shell), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra)
    return env
