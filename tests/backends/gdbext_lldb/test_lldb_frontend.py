"""The LLDB front end in the real ``lldb`` (Debian's LLDB 14): the one-line start, loading,
help, every command on committed dumps of real kernels (``pt-backend core``) byte for byte equal
to the command line's and to GDB's, one-line errors, progress and Ctrl-C, colour.

LLDB runs through ``scripts/lldb --batch -Q`` (the start ``docs/lldb.md`` describes) and
``tests/support/lldb_side.py``, which records each command's output and error separately
(:mod:`support.lldbrun`). The live backend is tested against QEMU in
``tests/backends/gdbext_lldb/test_lldb_live.py``.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from depth import FULL, kernels
from support import lldbrun
from support.debuggers import (
    DUMP_CASES,
    IMPORTED_BY_LOADING,
    SLOW_PLUGIN,
    check_missing_dependency,
    check_missing_environment,
    cli_output,
    committed_dump_output,
    gdb,
    imported_by_loading,
    interrupted_run,
    marked,
    run_pty,
    sections,
    without_progress,
)
from support.paths import ROOT

from gdbext import cli
from gdbext.frontend.cmd import COMMANDS as DECLARED
from gdbext.plugin.host import Host
from gdbext.session import Session

#: The debuggers' names of the declared commands.
COMMANDS = [c.debugger_name for c in DECLARED]

DEMO = ROOT / "fixtures" / "scenarios" / "demo.json"
ESC = "\x1b["

pytestmark = pytest.mark.skipif(not lldbrun.available(), reason="no lldb")


def lldb(
    *commands: str, env: dict[str, str] | None = None, wrapper: bool = True, quiet: bool = True
) -> subprocess.CompletedProcess[str]:
    """``scripts/lldb --batch -Q -o COMMAND...`` (each -o echoed unless ``quiet``)."""
    return subprocess.run(
        lldbrun.argv(*commands, wrapper=wrapper, quiet=quiet),
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=180,
        check=False,
    )


def user_commands(help_text: str) -> list[str]:
    """The names LLDB's ``help`` lists under "Current user-defined commands"."""
    tail = help_text.split("Current user-defined commands:", 1)[1]
    return re.findall(r"^  (\S+)\s+--", tail, re.M)


# --- the one-line start and loading ----------------------------------------------------------


def test_the_one_line_start_works_from_a_fresh_shell() -> None:
    """``scripts/lldb`` with no PYTHONPATH (a fresh shell after ``scripts/setup.sh``): every
    command is there. Plain ``lldb`` in the same shell cannot run Python at all (Debian's
    lldb-14 looks for its module where it is not): the pitfall the wrapper handles."""
    env = lldbrun.clean_env()
    proc = lldb("help", env=env)
    assert proc.stderr == ""
    expected = sorted([*COMMANDS, "pt-backend", "pt-connect"])
    assert user_commands(proc.stdout) == expected
    bare = lldb("script print('python works')", env=env, wrapper=False)
    assert "python works" not in bare.stdout
    assert "embedded_interpreter" in bare.stderr


def test_the_one_line_start_works_with_another_python_first_on_path(tmp_path: Path) -> None:
    """LLDB's embedded Python takes its prefix from the first ``python3`` on PATH; an activated
    virtual environment there (without ``six``, which LLDB's module imports) breaks plain
    ``lldb`` even with the right PYTHONPATH. ``scripts/lldb`` puts the system's first."""
    subprocess.run(
        ["/usr/bin/python3", "-m", "venv", "--without-pip", str(tmp_path / "v")], check=True
    )
    path = f"{tmp_path / 'v' / 'bin'}:{os.environ['PATH']}"
    proc = lldb("pt-backend", env=lldbrun.clean_env(PATH=path))
    assert proc.stderr == ""
    assert proc.stdout.startswith("  core ")
    plain = lldb(
        "script print('python works')",
        env=lldbrun.clean_env(PATH=path, PYTHONPATH=lldbrun.lldb_python_dir()),
        wrapper=False,
    )
    assert "python works" not in plain.stdout  # the control


def test_the_one_line_start_works_through_a_link_from_another_directory(tmp_path: Path) -> None:
    """``scripts/lldb`` linked from a ``bin`` directory (``~/bin/lldb-pt``) and run elsewhere
    finds its checkout through the link."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "lldb-pt").symlink_to(lldbrun.WRAPPER)
    proc = subprocess.run(
        ["lldb-pt", "--batch", "-Q", "-o", "pt-backend"],
        capture_output=True,
        text=True,
        env=lldbrun.clean_env(PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}"),
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert proc.stderr == ""
    assert proc.stdout.startswith("  core ")


def test_an_lldb_that_is_not_there_is_one_line() -> None:
    proc = lldb("help", env=lldbrun.clean_env(GDBEXT_LLDB="/nonexistent/lldb"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        "gdbext: GDBEXT_LLDB=/nonexistent/lldb is not a command; unset it to use the lldb on PATH\n"
    )


def test_loading_imports_only_gdbext_and_pluggy() -> None:
    """``command script import gdbext/lldbinit.py`` in plain ``lldb`` (with its Python module on
    PYTHONPATH, as ``scripts/lldb`` sets it): the modules it added hold no third-party package
    but pluggy (GDB's twin says why; the load time is ``bench/bench_load.py``'s), nor the code of
    a live target (``pt-connect``, its relay, the link), which the first command that needs it
    loads."""
    proc = lldb(
        "script import sys; gdbext_before = set(sys.modules)",
        f"command script import {lldbrun.LLDBINIT}",
        "script print('NEW', *sorted(set(sys.modules) - gdbext_before))",
        "help pt-walk",
        env=lldbrun.clean_env(PYTHONPATH=lldbrun.lldb_python_dir()),
        wrapper=False,
    )
    assert proc.stderr == ""
    new = re.search(r"^NEW (.*)$", proc.stdout, re.M)
    assert new, proc.stdout
    assert "gdbext_lldb.lldb_commands" in new.group(1).split()
    live = {"gdbext_lldb.lldb_connect", "gdbext_lldb.relay", "gdbext_lldb.lldb_link"}
    assert live.isdisjoint(new.group(1).split())
    # LLDB keeps an imported script as a module named after its file.
    assert imported_by_loading(new.group(1)) == {*IMPORTED_BY_LOADING, "lldbinit"}
    assert "usage: pt-walk" in proc.stdout


def test_importing_twice_registers_once() -> None:
    ident = (
        "script from gdbext_lldb import lldb_commands as c; "
        "print('ID', id(c.installed(lldb.debugger)))"
    )
    probe = (
        "script import sys, os; print('ON PATH', "
        f"[p for p in sys.path if os.path.realpath(p) == {str(ROOT / 'gdbext')!r}])"
    )
    proc = lldb(ident, f"command script import {lldbrun.LLDBINIT}", ident, probe, "help")
    assert proc.stderr == ""
    ids = re.findall(r"^ID (\d+)$", proc.stdout, re.M)
    assert len(ids) == 2 and ids[0] == ids[1]
    # The package directory LLDB put on sys.path to import lldbinit.py is taken off again.
    assert "ON PATH []" in proc.stdout
    names = user_commands(proc.stdout)
    assert sorted(names) == sorted(set(names)) == sorted([*COMMANDS, "pt-backend", "pt-connect"])


def lldb_with(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return lldb(command, env=lldbrun.clean_env(**env))


LLDB_UNDEFINED = "error: '{}' is not a valid command."


def test_a_missing_environment_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    check_missing_environment(lldb_with, "LLDB", LLDB_UNDEFINED, tmp_path)


def test_a_missing_dependency_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    check_missing_dependency(lldb_with, LLDB_UNDEFINED, tmp_path)


def test_help_is_the_argparse_usage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    env = lldbrun.clean_env(COLUMNS="100")
    session = Session(Host.create())
    names = [*COMMANDS, "pt-backend"]
    run = lldbrun.run([f"help {name}" for name in names], env=env)
    for name, result in zip(names, run.results, strict=True):
        parser = session.parser(name)
        assert result.ok, result.err
        # LLDB wraps the summary and sets COLUMNS to its own width (argparse wraps to it).
        words = " ".join(result.out.split())
        assert words.startswith(" ".join(session.help(name).split("\n", 1)[0].split())), name
        assert " ".join(parser.format_help().split()) in words, name


def test_pt_connect_help() -> None:
    """``pt-connect --help`` prints its usage as the other commands do (it was an error), and
    ``help pt-connect`` is paragraphs LLDB wraps (no line broken mid-sentence)."""
    run = lldbrun.run(["pt-connect --help", "pt-connect -h", "help pt-connect"])
    assert [r.ok for r in run.results] == [True] * 3
    assert run.outputs()[0] == run.outputs()[1]
    assert run.outputs()[0].startswith("usage: pt-connect [HOST:]PORT\n\ngdb-remote ")
    paragraphs = run.outputs()[2].split("\n\n")
    assert any(p.startswith("gdb-remote [HOST:]PORT, tried again") for p in paragraphs)
    assert not re.search(r"[a-z],?\n[a-z]", run.outputs()[0].split("\n\n", 1)[1].rstrip())


def test_the_lldb_backend_opens_only_inside_lldb(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["walk", "--backend", "lldb"]) == 2
    assert capsys.readouterr().err == "gdbext: the lldb backend works only inside LLDB\n"
    # GDB's Python imports Debian's broken /usr/lib/python3/dist-packages/lldb link as an empty
    # namespace package: still one line, no Python exception.
    in_gdb = gdb("pt-backend lldb")
    assert (in_gdb.stdout, in_gdb.stderr) == ("", "the lldb backend works only inside LLDB\n")


# --- commands on dumps -------------------------------------------------------------------------


@pytest.mark.parametrize("name", kernels())
def test_every_command_on_a_dump_equals_the_command_line(
    kernel_dump: Callable[[str], Path], name: str
) -> None:
    dump = str(kernel_dump(name))
    cases = [*DUMP_CASES, ("audit", []), ("audit", ["--json"])]
    if name == "kaslr-pti":
        cases += [("walk", ["--user-pgd", "--format", "qemu-tlb"]), ("walk", ["--user-pgd"])]
    run = lldbrun.run(
        [f"pt-backend core {dump}", *(f"pt-{c} {' '.join(argv)}" for c, argv in cases)]
    )
    opened, *results = run.results
    assert opened.ok and opened.out == f"backend core: {dump}\n"
    for (command, argv), result in zip(cases, results, strict=True):
        assert result.err == "", (command, argv, result.err)
        assert result.out == committed_dump_output(command, dump, *argv), (command, argv)
    assert "Traceback" not in run.proc.stdout + run.proc.stderr


@pytest.mark.skipif(not FULL, reason="quick depth: each debugger equals the command line")
def test_lldb_equals_gdb_on_a_dump(kernel_dump: Callable[[str], Path]) -> None:
    """The same commands in GDB and in LLDB on a committed dump: the same bytes, command by
    command. A quick run leaves it to the tests of every command in each debugger, which
    compare both with the same command-line outputs."""
    dump = str(kernel_dump("kaslr-pti"))
    commands = [
        "pt-info",
        *(f"pt-walk --format {f}" for f in ("text", "json", "qemu-tlb", "ptdump")),
        "pt-walk --user-pgd",
        "pt-translate 0x400000 0xffffffff82000000 0x1",
        "pt-heap --memmap e820",
        "pt-audit",
    ]
    in_gdb = gdb(f"pt-backend core {dump}", *marked(*commands))
    assert without_progress(in_gdb.stderr) == ""
    in_lldb = lldbrun.run([f"pt-backend core {dump}", *commands])
    assert in_lldb.outputs()[0] == in_gdb.stdout.split("@@gdbext-test@@")[0]
    assert in_lldb.outputs()[1:] == sections(in_gdb.stdout)


def test_dollar_words_use_lldb_variables_and_leave_no_result_variable(
    kernel_dump: Callable[[str], Path],
) -> None:
    """Without a process, ``$`` words are LLDB's own expressions (its dummy target, where
    ``expr`` put ``$va``); the evaluation leaves no ``$0`` behind (as GDB's ``parse_and_eval``
    adds nothing to GDB's value history) and runs no code (no JIT)."""
    dump = str(kernel_dump("4level"))
    run = lldbrun.run(
        [
            f"pt-backend core {dump}",
            "expr unsigned long $va = 0xffffffff81000000",
            "pt-translate $va+0x10",
            "expr $0",
        ]
    )
    _, _, translate, result = run.results
    assert translate.ok and translate.out == cli_output("translate", dump, "0xffffffff81000010")
    assert not result.ok and "undeclared identifier '$0'" in result.err


def test_not_mapped_prints_the_result_without_an_error(kernel_dump: Callable[[str], Path]) -> None:
    dump = str(kernel_dump("4level"))
    run = lldbrun.run([f"pt-backend core {dump}", "pt-translate 0x1", "pt-walk --has 0x1000"])
    _, translate, has = run.results
    assert translate.ok and has.ok and translate.err == has.err == ""
    assert translate.out == cli_output("translate", dump, "0x1")
    assert has.out == "0x1000 is not mapped: its PD entry is not present (value 0x0)\n"


def test_bad_input_is_one_line_and_never_a_traceback(kernel_dump: Callable[[str], Path]) -> None:
    dump = str(kernel_dump("4level"))
    expected: list[tuple[str, str | None]] = [
        ("pt-walk", r"^no backend selected; connect to a gdbstub \(pt-connect HOST:PORT\)"),
        ("pt-backend nope", r"^no backend named nope \(known: core, gdb, gdbstub, lldb, sim"),
        ("pt-backend core /nonexistent.elf", r"^/nonexistent\.elf: cannot open: No such file"),
        ("pt-backend sim", r"^backend sim needs --scenario$"),
        ("pt-backend lldb", r"^the lldb backend needs a live target: connect LLDB first"),
        ("pt-backend lldb --debugger 9999", r"^--debugger 9999: LLDB has no such debugger$"),
        ("pt-backend gdb", r"^the gdb backend works only inside GDB$"),
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
        ("pt-walk 'unterminated", r"^pt-walk: no closing quotation$"),
        ("pt-translate", r"^pt-translate: the following arguments are required: VADDR$"),
        ("pt-translate zz", r"^pt-translate: argument VADDR: not a number: zz$"),
        (
            "pt-translate 0x8000000000000000",
            r"^pt-translate: 0x8000000000000000 is not canonical for 48-bit virtual addresses$",
        ),
        ("pt-translate $void", r"^pt-translate: \$void: use of undeclared identifier '\$void'$"),
        # A Linux dump's default is e820; a BootInfo needs its address.
        ("pt-heap --memmap bootinfo", r"^--at ADDR \(physical address of the BootInfo\) is "),
        ("pt-heap --memmap json /nonexistent.json", r"/nonexistent\.json"),
        ("pt-audit --fail-on nope", r"^pt-audit: argument --fail-on: "),
        ("pt-connect", r"^pt-connect takes one argument, \[HOST:\]PORT"),
        ("pt-connect 127.0.0.1:1", r"^pt-connect 127\.0\.0\.1:1: .*(connect|refused)"),
    ]
    run = lldbrun.run([command for command, _ in expected])
    for (command, pattern), result in zip(expected, run.results, strict=True):
        if pattern is None:
            assert result.ok, (command, result.err)
            continue
        assert not result.ok, command
        # Nothing on stdout: an address that cannot be translated is an error, not output.
        assert result.out == "", (command, result.out)
        assert result.err.startswith("error: ") and result.err.count("\n") == 1, result.err
        assert re.search(pattern, result.err[len("error: ") :].rstrip("\n")), (command, result.err)
    assert "Traceback" not in run.proc.stdout + run.proc.stderr


def test_pt_connect_to_a_peer_that_does_not_answer_waits_one_handshake() -> None:
    """A listening peer that says nothing (not a gdbstub, a stopped QEMU): one handshake timeout
    and one line, not one per retry (retries are for the handshake a running QEMU breaks at
    once). Each attempt is a connection of its own (the relay's to the peer): the peer counts
    them, as a clock under load could not."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        accepted: list[socket.socket] = []

        def accept() -> None:
            with contextlib.suppress(OSError):  # the server closed: done
                while True:
                    accepted.append(server.accept()[0])

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        proc = lldb(
            "settings set plugin.process.gdb-remote.packet-timeout 2",
            f"pt-connect 127.0.0.1:{port}",
        )
        server.shutdown(socket.SHUT_RDWR)
    thread.join(timeout=10)
    for conn in accepted:
        conn.close()
    assert re.fullmatch(
        rf"error: pt-connect 127\.0\.0\.1:{port}: failed to get reply to handshake packet "
        r"within timeout of [\d.]+ seconds\n",
        proc.stderr,
    ), proc.stderr
    assert len(accepted) == 1, len(accepted)  # four attempts were four connections (and 24 s)


def test_an_error_in_batch_mode_is_one_line_on_stderr() -> None:
    """As a user sees it: ``lldb --batch`` stops at the first failing command."""
    proc = lldb("pt-walk --bogus", "pt-info")
    assert proc.stdout == ""
    assert proc.stderr == "error: pt-walk: unrecognized arguments: --bogus\n"
    assert proc.returncode == 1


# --- progress, Ctrl-C, colour ----------------------------------------------------------------

LLDB_REGISTER = """from gdbext_lldb import lldb_commands

def __lldb_init_module(debugger, internal_dict):
    plugin = Plugin(debugger.GetCommandInterpreter().WasInterrupted)
    lldb_commands.installed(debugger).session.host.pm.register(plugin)"""


def test_a_long_walk_shows_progress_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """A backend whose reads take 1 s each: progress on stderr (a pipe: after 5 s, at most one
    line per 5 s), SIGINT gives one "interrupted" line, the command scope is left, and LLDB goes
    on."""
    log = tmp_path / "scope.log"
    plugin = tmp_path / "slow.py"
    plugin.write_text(SLOW_PLUGIN.format(log=str(log), register=LLDB_REGISTER))
    argv = lldbrun.argv(
        f"command script import {plugin}",
        f"pt-backend slow --scenario {DEMO}",
        "pt-walk",
        "script print('after')",
        "pt-info",
    )
    out, stderr = interrupted_run(argv, b"so far")
    # The first report: 5 s in (the interval into a pipe), or a little later on a loaded
    # machine, the first read after 5 s being where the walk looks at the clock.
    first = re.match(r"^pt-walk: \d+ leaves so far, (\d+) s \(Ctrl-C interrupts\)\n", stderr)
    assert first and 5 <= int(first.group(1)) < 10, stderr
    assert "pt-walk: interrupted\n" in stderr
    assert "Traceback" not in stderr
    assert out.startswith(f"backend slow: {DEMO}\nafter\nbackend:     slow ")
    assert log.read_text().splitlines() == ["enter", "exit KeyboardInterrupt", "enter", "exit"]


def test_colour_follows_use_color(kernel_dump: Callable[[str], Path]) -> None:
    """On a terminal with ``use-color`` on, text output is coloured as in GDB; with it off, or
    into a pipe, it is plain."""
    dump = str(kernel_dump("kaslr-pti"))
    walk = "pt-walk --range 0xffffffff80000000-0xffffffffc0000000"
    mark = "@@mark@@"
    text = run_pty(
        lldbrun.argv(
            f"pt-backend core {dump}",
            f"script print('{mark}')",
            "settings set use-color true",
            walk,
            f"script print('{mark}')",
            "settings set use-color false",
            walk,
            f"script print('{mark}')",
        )
    )
    _, on, off, _ = text.split(mark + "\n")
    plain = cli_output("walk", dump, "--range", "0xffffffff80000000-0xffffffffc0000000")
    assert off == plain and ESC not in off
    assert "\x1b[1m---[ High Kernel Mapping ]---\x1b[m\n" in on
    assert re.sub(r"\x1b\[[0-9;]*m", "", on) == plain
    piped = lldbrun.run([f"pt-backend core {dump}", "settings set use-color true", walk])
    assert piped.outputs()[2] == plain


def test_messages_go_where_they_belong(kernel_dump: Callable[[str], Path]) -> None:
    """As in GDB and on the command line : a translation that fails with
    exit status 2 is the command's error and prints nothing; the --user-pgd warning for a root
    with no PTI pair goes to LLDB's error stream, and the output is the command line's."""
    dump = str(kernel_dump("4level"))
    run = lldbrun.run(
        [
            f"pt-backend core {dump}",
            "pt-translate --user-pgd 0xffffffff81000000",
            "pt-translate 0x800000000000",
        ]
    )
    _, user, bad = run.results
    assert user.ok and user.out == cli_output("translate", dump, "--user-pgd", "0xffffffff81000000")
    assert not bad.ok and bad.out == ""
    assert (
        bad.err == "error: pt-translate: 0x800000000000 is not canonical for 48-bit virtual "
        "addresses\n"
    )
    # Progress and warnings are written to LLDB's error stream at once (not the result's).
    assert "pt-translate: warning: --user-pgd: 0x61b7000 is not the user half of a PTI pair" in (
        run.proc.stderr
    )


def test_read_takes_lldb_expressions_and_writes_raw_bytes_to_a_file(
    kernel_dump: Callable[[str], Path], tmp_path: Path
) -> None:
    """``pt-read $va+0x10 0x40``: LLDB's values; raw bytes go to ``-o FILE`` only."""
    dump = str(kernel_dump("4level"))
    lldb_file, cli_file = tmp_path / "lldb.bin", tmp_path / "cli.bin"
    run = lldbrun.run(
        [
            f"pt-backend core {dump}",
            "expr unsigned long $va = 0xffffffff82000000",
            "pt-read $va+0x10 0x40",
            f"pt-read --phys 0x61b6000 4K --format raw -o {lldb_file}",
            "pt-read $va 16 --format raw",
        ]
    )
    _, _, listing, written, refused = run.results
    assert listing.ok and listing.out == cli_output("read", dump, "0xffffffff82000010", "64")
    assert written.ok and written.out == ""
    assert not refused.ok and "pt-read: --format raw writes bytes: give -o FILE" in refused.err
    cli_output("read", dump, "--phys", "0x61b6000", "4K", "--format", "raw", "-o", str(cli_file))
    assert lldb_file.read_bytes() == cli_file.read_bytes()
    assert any(cli_file.read_bytes())  # the root table QEMU's info registers names


def test_map_writes_the_command_lines_page(
    kernel_dump: Callable[[str], Path], tmp_path: Path
) -> None:
    """``pt-map FILE`` in LLDB writes the page ``gdbext map DUMP -o FILE`` writes."""
    dump = str(kernel_dump("kaslr-pti"))
    lldb_html, cli_html = tmp_path / "lldb.html", tmp_path / "cli.html"
    run = lldbrun.run([f"pt-backend core {dump}", f"pt-map {lldb_html}"])
    assert [(r.ok, r.err) for r in run.results] == [(True, "")] * 2
    assert cli.main(["map", dump, "-o", str(cli_html)]) == 0
    assert lldb_html.read_bytes() == cli_html.read_bytes()
