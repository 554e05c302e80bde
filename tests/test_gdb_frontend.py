"""The GDB front end in the real ``gdb -nx -batch``: loading, help, completion, errors, styling,
progress and Ctrl-C on committed dumps of real kernels (``pt-backend core``), and, on the session
QEMU guests, the live backend against QEMU's own ``info tlb`` and ``gva2gpa``.

Outputs on dumps are compared with the command line's for the same dump (in-process
:func:`gdbext.cli.run`, and the ``gdbext`` console script once); live outputs with QEMU's
monitor on the same stopped VM.
"""

from __future__ import annotations

import io
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from gdbext import cli
from gdbext.plugin.host import Host
from gdbext.session import PROGRESS_LINE, Session, progress_line

if TYPE_CHECKING:
    from qemu_guest import QemuGuest

ROOT = Path(__file__).resolve().parent.parent
GDBINIT = ROOT / "gdbext" / "gdbinit.py"
SETUP = ROOT / "scripts" / "setup.sh"
DEMO = ROOT / "fixtures" / "scenarios" / "demo.json"
MARK = "@@gdbext-test@@"
ESC = "\x1b["
PY = f"python{sys.version_info[0]}.{sys.version_info[1]}"

pytestmark = pytest.mark.skipif(shutil.which("gdb") is None, reason="no gdb")


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
    """``stderr`` without its progress reports (lines :data:`gdbext.session.PROGRESS_LINE`
    matches whole). A command that runs past 5 s (a loaded machine) reports progress; a report
    is not part of its result, and every other line (an error, a warning) is kept."""
    lines = stderr.splitlines(keepends=True)
    return "".join(line for line in lines if not PROGRESS_LINE.fullmatch(line.rstrip("\n")))


def cli_output(*argv: str) -> str:
    out = io.StringIO()
    cli.run(list(argv), Host.create(), out)
    return out.getvalue()


# --- loading -----------------------------------------------------------------------------------


def test_sourcing_twice_registers_once() -> None:
    ident = "python from gdbext_gdb import gdb_commands as g; print('ID', id(g.installed()))"
    proc = gdb(ident, f"source {GDBINIT}", ident, "help data", "pt-backend")
    assert proc.stderr == ""
    ids = re.findall(r"^ID (\d+)$", proc.stdout, re.M)
    assert len(ids) == 2 and ids[0] == ids[1]
    for name in ("pt-walk", "pt-translate", "pt-info", "pt-heap", "pt-backend"):
        assert len(re.findall(rf"^{name} -- ", proc.stdout, re.M)) == 1, name
    functions = gdb("help function")
    assert len(re.findall(r"^function pt_phys -- ", functions.stdout, re.M)) == 1
    assert len(re.findall(r"^function pt_virt -- ", functions.stdout, re.M)) == 1


def test_sourced_from_another_script(tmp_path: Path) -> None:
    """GDB keeps the outer script's ``__file__`` for a nested ``source``: the checkout is found
    all the same."""
    outer = tmp_path / "outer.py"
    outer.write_text(f"gdb.execute('source {GDBINIT}')\n")
    proc = gdb(f"source {outer}", "help pt-info", source=False)
    assert proc.stderr == ""
    assert proc.stdout.startswith("Paging mode, control registers")


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


def gdb_with(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return gdb(command, env={**os.environ, **env})


GDB_UNDEFINED = 'Undefined command: "{}".  Try "help".'


def test_a_missing_environment_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    check_missing_environment(gdb_with, "GDB", GDB_UNDEFINED, tmp_path)


def test_a_missing_dependency_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    check_missing_dependency(gdb_with, GDB_UNDEFINED, tmp_path)


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
    library, setuptools' finder of an editable install left out."""
    tops = {name.partition(".")[0] for name in modules.split()}
    return {t for t in tops - sys.stdlib_module_names if not t.startswith("__editable__")}


def test_loading_imports_only_gdbext_and_pluggy() -> None:
    """``source gdbext/gdbinit.py`` in ``gdb -nx -batch``: the modules it added to GDB's Python
    (``sys.modules`` before and after) hold no third-party package but pluggy, while the
    commands are registered."""
    proc = gdb(
        "python import sys; gdbext_before = set(sys.modules)",
        f"source {GDBINIT}",
        "python print('NEW', *sorted(set(sys.modules) - gdbext_before))",
        "help pt-walk",
        source=False,
    )
    assert proc.stderr == ""
    new = re.search(r"^NEW (.*)$", proc.stdout, re.M)
    assert new, proc.stdout
    assert "gdbext_gdb.gdb_commands" in new.group(1).split()
    assert imported_by_loading(new.group(1)) == IMPORTED_BY_LOADING
    assert "usage: pt-walk" in proc.stdout


def test_pwntools_imported_in_gdb_leaves_the_terminal_alone() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PWNLIB_NOTERM"}
    probe = (
        "python import pwn, pwnlib.term, pwnlib.args; "
        "print('TERM', pwnlib.term.term_mode, pwnlib.args.term_mode); pwn.log.info('hello')"
    )
    text = run_pty(gdb_argv(probe, "echo done\\n"), env=env)
    assert text == "TERM False False\n[*] hello\ndone\n"
    # Without gdbinit.py's setting, importing pwntools on a terminal inside GDB reaches for the
    # terminal (curses on GDB's stdout), which fails: what the setting prevents.
    site = ROOT / ".venv" / "lib" / PY / "site-packages"
    bare = run_pty(
        gdb_argv(f"python import site; site.addsitedir('{site}')", probe, source=False), env=env
    )
    assert "TERM False False" not in bare and "Error" in bare


# --- help and completion ---------------------------------------------------------------------


def test_help_is_the_argparse_usage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    session = Session(Host.create())
    names = ("pt-walk", "pt-translate", "pt-info", "pt-heap", "pt-backend")
    proc = gdb(*marked(*(f"help {n}" for n in names)), env={**os.environ, "COLUMNS": "100"})
    assert proc.stderr == ""
    for name, text in zip(names, sections(proc.stdout), strict=True):
        assert text == session.help(name) + "\n"
    walk = gdb("pt-walk --help").stdout
    assert walk == session.parser("pt-walk").format_help()


def test_options_complete() -> None:
    proc = gdb(
        "complete pt-walk --fo",
        "complete pt-walk --format q",
        "complete pt-walk --labels ",
        "complete pt-translate 0x1000 --us",
        "complete pt-heap --memmap e",
        "complete pt-backend co",
        "complete pt-backend core fixtures/kernels/la57.e",
        "complete pt-backend sim --scenario fixtures/scenarios/de",
    )
    assert proc.stderr == ""
    assert proc.stdout.splitlines() == [
        "pt-walk --format",
        "pt-walk --format qemu-tlb",
        "pt-walk --labels auto",
        "pt-walk --labels linux",
        "pt-walk --labels none",
        "pt-translate 0x1000 --user-pgd",
        "pt-heap --memmap e820",
        "pt-backend core",
        "pt-backend core fixtures/kernels/la57.elf.xz",
        "pt-backend sim --scenario fixtures/scenarios/demo.json",
    ]


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
]


@pytest.mark.parametrize("name", ["4level", "kaslr-pti", "la57"])
def test_every_command_on_a_dump_equals_the_command_line(
    kernel_dump: Callable[[str], Path], name: str
) -> None:
    dump = str(kernel_dump(name))
    cases = list(DUMP_CASES)
    if name == "kaslr-pti":
        cases += [("walk", ["--user-pgd", "--format", "qemu-tlb"]), ("walk", ["--user-pgd"])]
    proc = gdb(
        f"pt-backend core {dump}",
        *marked(*(f"pt-{command} {' '.join(argv)}" for command, argv in cases)),
    )
    assert without_progress(proc.stderr) == ""
    assert proc.stdout.startswith(f"backend core: {dump}\n")
    got = sections(proc.stdout)
    assert len(got) == len(cases)
    for (command, argv), text in zip(cases, got, strict=True):
        assert text == cli_output(command, dump, *argv), (command, argv)


def test_walks_equal_the_gdbext_console_script(kernel_dump: Callable[[str], Path]) -> None:
    dump = str(kernel_dump("kaslr-pti"))
    formats = ("text", "json", "qemu-tlb", "ptdump")
    proc = gdb(f"pt-backend core {dump}", *marked(*(f"pt-walk --format {f}" for f in formats)))
    gdbext = ROOT / ".venv" / "bin" / "gdbext"
    for fmt, text in zip(formats, sections(proc.stdout), strict=True):
        expected = subprocess.run(
            [str(gdbext), "walk", dump, "--format", fmt], capture_output=True, check=True
        ).stdout
        assert text.encode() == expected, fmt


def test_convenience_functions(kernel_dump: Callable[[str], Path]) -> None:
    dump = str(kernel_dump("4level"))
    text = cli_output("translate", dump, "0xffffffff82000123", "0x400010")
    kernel_pa, user_pa = (int(m, 16) for m in re.findall(r"-> (0x[0-9a-f]+)", text))
    proc = gdb(
        f"pt-backend core {dump}",
        "p/x $pt_phys(0xffffffff82000123)",
        "p/x $pt_phys(0x400010)",
        f"p/x $pt_virt({kernel_pa:#x})",
        "p/x $pt_phys($pt_virt($pt_phys(0xffffffff82000123)))",
        "ptype $",
        "set $va = 0x400010",
        *marked("pt-translate $va $pt_virt(0x1000000)", "pt-translate $void"),
    )
    assert proc.stderr == "pt-translate: $void: Cannot convert value to long.\n"
    lines = proc.stdout.split(MARK)[0].splitlines()[1:]
    # Words starting with $ are GDB expressions.
    assert sections(proc.stdout)[0] == cli_output(
        "translate", dump, "0x400010", "0xffff888001000000"
    )
    direct = int(lines[2].split("= ")[1], 16)
    assert lines[0] == f"$1 = {kernel_pa:#x}"
    assert lines[1] == f"$2 = {user_pa:#x}"
    assert lines[3] == f"$4 = {kernel_pa:#x}"
    assert lines[4] == "type = unsigned long long"
    # The first mapping in walk order: the direct map, below the kernel image.
    assert direct < 0xFFFFFFFF80000000
    tlb = cli_output("walk", dump, "--format", "qemu-tlb")
    pairs = re.findall(r"^([0-9a-f]{16}): ([0-9a-f]{16})", tlb, re.M)
    first = min(int(va, 16) for va, pa in pairs if int(pa, 16) == kernel_pa & ~0xFFF)
    assert direct == first + (kernel_pa & 0xFFF)


def test_not_mapped_prints_the_result_without_an_error(kernel_dump: Callable[[str], Path]) -> None:
    dump = str(kernel_dump("4level"))
    proc = gdb(
        f"pt-backend core {dump}",
        *marked(
            "pt-translate 0x1",
            "pt-walk --range 0x0-0x1000000 --filter wx",
            "pt-walk --has 0x1000",
            "pt-walk --has 0x400000 --filter w",
        ),
    )
    assert without_progress(proc.stderr) == ""
    translate, walk, has, filtered = sections(proc.stdout)
    assert has == "0x1000 is not mapped: its PD entry is not present (value 0x0)\n"
    assert filtered == "0x400000 is mapped, but its permissions do not pass --filter w\n"
    assert translate == cli_output("translate", dump, "0x1")
    assert translate.startswith("0x0000000000000001: 0x1 is not mapped")
    assert walk.startswith("# Linux x86-64 4-level layout")
    root = int(re.findall(r"^  root: +0x([0-9a-f]+)", cli_output("info", dump), re.M)[0], 16)
    assert walk.endswith(
        f"# 0 lines, 0 leaf entries, 0 anomalies; 4-level paging, root 0x{root:x}\n"
    )


def test_bad_input_is_one_line_and_never_a_traceback(kernel_dump: Callable[[str], Path]) -> None:
    dump = str(kernel_dump("4level"))
    expected = [
        ("pt-walk", r"^no backend selected; connect to a gdbstub \(target remote HOST:PORT\)"),
        ("p $pt_phys(0)", r"^no backend selected; "),
        ("pt-backend nope", r"^no backend named nope \(known: core, gdb, lldb, sim"),
        ("pt-backend core /nonexistent.elf", r"^/nonexistent\.elf: cannot open: No such file"),
        ("pt-backend sim", r"^backend sim needs --scenario$"),
        ("pt-backend sim x.json", r"^a DUMP is opened by the core backend; backend sim takes"),
        (f"pt-backend core {dump}", None),
        ("pt-walk --bogus", r"^pt-walk: unrecognized arguments: --bogus$"),
        ("pt-walk --format nope", r"^pt-walk: argument --format: invalid choice: nope \(choose"),
        ("pt-walk --range zz", r"^pt-walk: argument --range: "),
        ("pt-walk --rnage 0x0-0x1000", r"^pt-walk: unrecognized .* \(did you mean --range\?\)$"),
        ("pt-walk --cr3 -5", r"^pt-walk: argument --cr3: -5 is negative$"),
        ("pt-walk --range 0x1000+dead", r"^pt-walk: argument --range: not a size: dead \(did "),
        ("pt-translate ffffffff81000000", r"^pt-translate: .*\(did you mean 0xffffffff81000000\?"),
        ("pt-walk --cpu 3", r"^there is no CPU 3; this target has 1$"),
        ("pt-walk --cr3 0x1 --kernel", r"^pt-walk: argument --kernel: not allowed with"),
        ("pt-walk 'unterminated", r"^pt-walk: unrecognized arguments: unterminated$"),
        ("pt-translate", r"^pt-translate: the following arguments are required: VADDR$"),
        ("pt-translate zz", r"^pt-translate: argument VADDR: not a number: zz$"),
        (
            "pt-translate 0x8000000000000000",
            r"^pt-translate: 0x8000000000000000 is not canonical for 48-bit virtual addresses$",
        ),
        # A Linux dump's default is e820; a BootInfo needs its address.
        ("pt-heap --memmap bootinfo", r"^--at ADDR \(physical address of the BootInfo\) is "),
        ("pt-heap --memmap json /nonexistent.json", r"/nonexistent\.json"),
        ("p $pt_phys()", r"^\$pt_phys takes one argument, VADDR$"),
        ("p $pt_phys(1, 2)", r"^\$pt_phys takes one argument, VADDR$"),
        ("p $pt_phys(0x1)", r"^0x1 is not mapped: its PD entry is not present \(value 0x0\)$"),
        ("p $pt_phys(0x8000000000000000)", r"^0x8000000000000000 is not canonical"),
        ("p $pt_virt(0xfffffffff000)", r"^physical 0xfffffffff000 is not mapped by the page tab"),
        ('p $pt_virt("x")', r"^"),
    ]
    proc = gdb(*(command for command, _ in expected))
    errors = proc.stderr.splitlines()
    patterns = [p for _, p in expected if p is not None]
    assert len(errors) == len(patterns), proc.stderr
    for line, pattern in zip(errors, patterns, strict=True):
        assert re.search(pattern, line), (line, pattern)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "Python Exception" not in proc.stdout + proc.stderr


def test_style_on_colours_and_style_off_does_not(kernel_dump: Callable[[str], Path]) -> None:
    dump = str(kernel_dump("kaslr-pti"))
    walk = "pt-walk --range 0xffffffff80000000-0xffffffffc0000000"
    argv = gdb_argv(
        f"pt-backend core {dump}",
        *marked("set style enabled on", walk, "pt-translate 0x1", "set style enabled off", walk),
    )
    env = {**os.environ, "TERM": "xterm"}
    _, on, on_translate, _, off = sections(run_pty(argv, env=env))
    plain = cli_output("walk", dump, "--range", "0xffffffff80000000-0xffffffffc0000000")
    assert off == plain
    assert ESC not in off
    assert "\x1b[1m---[ High Kernel Mapping ]---\x1b[m\n" in on
    assert re.sub(r"\x1b\[[0-9;]*m", "", on) == plain
    assert "\x1b[33m0x0000000000000001: 0x1 is not mapped" in on_translate
    # Styling on, but the output is not a terminal: no escapes (as GDB's own styling).
    piped = gdb(f"pt-backend core {dump}", "set style enabled on", *marked(walk))
    assert sections(piped.stdout) == [plain]


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
GDB_REGISTER = """from gdbext_gdb import gdb_commands
gdb_commands.installed().session.host.pm.register(Plugin(lambda: False))"""


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


def test_the_tests_drop_progress_reports_and_nothing_else() -> None:
    """:func:`without_progress`, which the comparisons of stderr go through, drops the lines the
    front ends report progress with and keeps errors, warnings and partial matches."""
    kept = [
        "pt-walk: cannot read 0x1000: Input/output error\n",
        "warning: pt-walk: 3 s (Ctrl-C interrupts) later\n",
        "pt-walk: 12 leaves so far, 5 s\n",
    ]
    reports = [progress_line("pt-walk", 5.2, 1234), progress_line("$pt_phys", 10.0)]
    stderr = f"{reports[0]}\n{kept[0]}{kept[1]}{reports[1]}\n{kept[2]}"
    assert without_progress(stderr) == "".join(kept)


def test_a_long_walk_shows_progress_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """A backend whose reads take 1 s each (a slow stub): progress on stderr (a pipe, not a
    terminal: after 5 s, at most one line per 5 s), SIGINT gives one "interrupted" line, the
    command scope is left, and GDB goes on."""
    log = tmp_path / "scope.log"
    plugin = tmp_path / "slow.py"
    plugin.write_text(SLOW_PLUGIN.format(log=str(log), register=GDB_REGISTER))
    argv = gdb_argv(
        f"source {plugin}",
        f"pt-backend slow --scenario {DEMO}",
        "pt-walk",
        "echo after\\n",
        "pt-info",
    )
    out, stderr = interrupted_run(argv, b"so far")
    # The first report: 5 s in (the interval into a pipe), or a little later on a loaded
    # machine, the first read after 5 s being where the walk looks at the clock.
    first = re.match(r"^pt-walk: \d+ leaves so far, (\d+) s \(Ctrl-C interrupts\)\n", stderr)
    assert first and 5 <= int(first.group(1)) < 10, stderr
    assert stderr.splitlines()[-1] == "pt-walk: interrupted"
    assert "Traceback" not in stderr
    assert out.startswith(f"backend slow: {DEMO}\nafter\nbackend:     slow ")
    assert log.read_text().splitlines() == ["enter", "exit KeyboardInterrupt", "enter", "exit"]


def test_progress_on_a_terminal_comes_after_a_second(tmp_path: Path) -> None:
    """The same slow walk on a terminal: the first progress line after 1 s."""
    log = tmp_path / "scope.log"
    plugin = tmp_path / "slow.py"
    plugin.write_text(SLOW_PLUGIN.format(log=str(log), register=GDB_REGISTER))
    argv = gdb_argv(f"source {plugin}", f"pt-backend slow --scenario {DEMO}", "pt-walk")
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=ROOT)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    try:
        while b"so far" not in seen and time.monotonic() < deadline:
            if select.select([master], [], [], 1.0)[0]:
                try:
                    seen += os.read(master, 1 << 16)
                except OSError:
                    break
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
    # The first report: 1 s in (a terminal's interval, not a pipe's 5 s), or a little later on
    # a loaded machine, the first read after 1 s being where the walk looks at the clock.
    first = re.search(rb"pt-walk: \d+ leaves so far, (\d+) s \(Ctrl-C interrupts\)", seen)
    assert first and 1 <= int(first.group(1)) < 5, seen


# --- live: QEMU guests -------------------------------------------------------------------------


def live_gdb(guest: QemuGuest, *commands: str) -> subprocess.CompletedProcess[str]:
    """GDB attached to the guest's gdbstub; detaches at the end (which resumes the VM)."""
    return gdb(
        "set pagination off",
        f"target remote 127.0.0.1:{guest.gdb_port}",
        *commands,
        "detach",
        timeout=300,
    )


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


#: The PTI guest as if stopped in user mode (CR3 on the user PGD), which a stop may or may not
#: hit: the test writes CR3 through the gdbstub first, and puts it back before GDB leaves.
ON_USER_HALF = "kaslr-pti-on-user-half"


@pytest.mark.qemu
@pytest.mark.parametrize("name", ["4level", "la57", "kaslr-pti", ON_USER_HALF])
def test_live_walk_and_translate_equal_qemu(
    qemu_guest: Callable[[str], QemuGuest], name: str
) -> None:
    """On a stopped guest: ``pt-walk --format qemu-tlb`` is ``info tlb`` line for line (under PTI
    both halves, against ``info tlb`` with CR3 set to each, whichever the VM stopped on);
    ``pt-translate`` and ``$pt_phys`` agree with ``gva2gpa`` on kernel and user addresses."""
    guest = qemu_guest(name.removesuffix("-on-user-half"))
    guest.stop()  # what the monitor and GDB see until GDB detaches (which resumes the VM)
    stopped_on = guest.cr3()
    if name == ON_USER_HALF:
        gdb(
            f"target remote 127.0.0.1:{guest.gdb_port}",
            f"set $cr3 = (long)0x{stopped_on | 0x1000:x}",
            "disconnect",  # the VM stays stopped
            source=False,
        )
    tlb = guest.info_tlb()
    cr3 = guest.cr3()
    assert cr3 == (stopped_on | 0x1000 if name == ON_USER_HALF else stopped_on)
    probes = probes_of(tlb)
    expected = {p: guest.gva2gpa(p) for p in probes}
    commands = [
        "pt-info",
        "python import time; gdbext_t = time.perf_counter()",
        "pt-walk --format qemu-tlb",
        "python print('SECONDS', time.perf_counter() - gdbext_t)",
        "pt-translate " + " ".join(f"0x{p:x}" for p in probes),
        *(f"p/x $pt_phys(0x{p:x})" for p in probes[:3]),
    ]
    # The VM may have stopped in user mode, with CR3 on the user half of the PTI pair: each
    # half is set in turn, and QEMU's monitor shows it (on GDB's stderr, after a marker).
    kernel_pgd, user_pgd = cr3 & ~0x1000, cr3 | 0x1000
    if name.startswith("kaslr-pti"):
        commands += [
            f"set $cr3 = (long)0x{kernel_pgd:x}",
            "pt-walk --format qemu-tlb",
            "pt-walk --user-pgd --format qemu-tlb",
            f"python gdb.write('{MARK} kernel\\n', gdb.STDERR)",
            "monitor info tlb",
            f"set $cr3 = (long)0x{user_pgd:x}",
            "pt-walk --format qemu-tlb",
            f"python gdb.write('{MARK} user\\n', gdb.STDERR)",
            "monitor info tlb",
            f"set $cr3 = (long)0x{stopped_on:x}",
            "p/x $cr3",
        ]
    proc = live_gdb(guest, *marked(*commands))
    assert "Traceback" not in proc.stderr, proc.stderr
    got = sections(proc.stdout)
    info, _, walk, seconds, translate = got[:5]
    assert f"cr3:       0x{cr3:x}" in info and "backend:     gdb" in info
    assert tlb_lines(walk) == tlb
    print(f"{name}: pt-walk --format qemu-tlb, {len(tlb)} lines: {seconds.split()[1]} s")
    # Its speed target (0.25 s) is bench/bench_gdb.py's, where it is measured.
    check_translations(translate, expected)
    for probe, line in zip(probes[:3], got[5:8], strict=True):
        assert line.splitlines()[0].split(" = ")[1] == f"{expected[probe]:#x}"
    if name.startswith("kaslr-pti"):
        # GDB writes what the stub's monitor prints to its stderr.
        _, kernel_monitor, user_monitor = re.split(
            rf"^{MARK} (?:kernel|user)\n", proc.stderr, flags=re.M
        )
        kernel_tlb, user_tlb = (
            re.findall(r"^[0-9a-f]{16}: [0-9a-f]{16} [-A-Z]{9}$", text, re.M)
            for text in (kernel_monitor, user_monitor)
        )
        kernel_walk, user_walk, user_walk_after_write = got[9], got[10], got[14]
        print(f"stopped with CR3 on the {'kernel' if cr3 == kernel_pgd else 'user'} half")
        assert tlb == (kernel_tlb if cr3 == kernel_pgd else user_tlb)
        assert tlb_lines(kernel_walk) == kernel_tlb
        assert tlb_lines(user_walk) == user_tlb != kernel_tlb
        assert tlb_lines(user_walk_after_write) == user_tlb
        assert got[-1].splitlines()[0].endswith(f" = 0x{stopped_on:x}"), got[-3:]  # put back


@pytest.mark.qemu
def test_a_detached_target_is_one_line_and_gdb_goes_on(
    qemu_guest: Callable[[str], QemuGuest],
) -> None:
    guest = qemu_guest("4level")
    proc = gdb(
        "pt-backend gdb",
        f"target remote 127.0.0.1:{guest.gdb_port}",
        "pt-backend gdb",
        "detach",
        "pt-walk",
        "p $pt_phys(0)",
        "pt-translate 0x1000",
        "echo alive\\n",
    )
    needs = "the gdb backend needs a live target: connect GDB first (target remote HOST:PORT)"
    errors = [
        line for line in without_progress(proc.stderr).splitlines() if not GDB_NOISE.match(line)
    ]
    assert errors == [needs] * 4
    assert f"backend gdb: remote 127.0.0.1:{guest.gdb_port}\n" in proc.stdout
    assert proc.stdout.endswith("alive\n")
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.qemu
@pytest.mark.parametrize("before", [0, 1])
def test_phymem_mode_is_back_after_every_command_failing_ones_included(
    qemu_guest: Callable[[str], QemuGuest], before: int
) -> None:
    """Each pt-* command leaves QEMU's PhyMemMode as it found it, whether it succeeds, finds
    nothing, or fails on bad input (a root outside RAM, a BootInfo that is not there)."""
    guest = qemu_guest("4level")
    guest.stop()
    commands = phymem_commands("maintenance packet", before, guest.cr3())
    proc = live_gdb(guest, *marked(*commands))
    assert "Traceback" not in proc.stdout + proc.stderr
    got = sections(proc.stdout)
    replies = [re.search(r'received: "(\d)"', got[i]) for i in (2, 4, 6, 8, 10)]
    modes = [m.group(1) if m else got[i] for m, i in zip(replies, (2, 4, 6, 8, 10), strict=True)]
    assert modes == [str(before)] * 5
    assert "is not mapped" in got[3]
    errors = [
        line for line in without_progress(proc.stderr).splitlines() if not GDB_NOISE.match(line)
    ]
    assert len(errors) == 2, errors  # the two failing commands, one line each


def test_messages_go_where_they_belong(kernel_dump: Callable[[str], Path]) -> None:
    """As on the command line : a translation that fails with exit status 2
    is the command's error, not output; --user-pgd on a root with no PTI pair warns on stderr,
    after which the output is the command line's."""
    dump = str(kernel_dump("4level"))
    proc = gdb(
        f"pt-backend core {dump}",
        *marked("pt-translate --user-pgd 0xffffffff81000000", "pt-translate 0x800000000000"),
    )
    user, bad = sections(proc.stdout)
    assert user == cli_output("translate", dump, "--user-pgd", "0xffffffff81000000")
    assert bad == ""
    errors = proc.stderr.splitlines()
    assert errors == [
        "pt-translate: warning: --user-pgd: 0x61b7000 is not the user half of a PTI pair (the "
        "user halves differ: entry 0 is present only in the kernel table (0x6302067 vs 0x0)); "
        "this is the table at root | 0x1000 all the same",
        "pt-translate: 0x800000000000 is not canonical for 48-bit virtual addresses",
    ]
