"""Running the real ``gdb`` for the GDB and LLDB front-end tests, and what both compare: the
command line's output, QEMU's ``info tlb`` lines and ``gva2gpa`` translations, the
checks of a missing environment or dependency, a slow backend plugin for progress and
Ctrl-C.
"""

from __future__ import annotations

import functools
import io
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gdbext import cli
from gdbext.frontend.progress import PROGRESS_LINE
from gdbext.plugin.host import Host
from support.paths import ROOT

if TYPE_CHECKING:
    pass

GDBINIT = ROOT / "gdbext" / "gdbinit.py"
SETUP = ROOT / "scripts" / "setup.sh"
MARK = "@@gdbext-test@@"
PY = f"python{sys.version_info[0]}.{sys.version_info[1]}"


def gdb_argv(*commands: str, source: bool = True) -> list[str]:
    argv = ["gdb", "-nx", "-batch"]
    for command in ([f"source {GDBINIT}"] if source else []) + list(commands):
        argv += ["-ex", command]
    return argv


def gdb(
    *commands: str, env: dict[str, str] | None = None, source: bool = True, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """``gdb -nx -batch -ex 'source gdbext/gdbinit.py' -ex COMMAND...``."""
    return subprocess.run(
        gdb_argv(*commands, source=source),
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


def marked(*commands: str) -> list[str]:
    """The commands, each preceded by a marker line (see :func:`sections`)."""
    out: list[str] = []
    for command in commands:
        out += [f"echo {MARK}\\n", command]
    return out


def sections(stdout: str) -> list[str]:
    """The output of each command given through :func:`marked`."""
    return stdout.split(MARK + "\n")[1:]


def run_pty(argv: Sequence[str], env: dict[str, str] | None = None, timeout: float = 120) -> str:
    """Run ``argv`` on a pseudo-terminal (stdin, stdout, stderr); what it wrote, CRs dropped."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 1 << 16)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")


def without_progress(stderr: str) -> str:
    """``stderr`` without its progress reports (lines :data:`gdbext.frontend.progress.PROGRESS_LINE`
    matches whole). A command that runs past 5 s (a loaded machine) reports progress; a report
    is not part of its result, and every other line (an error, a warning) is kept."""
    lines = stderr.splitlines(keepends=True)
    return "".join(line for line in lines if not PROGRESS_LINE.fullmatch(line.rstrip("\n")))


def cli_output(*argv: str) -> str:
    out = io.StringIO()
    cli.run(list(argv), Host.create(), out)
    return out.getvalue()


#: :func:`cli_output` on a committed kernel dump (``kernel_dump``), computed once a session: the
#: GDB and the LLDB test of every command on a dump compare with the same outputs.
committed_dump_output = functools.cache(cli_output)


#: Runs one command in a debugger with gdbext loaded and extra environment variables.
RunOne = Callable[[str, dict[str, str]], "subprocess.CompletedProcess[str]"]


def check_missing_environment(run: RunOne, debugger: str, undefined: str, tmp: Path) -> None:
    """No environment, or one made from another Python: one line naming the fix, then the
    debugger's own ``undefined`` message for the command (``{}``: its name)."""
    proc = run("pt-walk", {"GDBEXT_VENV": "/nonexistent"})
    first, second = proc.stderr.splitlines()
    assert first.startswith("gdbext: GDBEXT_VENV=/nonexistent is not a directory")
    assert f"bash {SETUP}" in first
    assert second == undefined.format("pt-walk")
    assert proc.stdout == ""

    (tmp / "old" / "lib" / "python3.9" / "site-packages").mkdir(parents=True)
    proc = run("help", {"GDBEXT_VENV": str(tmp / "old")})
    assert proc.stderr.splitlines() == [
        f"gdbext: {tmp / 'old'} is not a Python {PY[6:]} environment ({debugger} embeds Python "
        f"{PY[6:]}); run: bash {SETUP}"
    ]


def check_missing_dependency(run: RunOne, undefined: str, tmp: Path) -> None:
    """A dependency that does not import from the environment: one line naming the fix."""
    site = tmp / "venv" / "lib" / PY / "site-packages"
    (site / "pluggy").mkdir(parents=True)
    (site / "pluggy" / "__init__.py").write_text("raise ModuleNotFoundError(name='pluggy')\n")
    proc = run("pt-info", {"GDBEXT_VENV": str(tmp / "venv")})
    assert proc.stderr.splitlines() == [
        f"gdbext: cannot import pluggy from {tmp / 'venv'}; run: bash {SETUP}",
        undefined.format("pt-info"),
    ]
    assert "Traceback" not in proc.stdout + proc.stderr


#: The top-level packages outside Python's standard library that sourcing ``gdbinit.py`` may
#: import: gdbext's own and pluggy (its plugin manager). The rest (pyelftools, the kdump codecs
#: zstandard, cramjam and lzo, pwntools) waits for a command that needs it: that is what keeps
#: loading cheap. The load time itself is a benchmark: ``bench/bench_load.py``.
IMPORTED_BY_LOADING = {
    "gdbext",
    "gdbext_dump",
    "gdbext_gdb",
    "gdbext_gdbstub",
    "gdbext_lldb",
    "gdbext_sim",
    "pluggy",
}


def imported_by_loading(modules: str) -> set[str]:
    """The top-level packages in ``modules`` (names separated by spaces) outside the standard
    library, an editable install's import hook, if any, left out."""
    tops = {name.partition(".")[0] for name in modules.split()}
    return {t for t in tops - sys.stdlib_module_names if not t.startswith("__editable__")}


#: GDB's stderr lines that are not a command's error: its warnings (progress reports are left
#: out by :func:`without_progress`).
GDB_NOISE = re.compile(r"warning:|determin")

# --- commands on dumps -------------------------------------------------------------------------

DUMP_CASES: list[tuple[str, list[str]]] = [
    ("walk", []),
    ("walk", ["--format", "json"]),
    ("walk", ["--format", "qemu-tlb"]),
    ("walk", ["--format", "ptdump"]),
    ("walk", ["--no-merge", "--labels", "none", "--range", "0xffffffff80000000+0x40000000"]),
    ("walk", ["--kernel", "--filter", "x"]),
    ("walk", ["--has", "0x400000"]),
    ("walk", ["--merge", "va"]),
    ("walk", ["--merge", "va", "--json"]),
    ("translate", ["0x400000", "0xffffffff82000000", "0xffffffffff5fd000"]),
    ("translate", ["--json", "0xffffffff82000000", "0x1"]),
    ("info", []),
    ("heap", ["--memmap", "e820"]),
    ("read", ["0xffffffff82000000", "0x40"]),
    ("read", ["--kernel", "--format", "u32", "0xffffffff82000000", "32"]),
    ("read", ["--phys", "--format", "u64", "0x1000", "64"]),
    ("read", ["--json", "0x0", "0x20"]),
    ("who-maps", ["0x1000000"]),
    ("who-maps", ["--json", "0x1000-0x3000"]),
    ("who-maps", ["0x7ffff000"]),
    ("aliases", []),
    ("kaslr", []),
    ("kaslr", ["--json"]),
    ("kaslr", ["--leaks", "--max", "3"]),
    ("search", ["--u16", "0x1067", "--max", "20"]),
    ("search", ["--kernel", "--pointer-into", "direct-map", "--align", "8", "--max", "10"]),
    ("search", ["--phys", "--json", "--u16", "0x1067", "--align", "8", "--max", "5"]),
    ("roots", []),
    ("roots", ["--json"]),
]


#: A backend plugin ``slow`` (the simulator, 0.25 s a read) that logs its command scope to
#: ``{log}``; ``{register}`` ends it: how the debugger's front end registers it, with a
#: function that says whether Ctrl-C was pressed (``Plugin(interrupted)``).
SLOW_PLUGIN = """
import contextlib, dataclasses, time
from gdbext.plugin.hookspecs import hookimpl
from gdbext.plugin.target import BackendInfo, BackendOption
from gdbext_sim.scenario import load_scenario

LOG = {log!r}

def note(text):
    with open(LOG, "a") as f:
        f.write(text + "\\n")

class Slow:
    def __init__(self, inner, interrupted):
        self.inner = inner
        self.interrupted = interrupted
    def read(self, paddr, size):
        time.sleep(1.0)
        if self.interrupted():  # as a backend's reads do where Ctrl-C raises nothing (LLDB)
            raise KeyboardInterrupt
        return self.inner.read(paddr, size)
    def write(self, paddr, data):
        self.inner.write(paddr, data)

@contextlib.contextmanager
def scope():
    note("enter")
    try:
        yield
    except BaseException as exc:
        note("exit " + type(exc).__name__)
        raise
    note("exit")

class Plugin:
    def __init__(self, interrupted):
        self.interrupted = interrupted
    @hookimpl
    def gdbext_backends(self):
        return [BackendInfo("slow", "simulator with slow reads", self.open,
                            [BackendOption("scenario", "FILE", "scenario", True)])]
    def open(self, request):
        target = load_scenario(request.option("scenario")).to_target()
        return dataclasses.replace(target, backend="slow",
                                   mapper=Slow(target.mapper, self.interrupted),
                                   command_scope=scope)

{register}
"""


def wait_for_stderr(proc: subprocess.Popen[bytes], marker: bytes, timeout: float = 60) -> bytes:
    """What ``proc`` wrote on its (piped) stderr until ``marker`` showed (or it ended, or
    ``timeout`` seconds passed); the pipe is left non-blocking."""
    assert proc.stderr is not None
    os.set_blocking(proc.stderr.fileno(), False)
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen and time.monotonic() < deadline and proc.poll() is None:
        seen += proc.stderr.read() or b""
        time.sleep(0.05)
    return seen


def interrupted_run(argv: Sequence[str], marker: bytes) -> tuple[str, str]:
    """Run ``argv``, send SIGINT once ``marker`` shows on its stderr; its stdout and all of its
    stderr."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    seen = wait_for_stderr(proc, marker)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return out.decode(), (seen + err).decode()


def tlb_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line]


OFFSET = 0x123


def probes_of(tlb: list[str]) -> list[int]:
    """Kernel and user addresses that ``info tlb`` maps (plus :data:`OFFSET`), and one below any
    mapping Linux makes."""
    vas = [int(line[:16], 16) for line in tlb]
    kernel = [v for v in vas if v >> 63]
    user = [v for v in vas if not v >> 63]
    assert kernel and user
    picked = (*kernel[:: len(kernel) // 30 + 1], *user[:: len(user) // 15 + 1])
    return [v + OFFSET for v in picked] + [0x1000 + OFFSET]


def check_translations(output: str, expected: dict[int, int | None]) -> None:
    """``pt-translate`` ``output`` gives each address the physical address ``expected`` (QEMU's
    ``gva2gpa``; None: not mapped)."""
    mapped = dict(re.findall(r"^0x([0-9a-f]{16}) -> 0x([0-9a-f]+) ", output, re.M))
    for probe, paddr in expected.items():
        if paddr is None:
            assert f"0x{probe:016x}: 0x{probe:x} is not mapped" in output
        else:
            assert int(mapped[f"{probe:016x}"], 16) == paddr, hex(probe)


def phymem_commands(send: str, before: int, cr3: int) -> list[str]:
    """Commands that set PhyMemMode to ``before`` (``send``: the debugger's raw packet command),
    then run pt-* commands that succeed, find nothing or fail, querying the mode after each
    (at 2, 4, 6, 8, 10); the last one puts 0 back."""
    query = f"{send} qqemu.PhyMemMode"
    return [
        f"{send} Qqemu.PhyMemMode:{before}",
        "pt-walk --range 0xffffffff81000000-0xffffffff81200000",  # succeeds
        query,
        "pt-translate 0x1000",  # not mapped: status 1
        query,
        "pt-walk --cr3 0x7ffff000000",  # a root outside RAM: an error
        query,
        "pt-heap --memmap bootinfo --at 0x7fff000",  # no BootInfo there: an error
        query,
        f"pt-walk --cr3 0x{cr3:x} --filter u,w,x --range 0x0-0x1000",  # nothing: status 1
        query,
        f"{send} Qqemu.PhyMemMode:0",
    ]


#: Inside the debugger: each address's physical address through the API, ``None`` where QEMU
#: says unmapped (the GDB and the LLDB test of the API).
TRANSLATIONS = """
def translations(pt, vaddrs):
    out = {}
    for vaddr in vaddrs:
        try:
            out[str(vaddr)] = pt.translate(vaddr).paddr
        except gdbext.GdbextError as exc:  # QEMU's "unmapped": not mapped, or not canonical
            name = type(exc).__name__
            unmapped = name in ("NotMappedError", "NonCanonicalAddressError")
            out[str(vaddr)] = None if unmapped else name
    return out
"""
