"""The LLDB side of the LLDB tests: ``command script import tests/support/lldb_side.py`` in the real
``lldb``, then ``gdbext-test-run FILE.json``.

``FILE.json`` is ``{"commands": [...], "out": PATH, "detach": BOOL}``. Each command is run
through LLDB's command interpreter (``HandleCommand``, as if typed: the ``pt-*`` commands see the
same execution context), and its success, output and error text are recorded separately, so that
a test compares each command's bytes without parsing LLDB's console. The results go as JSON to
``PATH`` (``{"results": [{"ok", "out", "err", "seconds", "memory_cache"}...], "error": ...}``;
``memory_cache``: LLDB's ``target.process.disable-memory-cache`` after the command). With
``detach``, a live process is detached at the end whatever happened (detaching resumes QEMU;
quitting LLDB would kill a plain ``gdb-remote`` connection), and ``"detached"`` says so.

``lldb`` is imported inside the functions: pytest imports this module for its doctests too.
"""

from __future__ import annotations

import json
import time
import traceback
from typing import Any

COMMAND = "gdbext-test-run"
MEMORY_CACHE = "target.process.disable-memory-cache"


def run(debugger: Any, command: str, exe_ctx: Any, result: Any, internal_dict: Any) -> None:
    """``gdbext-test-run FILE.json``."""
    import lldb

    with open(command.strip(), encoding="utf-8") as f:
        config = json.load(f)
    report: dict[str, Any] = {"results": []}
    interpreter = debugger.GetCommandInterpreter()
    try:
        for line in config["commands"]:
            res = lldb.SBCommandReturnObject()
            start = time.perf_counter()
            interpreter.HandleCommand(line, res, False)
            report["results"].append(
                {
                    "command": line,
                    "ok": bool(res.Succeeded()),
                    "out": str(res.GetOutput() or ""),
                    "err": str(res.GetError() or ""),
                    "seconds": time.perf_counter() - start,
                    # LLDB's memory-cache setting afterwards (read without a command, which an
                    # interrupted run would refuse).
                    "memory_cache": str(
                        debugger.GetInternalVariableValue(
                            MEMORY_CACHE, debugger.GetInstanceName()
                        ).GetStringAtIndex(0)
                    ),
                }
            )
    except BaseException as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
        report["traceback"] = traceback.format_exc()
    finally:
        if config.get("detach"):
            process = debugger.GetSelectedTarget().GetProcess()
            report["detached"] = False
            if process.IsValid() and process.GetState() == lldb.eStateStopped:
                report["detached"] = bool(process.Detach().Success())
        with open(config["out"], "w", encoding="utf-8") as f:
            json.dump(report, f)


def __lldb_init_module(debugger: Any, internal_dict: Any) -> None:
    debugger.HandleCommand(f"command script add -o -f {__name__}.run {COMMAND}")
