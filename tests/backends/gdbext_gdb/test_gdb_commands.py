"""The GDB front end in the real ``gdb -nx -batch`` on committed dumps of real kernels
(``pt-backend core``): every command, the convenience functions, errors, styling, progress
and Ctrl-C.

Outputs are compared with the command line's for the same dump (in-process
:func:`gdbext.cli.run`, and the ``gdbext`` console script once).
"""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from depth import FULL, kernels
from support.debuggers import (
    DUMP_CASES,
    MARK,
    SLOW_PLUGIN,
    cli_output,
    committed_dump_output,
    gdb,
    gdb_argv,
    interrupted_run,
    marked,
    run_pty,
    sections,
    without_progress,
)
from support.paths import DEMO, ROOT

from gdbext.frontend.progress import progress_line

if TYPE_CHECKING:
    pass
ESC = "\x1b["

pytestmark = pytest.mark.skipif(shutil.which("gdb") is None, reason="no gdb")


@pytest.mark.parametrize("name", kernels())
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
        assert text == committed_dump_output(command, dump, *argv), (command, argv)


def test_walks_equal_the_gdbext_console_script(kernel_dump: Callable[[str], Path]) -> None:
    """The walk in GDB and from the ``gdbext`` console script (its own process): the same bytes;
    in each format at full depth, as text in a quick run (the test of every command compares
    each format with the command line in this process)."""
    dump = str(kernel_dump("kaslr-pti"))
    formats = ("text", "json", "qemu-tlb", "ptdump") if FULL else ("text",)
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
        ("pt-backend nope", r"^no backend named nope \(known: core, gdb, gdbstub, lldb, sim"),
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


GDB_REGISTER = """from gdbext_gdb import gdb_commands
gdb_commands.installed().session.host.pm.register(Plugin(lambda: False))"""


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


@pytest.mark.parametrize(
    ("command", "shown", "report"),
    [
        ("pt-walk", b"so far", r"^pt-walk: \d+ leaves so far, (\d+) s \(Ctrl-C interrupts\)\n"),
        (
            "pt-search --string never-there",
            b"Ctrl-C interrupts",
            r"^pt-search: (\d+) s \(Ctrl-C interrupts\)\n",
        ),
        (
            "pt-kaslr --leaks",
            b"Ctrl-C interrupts",
            r"^pt-kaslr: (\d+) s \(Ctrl-C interrupts\)\n",
        ),
    ],
)
def test_a_long_command_shows_progress_and_stops_on_ctrl_c(
    tmp_path: Path, command: str, shown: bytes, report: str
) -> None:
    """A backend whose reads take 1 s each (a slow stub): progress on stderr (a pipe, not a
    terminal: after 5 s, at most one line per 5 s), SIGINT gives one "interrupted" line, the
    command scope is left, and GDB goes on."""
    log = tmp_path / "scope.log"
    plugin = tmp_path / "slow.py"
    plugin.write_text(SLOW_PLUGIN.format(log=str(log), register=GDB_REGISTER))
    argv = gdb_argv(
        f"source {plugin}",
        f"pt-backend slow --scenario {DEMO}",
        command,
        "echo after\\n",
        "pt-info",
    )
    out, stderr = interrupted_run(argv, shown)
    # The first report: 5 s in (the interval into a pipe), or a little later on a loaded
    # machine, the first read after 5 s being where the command looks at the clock.
    first = re.match(report, stderr)
    assert first and 5 <= int(first.group(1)) < 10, stderr
    assert stderr.splitlines()[-1] == f"{command.split()[0]}: interrupted"
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


def test_read_takes_gdb_expressions_and_writes_raw_bytes_to_a_file(
    kernel_dump: Callable[[str], Path], tmp_path: Path
) -> None:
    """``pt-read $va+0x10 $n``: GDB's values; raw bytes go to ``-o FILE`` (GDB's console has
    no place for them: one error line)."""
    dump = str(kernel_dump("4level"))
    gdb_file, cli_file = tmp_path / "gdb.bin", tmp_path / "cli.bin"
    proc = gdb(
        f"pt-backend core {dump}",
        "set $va = 0xffffffff82000000",
        "set $n = 0x40",
        *marked(
            "pt-read $va+0x10 $n",
            f"pt-read --phys $pt_phys($va) 4K --format raw -o {gdb_file}",
        ),
        "pt-read $va 16 --format raw",
    )
    assert proc.stderr == "pt-read: --format raw writes bytes: give -o FILE\n"
    listing, written = sections(proc.stdout)
    assert listing == cli_output("read", dump, "0xffffffff82000010", "64")
    assert written == ""
    paddr = int(
        re.findall(r"-> (0x[0-9a-f]+)", cli_output("translate", dump, "0xffffffff82000000"))[0], 16
    )
    cli_output("read", dump, "--phys", hex(paddr), "4096", "--format", "raw", "-o", str(cli_file))
    assert gdb_file.read_bytes() == cli_file.read_bytes() and len(cli_file.read_bytes()) == 4096


def test_map_writes_the_command_lines_page(
    kernel_dump: Callable[[str], Path], tmp_path: Path
) -> None:
    """``pt-map FILE`` in GDB writes the page ``gdbext map DUMP -o FILE`` writes, byte for
    byte; ``--format svg`` the same picture."""
    dump = str(kernel_dump("kaslr-pti"))
    gdb_html, cli_html = tmp_path / "gdb.html", tmp_path / "cli.html"
    gdb_svg, cli_svg = tmp_path / "gdb.svg", tmp_path / "cli.svg"
    proc = gdb(f"pt-backend core {dump}", f"pt-map {gdb_html}", f"pt-map --format svg -o {gdb_svg}")
    assert without_progress(proc.stderr) == ""
    cli_output("map", dump, "-o", str(cli_html))
    cli_output("map", dump, "--format", "svg", "-o", str(cli_svg))
    assert gdb_html.read_bytes() == cli_html.read_bytes()
    assert gdb_svg.read_bytes() == cli_svg.read_bytes()
    assert b"kernel text mapping" in cli_html.read_bytes()
