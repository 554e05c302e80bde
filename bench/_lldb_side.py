"""The LLDB side of ``bench/bench_lldb.py``: runs inside the real ``lldb``.

``scripts/lldb --batch -o 'command script import bench/_lldb_side.py' -o 'pt-connect ...'
-o gdbext-bench-lldb`` (``scripts/lldb`` imports ``gdbext/lldbinit.py`` first). The command reads
its settings as JSON from the environment variable :data:`CONFIG_ENV` and takes the
measurements of :mod:`sidelib` (the ones ``bench/_gdb_side.py`` takes in GDB) through
:class:`LldbSide`: commands through ``HandleCommand`` with their output collected in their result,
as GDB's side collects it with ``to_string=True``. The floor reads with ``SBProcess.ReadMemory``,
LLDB's memory cache bypassed as the backend bypasses it. Cold: the backend's per-stop cache
dropped as a new stop drops it (``LiveState.invalidate``).

The results go as JSON to the file the settings name; an error becomes ``{"error": ...}``. At
the end the process is detached (which resumes the VM). ``gdbext-bench-relay`` (for
``bench/bench_relay.py``) connects itself, with or without the relay, and leaves without a
packet.

Debugger-side script: it imports ``lldb``; gdbext is importable once ``lldbinit.py`` ran.
"""

from __future__ import annotations

import gc
import json
import os
import re
import signal
import time
import traceback
from collections.abc import Callable
from typing import Any

import sidelib

CONFIG_ENV = "GDBEXT_BENCH_LLDB"
COMMAND = "gdbext-bench-lldb"
PAGE = 4096
_RESPONSE = re.compile(r"^response: (.*)$", re.M)


class LldbSide:
    """One LLDB process connected to the guest (:class:`sidelib.Side`), and the backend's
    state for it."""

    def __init__(self, debugger: Any) -> None:
        import lldb

        from gdbext_lldb.lldb_link import state_for

        self.lldb = lldb
        self.debugger = debugger
        self.interpreter = debugger.GetCommandInterpreter()
        self.process = debugger.GetSelectedTarget().GetProcess()
        self.context = lldb.SBExecutionContext(self.process)
        self.execute("pt-info")  # opens the backend: probes PhyMemMode and RAM once
        self.state, self.link = state_for(debugger, self.process)

    def execute(self, command: str) -> str:
        result = self.lldb.SBCommandReturnObject()
        self.interpreter.HandleCommand(command, self.context, result, False)
        if not result.Succeeded():
            raise RuntimeError(f"{command}: {str(result.GetError()).strip()}")
        return str(result.GetOutput() or "")

    def packet(self, text: str) -> str:
        m = _RESPONSE.search(self.execute(f"process plugin packet send {text}"))
        if m is None:
            raise RuntimeError(f"no reply to {text}")
        return m.group(1)

    def monitor(self, command: str) -> str:
        return self.link.monitor(command)

    def target(self) -> Any:
        from gdbext.plugin.target import OpenRequest
        from gdbext_lldb.lldb_link import open_target

        return open_target(OpenRequest(None, {"debugger": str(self.debugger.GetID())}))

    def session(self) -> Any:
        from gdbext_lldb.lldb_commands import installed

        front = installed(self.debugger)
        assert front is not None
        return front.session

    def floor(self, pages: list[int]) -> float:
        """LLDB's memory cache bypassed, the mode queried, switched, restored."""
        error = self.lldb.SBError()
        gc.collect()
        start = time.perf_counter()
        self.link.flush_cache()  # bypass LLDB's memory cache, as after the backend's switch
        previous = self.packet(sidelib.QUERY)
        switched = previous != "1"
        try:
            if switched and self.packet("Qqemu.PhyMemMode:1") != "OK":
                raise RuntimeError("the gdbstub refused Qqemu.PhyMemMode:1")
            for page in pages:
                data = self.process.ReadMemory(page, PAGE, error)
                if error.Fail() or data is None or len(data) != PAGE:
                    raise RuntimeError(f"read 0x{page:x}: {error.GetCString()}")
        finally:
            if switched:
                self.packet(f"Qqemu.PhyMemMode:{previous}")
            self.link.end_bypass()
        return time.perf_counter() - start


def run(debugger: Any, command: str, exe_ctx: Any, result: Any, internal_dict: Any) -> None:
    """``gdbext-bench-lldb``: measure, write the JSON results, detach."""
    config = json.loads(os.environ[CONFIG_ENV])
    try:
        side = LldbSide(debugger)
        results = sidelib.measure(side, int(config["repeat"]))
        results["memory_cache_after"] = side.execute(
            "settings show target.process.disable-memory-cache"
        ).strip()
    except Exception as exc:
        results = {
            "error": f"{type(exc).__name__}: {' '.join(str(exc).split())}",
            "traceback": traceback.format_exc(),
        }
    finally:
        process = debugger.GetSelectedTarget().GetProcess()
        if process.IsValid():
            process.Detach()
    with open(config["out"], "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)


# --- the relay's cost (bench/bench_relay.py) --------------------------------------------------

RELAY_COMMAND = "gdbext-bench-relay"
RELAY_CONFIG_ENV = "GDBEXT_BENCH_RELAY"
#: ``bench/bench_relay.py``'s measurements, each a command timed inside LLDB.
RELAY_MEASURES = ("packet", "walk_cold", "walk_warm", "translate_cold", "translate_warm")


def relay_measure(side: LldbSide, repeat: int) -> dict[str, Any]:
    """``repeat`` rounds of :data:`RELAY_MEASURES`: one packet's round trip (``qC``, through
    ``process plugin packet send``), ``pt-walk`` and ``pt-translate`` of one kernel-image
    address, cold (the per-stop cache dropped) and warm; the outputs' lengths and hashes (the
    same frozen guest gives the same bytes) and the reads of each cold command."""
    import hashlib

    tlb = sidelib.tlb_lines(side.execute("pt-walk --format qemu-tlb"))
    translate = f"pt-translate 0x{sidelib.probe_address(tlb):x}"
    measures: dict[str, Callable[[], tuple[float, str]]] = {
        "packet": lambda: sidelib.timed(side, "process plugin packet send qC"),
        "walk_cold": lambda: sidelib.cold(side, "pt-walk"),
        "walk_warm": lambda: sidelib.timed(side, "pt-walk"),
        "translate_cold": lambda: sidelib.cold(side, translate),
        "translate_warm": lambda: sidelib.timed(side, translate),
    }
    rounds: dict[str, list[float]] = {name: [] for name in RELAY_MEASURES}
    outputs: dict[str, str] = {}
    for _ in range(repeat):
        for name, run in measures.items():
            seconds, text = run()
            rounds[name].append(seconds)
            if name != "packet":
                digest = hashlib.sha256(text.encode()).hexdigest()[:16]
                outputs[name] = f"{len(text)} bytes, sha256 {digest}"
    return {
        "repeat": repeat,
        "seconds": rounds,
        "outputs": outputs,
        "translate": translate,
        "reads": {
            "walk_cold": sidelib.fetched(side, "pt-walk"),
            "translate_cold": sidelib.fetched(side, translate),
        },
    }


def _relay_children() -> list[int]:
    """This process's children that run ``gdbext_lldb/relay.py``."""
    me = str(os.getpid())
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                ppid = f.read().rsplit(")", 1)[1].split()[1]
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except (OSError, IndexError):
            continue
        if ppid == me and b"relay.py" in cmdline:
            found.append(int(entry))
    return found


def run_relay(debugger: Any, command: str, exe_ctx: Any, result: Any, internal_dict: Any) -> None:
    """``gdbext-bench-relay``: connect (``pt-connect``, or ``gdb-remote`` without the relay),
    measure, write the JSON results, and leave without a packet: the relay and LLDB are killed
    (SIGKILL), so that the VM stays stopped for the next LLDB (a detach would resume it, LLDB's
    kill would end QEMU)."""
    import lldb

    config = json.loads(os.environ[RELAY_CONFIG_ENV])
    try:
        verb = "pt-connect" if config["relay"] else "gdb-remote"
        res = lldb.SBCommandReturnObject()
        debugger.GetCommandInterpreter().HandleCommand(f"{verb} {config['address']}", res)
        if not res.Succeeded():
            raise RuntimeError(f"{verb}: {str(res.GetError()).strip()}")
        results = relay_measure(LldbSide(debugger), int(config["repeat"]))
        results["relays"] = len(_relay_children())
    except Exception as exc:
        results = {
            "error": f"{type(exc).__name__}: {' '.join(str(exc).split())}",
            "traceback": traceback.format_exc(),
        }
    with open(config["out"], "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    for pid in _relay_children():
        os.kill(pid, signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def __lldb_init_module(debugger: Any, internal_dict: Any) -> None:
    debugger.HandleCommand(f"command script add -o -f {__name__}.run {COMMAND}")
    debugger.HandleCommand(f"command script add -o -f {__name__}.run_relay {RELAY_COMMAND}")
